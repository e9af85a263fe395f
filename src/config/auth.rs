//! `[http_service.auth]`: a JSON Web Token (RFC 7519) checked at the edge before any instance is
//! chosen. The key file is read and parsed when the config loads, so a bad key is a config error
//! (file, line, key) and never a failure on the request path.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::source::{ConfigError, Source};
use super::value::Dur;

/// The only token type petrel checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// A JSON Web Token with a JWS signature (RFC 7519, RFC 7515).
    Jwt,
}

/// `[http_service.auth]` as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `"jwt"`.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// Accepted signature algorithms (RFC 7518 names): `HS256`, `HS384`, `HS512` with
    /// `secret_file`; `ES256`, `ES384`, `EdDSA`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`,
    /// `PS512` with `public_key_file`. One family per app.
    pub algorithms: Vec<String>,
    /// The shared secret (file bytes as they are, a trailing newline removed), relative to the
    /// app file.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// The public key in PEM, relative to the app file.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Where the token is looked for, first found wins: `header:NAME` (`header:authorization`
    /// takes the `Bearer` credentials of RFC 6750 §2.1), `query:NAME`, `cookie:NAME`.
    #[serde(default = "d_token_from")]
    pub token_from: Vec<String>,
    /// Required `aud`, if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Required `iss`, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "d_leeway")]
    pub leeway: Dur,
    /// The key, read and parsed by [`AuthConfig::load`].
    #[serde(skip)]
    pub key: Option<LoadedKey>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithms", &self.algorithms)
            .field("secret_file", &self.secret_file)
            .field("public_key_file", &self.public_key_file)
            .field("token_from", &self.token_from)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// A parsed verification key and the algorithms it serves.
#[derive(Clone)]
pub struct LoadedKey {
    /// The key.
    pub key: Arc<DecodingKey>,
    /// The algorithms from `algorithms`, parsed.
    pub algorithms: Vec<Algorithm>,
}

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header (lowercase name); `authorization` means `Bearer <token>`.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

impl TokenSource {
    /// Parses `header:NAME`, `query:NAME` or `cookie:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: write \"header:NAME\", \"query:NAME\" or \"cookie:NAME\"")
        })?;
        if name.is_empty() {
            return Err(format!("{s:?}: the name after {kind:?} is empty"));
        }
        match kind {
            "header" => http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map(TokenSource::Header)
                .map_err(|_| format!("{s:?}: invalid header name")),
            "query" => Ok(TokenSource::Query(name.to_string())),
            "cookie" => Ok(TokenSource::Cookie(name.to_string())),
            other => Err(format!(
                "{s:?}: unknown source {other:?} (use header, query or cookie)"
            )),
        }
    }
}

fn d_token_from() -> Vec<String> {
    vec!["header:authorization".into()]
}

fn d_leeway() -> Dur {
    Dur::secs(30)
}

/// True for the HMAC algorithms, which take a shared secret.
fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl AuthConfig {
    /// Checks every key and reads the key file (relative to `src`'s directory); on success
    /// `self.key` is set.
    pub fn load(&mut self, src: &Source) -> Vec<ConfigError> {
        const AT: &str = "http_service.auth";
        let mut errs = Vec::new();
        let mut algorithms = Vec::new();
        if self.algorithms.is_empty() {
            errs.push(src.error(&format!("{AT}.algorithms"), "list at least one algorithm"));
        }
        for (i, name) in self.algorithms.iter().enumerate() {
            match name.parse::<Algorithm>() {
                Ok(a) => algorithms.push(a),
                Err(_) => errs.push(src.error(
                    &format!("{AT}.algorithms[{i}]"),
                    format!("unknown algorithm {name:?} (HS256, HS384, HS512, ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512)"),
                )),
            }
        }
        if self.token_from.is_empty() {
            errs.push(src.error(&format!("{AT}.token_from"), "list at least one source"));
        }
        for (i, s) in self.token_from.iter().enumerate() {
            if let Err(m) = TokenSource::parse(s) {
                errs.push(src.error(&format!("{AT}.token_from[{i}]"), m));
            }
        }
        if self.leeway.get() > std::time::Duration::from_secs(3600) {
            errs.push(src.error(
                &format!("{AT}.leeway"),
                "at most 1h (clock skew between the token's issuer and this node)",
            ));
        }
        for (i, s) in self.token_from.iter().enumerate() {
            if let Ok(TokenSource::Header(h)) = TokenSource::parse(s) {
                if h == http::header::HOST || h.as_str().starts_with("petrel-") {
                    errs.push(src.error(
                        &format!("{AT}.token_from[{i}]"),
                        format!("{s:?} cannot carry a token (petrel reads or sets that header)"),
                    ));
                }
            }
        }
        if algorithms.contains(&Algorithm::ES256) && algorithms.contains(&Algorithm::ES384) {
            errs.push(src.error(
                &format!("{AT}.algorithms"),
                "ES256 and ES384 need different curves (P-256, P-384): one key serves one",
            ));
        }
        let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
        if hmac != 0 && hmac != algorithms.len() {
            errs.push(src.error(
                &format!("{AT}.algorithms"),
                "HMAC (HS*) and public-key algorithms cannot be mixed: one key serves one family",
            ));
        }
        let one_family = algorithms
            .windows(2)
            .all(|w| w[0].family() == w[1].family());
        if !one_family && hmac == 0 {
            errs.push(src.error(
                &format!("{AT}.algorithms"),
                "one public key serves one family: ES*, EdDSA, or RS*/PS*",
            ));
        }
        if !errs.is_empty() {
            return errs;
        }
        let dir = src.file().parent().unwrap_or(Path::new("."));
        let parsed = match (hmac > 0, &self.secret_file, &self.public_key_file) {
            (true, Some(f), None) => read(dir, f).map_err(|m| (format!("{AT}.secret_file"), m)).and_then(|mut b| {
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                if b.starts_with(b"-----BEGIN") {
                    return Err((format!("{AT}.secret_file"), format!("{f:?} holds a PEM key; HS* algorithms take a shared secret (a public key as an HMAC secret invites algorithm confusion)")));
                }
                if b.len() < 32 {
                    return Err((format!("{AT}.secret_file"), format!("{f:?} holds {} bytes; an HMAC secret needs at least 32 (RFC 7518 §3.2)", b.len())));
                }
                DecodingKey::from_secret(&b).map_err(|e| (format!("{AT}.secret_file"), e.to_string()))
            }),
            (false, None, Some(f)) => read(dir, f).map_err(|m| (format!("{AT}.public_key_file"), m)).and_then(|b| {
                let a = algorithms[0];
                if let Some(want) = curve_of(a) {
                    if !pem_has_oid(&b, want.1) {
                        return Err((format!("{AT}.public_key_file"), format!("{f:?} is not a {} public key, which {a:?} needs", want.0)));
                    }
                }
                let key = match a.family() {
                    jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&b),
                    jsonwebtoken::AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&b),
                    _ => DecodingKey::from_rsa_pem(&b),
                };
                key.map_err(|e| (format!("{AT}.public_key_file"), format!("{f:?} is not a PEM public key for {a:?}: {e}")))
            }),
            (true, _, _) => Err((format!("{AT}.secret_file"), "HS* algorithms need secret_file (and no public_key_file)".into())),
            (false, _, _) => Err((format!("{AT}.public_key_file"), "public-key algorithms need public_key_file (and no secret_file)".into())),
        };
        match parsed {
            Ok(key) => {
                self.key = Some(LoadedKey {
                    key: Arc::new(key),
                    algorithms,
                })
            }
            Err((key, m)) => errs.push(src.error(&key, m)),
        }
        errs
    }
}

fn read(dir: &Path, f: &str) -> Result<Vec<u8>, String> {
    let p = dir.join(f);
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// The curve an ECDSA algorithm needs, and its OID in DER (RFC 5480 §2.1.1.1).
fn curve_of(a: Algorithm) -> Option<(&'static str, &'static [u8])> {
    match a {
        Algorithm::ES256 => Some((
            "P-256",
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        )),
        Algorithm::ES384 => Some(("P-384", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22])),
        _ => None,
    }
}

/// True if the first PEM block in `pem` decodes to DER holding `oid`.
fn pem_has_oid(pem: &[u8], oid: &[u8]) -> bool {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .is_ok_and(|der| der.windows(oid.len()).any(|w| w == oid))
}
