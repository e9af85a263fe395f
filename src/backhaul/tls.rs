//! Mutual TLS for the backhaul with no files to manage: every node derives the same cluster CA
//! from `mesh.cluster_key` (Ed25519 key from an HMAC of the key, fixed certificate fields), and
//! issues itself a fresh leaf certificate at start. Only holders of the key can present a cert
//! the others accept, in either direction.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::Sha256;

/// The name every node's leaf certificate carries and every client checks.
pub const SERVER_NAME: &str = "petrel-node";

/// PKCS#8 v1 wrapper for a raw Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why TLS material could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built.
    #[error("TLS verifier failed: {0}")]
    Verifier(String),
    /// A certificate or key file could not be read.
    #[error("{0}: {1}")]
    File(String, String),
}

/// Server and client configurations for one node.
pub struct ClusterTls {
    /// For the backhaul listener: requires a client certificate from the cluster CA.
    pub server: Arc<rustls::ServerConfig>,
    /// For h2 backhaul connections (ALPN h2).
    pub client_h2: Arc<rustls::ClientConfig>,
    /// For HTTP/1.1 backhaul connections carrying upgrades (ALPN http/1.1).
    pub client_h1: Arc<rustls::ClientConfig>,
    /// For the QUIC backhaul endpoint (ALPN petrel-bh).
    pub quic_server: Arc<rustls::ServerConfig>,
    /// For QUIC backhaul connections (ALPN petrel-bh).
    pub quic_client: Arc<rustls::ClientConfig>,
    /// The CA certificate this node's own certificate chains to (derived: identical on every
    /// node with the same primary key).
    pub ca: CertificateDer<'static>,
}

/// ALPN of the QUIC backhaul.
pub const QUIC_ALPN: &[u8] = b"petrel-bh";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parameters of a cluster CA certificate (fixed, so a derived CA is identical on every node).
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "petrel cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    Ok(params)
}

/// Issues a node certificate (names `petrel-node` and `<node>.petrel`) with a fresh key.
fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    ca_der: &CertificateDer<'static>,
    node_name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut leaf =
        CertificateParams::new(vec![SERVER_NAME.to_string(), format!("{node_name}.petrel")])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name);
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = leaf.signed_by(&leaf_key, issuer)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((vec![cert.der().clone(), ca_der.clone()], key))
}

/// Files written by `petrel certs`: (file name, contents).
pub fn make_cluster_files(nodes: &[String]) -> Result<Vec<(String, String)>, TlsError> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let params = ca_params()?;
    let ca_cert = params.self_signed(&ca_key)?;
    let ca_der = ca_cert.der().clone();
    let mut files = vec![
        ("ca.pem".to_string(), ca_cert.pem()),
        ("ca.key".to_string(), ca_key.serialize_pem()),
    ];
    let issuer = Issuer::new(params, ca_key);
    for n in nodes {
        let (chain, key) = issue_leaf(&issuer, &ca_der, n)?;
        let pem = |tag: &str, der: &[u8]| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let body: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
                .collect();
            format!(
                "-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n",
                body.join("\n")
            )
        };
        let certs: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        files.push((format!("{n}.pem"), certs));
        files.push((format!("{n}.key"), pem("PRIVATE KEY", key.secret_der())));
    }
    Ok(files)
}

/// The cluster CA's key pair and parameters, derived from the cluster key.
fn derive_ca(cluster_key: &[u8; 32]) -> Result<(CertificateParams, KeyPair), TlsError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(cluster_key).expect("any key length");
    mac.update(b"petrel backhaul CA v1");
    let seed = mac.finalize().into_bytes();
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    let key = KeyPair::try_from(pkcs8.as_slice())?;
    let params = ca_params()?;
    Ok((params, key))
}

impl ClusterTls {
    /// Derives a CA from each cluster key, issues this node a leaf certificate for `node_name`
    /// from the first (primary) key's CA, and trusts every key's CA: during a key rotation
    /// (`mesh.cluster_keys`), nodes on the old and the new primary key still reach each other.
    /// `cluster_keys` must not be empty.
    pub fn derive(cluster_keys: &[[u8; 32]], node_name: &str) -> Result<Self, TlsError> {
        let mut cas = Vec::with_capacity(cluster_keys.len());
        let mut leaf = None;
        for k in cluster_keys {
            let (ca_params, ca_key) = derive_ca(k)?;
            let ca_der = ca_params.self_signed(&ca_key)?.der().clone();
            if leaf.is_none() {
                let issuer = Issuer::new(ca_params, ca_key);
                leaf = Some(issue_leaf(&issuer, &ca_der, node_name)?);
            }
            cas.push(ca_der);
        }
        let (chain, key) = leaf.ok_or_else(|| TlsError::Verifier("no cluster key".into()))?;
        Self::build(cas, chain, key)
    }

    /// Loads a CA and this node's certificate and key made by `petrel certs`.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TlsError::File(p.display().to_string(), e.to_string()))
        };
        let ca_der = CertificateDer::from_pem_slice(&read(ca)?)
            .map_err(|e| TlsError::File(ca.display().to_string(), e.to_string()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::File(cert.display().to_string(), e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| TlsError::File(key.display().to_string(), e.to_string()))?;
        Self::build(vec![ca_der], chain, key)
    }

    fn build(
        cas: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &cas {
            roots.add(ca.clone())?;
        }
        let roots = Arc::new(roots);

        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let mut quic_server = server.clone();
        quic_server.alpn_protocols = vec![QUIC_ALPN.to_vec()];
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let client = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>, TlsError> {
            let mut c = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(Self {
            server: Arc::new(server),
            client_h2: client(b"h2")?,
            client_h1: client(b"http/1.1")?,
            quic_client: client(QUIC_ALPN)?,
            quic_server: Arc::new(quic_server),
            ca: cas.into_iter().next().expect("at least one CA"),
        })
    }

    /// The server name clients verify.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("static DNS name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn every_node_derives_the_same_ca_and_a_different_key_a_different_one() {
        let a = ClusterTls::derive(&[[1; 32]], "a").unwrap();
        let b = ClusterTls::derive(&[[1; 32]], "b").unwrap();
        let c = ClusterTls::derive(&[[2; 32]], "c").unwrap();
        assert_eq!(a.ca, b.ca);
        assert_ne!(a.ca, c.ca);
    }

    async fn handshake(server: &ClusterTls, client: &ClusterTls) -> bool {
        let (s, c) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server.clone());
        let connector = tokio_rustls::TlsConnector::from(client.client_h2.clone());
        let srv = tokio::spawn(async move {
            let mut t = acceptor.accept(s).await.ok()?;
            let mut b = [0u8; 4];
            t.read_exact(&mut b).await.ok()?;
            Some(b)
        });
        let cli = async move {
            let mut t = connector.connect(ClusterTls::server_name(), c).await.ok()?;
            t.write_all(b"ping").await.ok()?;
            t.flush().await.ok()?;
            Some(t) // kept open until the server has read
        };
        let client = cli.await;
        let got = srv.await.ok().flatten();
        drop(client);
        got == Some(*b"ping")
    }

    #[tokio::test]
    async fn certs_files_work_and_do_not_trust_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in make_cluster_files(&["a".into(), "b".into()]).unwrap() {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let load = |n: &str| {
            ClusterTls::from_files(
                &dir.path().join("ca.pem"),
                &dir.path().join(format!("{n}.pem")),
                &dir.path().join(format!("{n}.key")),
            )
            .unwrap()
        };
        let (a, b) = (load("a"), load("b"));
        assert!(handshake(&a, &b).await);
        let derived = ClusterTls::derive(&[[1; 32]], "x").unwrap();
        assert!(
            !handshake(&a, &derived).await,
            "a derived CA is another cluster"
        );
        assert!(ClusterTls::from_files(
            &dir.path().join("nope.pem"),
            &dir.path().join("a.pem"),
            &dir.path().join("a.key")
        )
        .is_err());
    }

    #[tokio::test]
    async fn members_complete_mutual_tls_and_outsiders_do_not() {
        let a = ClusterTls::derive(&[[1; 32]], "a").unwrap();
        let b = ClusterTls::derive(&[[1; 32]], "b").unwrap();
        let outsider = ClusterTls::derive(&[[9; 32]], "x").unwrap();
        assert!(handshake(&a, &b).await, "same key: handshake completes");
        assert!(!handshake(&a, &outsider).await, "outsider client refused");
        assert!(
            !handshake(&outsider, &a).await,
            "outsider server not trusted"
        );
    }
}
