//! Edge certificates: every `<hostname>.pem` + `<hostname>.key` in `edge.certs_dir` (wildcards as
//! `_wildcard.<domain>`), chosen by SNI, swapped whole on reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The directory cannot be read.
    #[error("cannot read certificate directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    /// A file is missing, unreadable or not PEM.
    #[error("{0}: {1}")]
    File(PathBuf, String),
    /// Nothing to serve.
    #[error("no certificates in {0} (expected <hostname>.pem and <hostname>.key pairs)")]
    Empty(PathBuf),
    /// `edge.default_cert` names no loaded certificate.
    #[error("default certificate {0:?} is not in {1}")]
    NoDefault(String, PathBuf),
}

/// The certificates of one directory, by name.
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for `_wildcard.example.com` (matches exactly one label in front).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.exact.keys().cloned().collect();
        names.extend(self.wildcard.keys().map(|d| format!("*.{d}")));
        names.sort();
        f.debug_struct("CertStore")
            .field("names", &names)
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl CertStore {
    /// Loads every pair in `dir`; `default` names the certificate for clients that send no SNI.
    pub fn load(dir: &Path, default: Option<&str>) -> Result<Self, CertError> {
        let provider = rustls::crypto::ring::default_provider();
        let entries = std::fs::read_dir(dir).map_err(|e| CertError::Dir(dir.into(), e))?;
        let mut store = Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".pem").map(str::to_string)
            })
            .collect();
        names.sort();
        for name in names {
            let pem = dir.join(format!("{name}.pem"));
            let key = dir.join(format!("{name}.key"));
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pem)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| CertError::File(pem.clone(), e.to_string()))?;
            if chain.is_empty() {
                return Err(CertError::File(pem, "no certificate in file".into()));
            }
            let private = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| CertError::File(key.clone(), e.to_string()))?;
            let signer = provider
                .key_provider
                .load_private_key(private)
                .map_err(|e| CertError::File(key.clone(), e.to_string()))?;
            let ck = Arc::new(CertifiedKey::new(chain, signer));
            ck.keys_match().map_err(|e| {
                CertError::File(
                    key.clone(),
                    format!("does not match {}: {e}", pem.display()),
                )
            })?;
            let host = name.to_ascii_lowercase();
            match host.strip_prefix("_wildcard.") {
                Some(domain) => store.wildcard.insert(domain.to_string(), ck),
                None => store.exact.insert(host, ck),
            };
        }
        if store.exact.is_empty() && store.wildcard.is_empty() {
            return Err(CertError::Empty(dir.into()));
        }
        if let Some(d) = default {
            let d = d.to_ascii_lowercase();
            let ck = store
                .exact
                .get(&d)
                .or_else(|| {
                    store
                        .wildcard
                        .get(d.strip_prefix("_wildcard.").unwrap_or(&d))
                })
                .cloned()
                .ok_or_else(|| CertError::NoDefault(d.clone(), dir.into()))?;
            store.default = Some(ck);
        }
        Ok(store)
    }

    /// The certificate for `sni` (exact name first, then `_wildcard.<parent>`), or the default
    /// one when the client sent no SNI.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ck) = self.exact.get(&name) {
            return Some(ck.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }

    /// How many names it serves.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// True when empty (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks the certificate per handshake from the current store; reload swaps the store.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl SniResolver {
    /// Serves `store` until `swap` replaces it.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self {
            store: ArcSwap::new(store),
        }
    }

    /// Installs a new store; handshakes from now on use it, open connections are untouched.
    pub fn swap(&self, store: Arc<CertStore>) {
        self.store.store(store);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.store.load().pick(hello.server_name());
        if picked.is_none() {
            let reason = if hello.server_name().is_some() {
                "unknown_sni"
            } else {
                "no_sni"
            };
            metrics::counter!(crate::telemetry::TLS_FAILURES, "reason" => reason).increment(1);
        }
        picked
    }
}

/// The edge's TLS server config: TLS 1.2 and 1.3 only (rustls has nothing older), ALPN h2 then
/// http/1.1, certificates by SNI.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, file: &str, san: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![san.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    #[test]
    fn exact_names_win_over_wildcards_and_wildcards_cover_one_label() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a.example.com", "a.example.com");
        write_pair(dir.path(), "_wildcard.example.com", "*.example.com");
        let s = CertStore::load(dir.path(), None).unwrap();
        let exact = s.pick(Some("a.example.com")).unwrap();
        let wild = s.pick(Some("b.example.com")).unwrap();
        assert!(!Arc::ptr_eq(&exact, &wild));
        assert!(Arc::ptr_eq(&wild, &s.pick(Some("B.Example.Com.")).unwrap()));
        assert!(s.pick(Some("x.b.example.com")).is_none(), "one label only");
        assert!(s.pick(Some("example.com")).is_none());
        assert!(s.pick(None).is_none(), "no SNI, no default: nothing");
        let s = CertStore::load(dir.path(), Some("a.example.com")).unwrap();
        assert!(Arc::ptr_eq(
            &s.pick(None).unwrap(),
            &s.pick(Some("a.example.com")).unwrap()
        ));
    }

    #[test]
    fn broken_directories_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = CertStore::load(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("no certificates"), "{e}");
        write_pair(dir.path(), "a.example.com", "a.example.com");
        std::fs::write(dir.path().join("a.example.com.key"), "not a key").unwrap();
        let e = CertStore::load(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("a.example.com.key"), "{e}");
        let e = CertStore::load(&dir.path().join("missing"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
