//! The edge's token check (`[http_service.auth]`): find the client's JSON Web Token, verify it
//! (signature, `exp`, `nbf`, `aud`, `iss`; RFC 7519 §7.2) with the `jsonwebtoken` crate, and take
//! it out of the request so no instance ever sees it. Runs before any instance is chosen.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderValue, Request, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use crate::balance::Hints;
use crate::config::{AuthConfig, TokenSource};

/// Verifies one app's tokens.
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Validation,
    sources: Vec<TokenSource>,
}

/// What a valid token says that petrel uses.
#[derive(Debug, Default, Deserialize)]
pub struct Verified {
    /// `sub`: sent to the instance as `Petrel-Auth-Sub`.
    #[serde(default)]
    pub sub: Option<String>,
    /// `petrel_instance`: routes as `Petrel-Force-Instance-Id` does.
    #[serde(default)]
    pub petrel_instance: Option<String>,
    /// `petrel_region`: routes as `Petrel-Prefer-Region` does.
    #[serde(default)]
    pub petrel_region: Option<String>,
}

impl Verified {
    /// The token's routing claims override the request's routing headers: the app's control
    /// plane that issued the token decides placement.
    pub fn steer(&self, hints: &mut Hints) {
        if self.petrel_instance.is_some() || self.petrel_region.is_some() {
            *hints = Hints::default(); // the client's own routing headers no longer count
        }
        if let Some(i) = &self.petrel_instance {
            hints.force = Some(i.clone());
        }
        if let Some(r) = &self.petrel_region {
            hints.prefer_regions.retain(|x| x != r);
            hints.prefer_regions.insert(0, r.clone());
        }
    }
}

/// Why a request's token was refused (the `error_description` of RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No source in `token_from` held a token.
    Missing,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// `aud` is not the app's audience.
    Audience,
    /// `iss` is not the app's issuer.
    Issuer,
    /// A claim petrel requires (`exp`) is absent, or a claim has the wrong type.
    Claims,
    /// The signature does not verify, or the algorithm is not one the app accepts.
    Signature,
    /// Not a JWT (shape, base64, JSON).
    Malformed,
}

impl AuthError {
    /// Short reason for the response and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::Missing => "no token",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::Audience => "wrong audience",
            AuthError::Issuer => "wrong issuer",
            AuthError::Claims => "missing or malformed claims",
            AuthError::Signature => "bad signature or algorithm",
            AuthError::Malformed => "malformed token",
        }
    }

    fn from_kind(k: &ErrorKind) -> Self {
        match k {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                AuthError::Claims
            }
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::Signature,
            _ => AuthError::Malformed,
        }
    }
}

impl Verifier {
    /// The verifier for a loaded `[http_service.auth]`; `None` if its key was not loaded (the
    /// config loader always loads it, or refuses the file).
    pub fn new(cfg: &AuthConfig) -> Option<Self> {
        let loaded = cfg.key.as_ref()?;
        let mut validation = Validation::new(*loaded.algorithms.first()?);
        validation.algorithms = loaded.algorithms.clone();
        validation.leeway = cfg.leeway.get().as_secs();
        validation.validate_nbf = true;
        // A configured `aud` or `iss` must be present, not only right when present.
        match &cfg.audience {
            Some(a) => {
                validation.set_audience(&[a]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(i) = &cfg.issuer {
            validation.set_issuer(&[i]);
            validation.required_spec_claims.insert("iss".into());
        }
        let sources = cfg
            .token_from
            .iter()
            .filter_map(|s| TokenSource::parse(s).ok())
            .collect();
        Some(Self {
            key: loaded.key.clone(),
            validation,
            sources,
        })
    }

    /// Finds and verifies the request's token (the first source that holds one), then removes
    /// every configured source from the request: no copy of a token reaches an instance.
    pub fn check<B>(&self, req: &mut Request<B>) -> Result<Verified, AuthError> {
        let token = self
            .sources
            .iter()
            .find_map(|s| find(req, s).map(Cow::into_owned))
            .ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Verified>(&token, &self.key, &self.validation)
            .map_err(|e| AuthError::from_kind(e.kind()))?;
        if data
            .claims
            .sub
            .as_deref()
            .is_some_and(|s| HeaderValue::from_str(s).is_err())
        {
            return Err(AuthError::Claims);
        }
        for s in &self.sources {
            remove(req, s);
        }
        Ok(data.claims)
    }

    /// The request's path and query with the values of the token's query parameters replaced,
    /// for logs; `None` when no token source is a query parameter present in it.
    pub fn redacted(&self, uri: &Uri) -> Option<String> {
        let q = uri.query()?;
        let names: Vec<&str> = self
            .sources
            .iter()
            .filter_map(|s| match s {
                TokenSource::Query(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let mut hit = false;
        let parts: Vec<String> = q
            .split('&')
            .map(|p| {
                let key = p.split_once('=').map_or(p, |(k, _)| k);
                if names.contains(&decode(key).as_str()) {
                    hit = true;
                    format!("{key}=[redacted]")
                } else {
                    p.to_string()
                }
            })
            .collect();
        hit.then(|| format!("{}?{}", uri.path(), parts.join("&")))
    }
}

/// The token at `source`, if there is one.
fn find<'r, B>(req: &'r Request<B>, source: &TokenSource) -> Option<Cow<'r, str>> {
    match source {
        TokenSource::Header(name) if name == AUTHORIZATION => {
            let v = req.headers().get(name)?.to_str().ok()?.trim();
            let (scheme, token) = v.split_once(' ')?;
            // RFC 6750 §2.1; the scheme is case-insensitive (RFC 9110 §11.1).
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| Cow::Borrowed(token.trim()))
        }
        TokenSource::Header(name) => req
            .headers()
            .get(name)?
            .to_str()
            .ok()
            .map(|v| Cow::Borrowed(v.trim())),
        TokenSource::Query(name) => query_pairs(req.uri())
            .find(|(k, _)| k == name)
            .map(|(_, v)| Cow::Owned(v)),
        TokenSource::Cookie(name) => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| Cow::Borrowed(v.trim_matches('"'))),
    }
    .filter(|t| !t.is_empty())
}

/// A query component percent-decoded (`+` is a space, as forms write it).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `(name, value)` of each query parameter, decoded.
fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(move |p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
}

/// Takes the token out of the request.
fn remove<B>(req: &mut Request<B>, source: &TokenSource) {
    match source {
        TokenSource::Header(name) => {
            req.headers_mut().remove(name);
        }
        TokenSource::Query(name) => {
            let Some(q) = req.uri().query() else { return };
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| decode(p.split_once('=').map_or(*p, |(k, _)| k)) != *name)
                .collect();
            let path = req.uri().path();
            let pq = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        TokenSource::Cookie(name) => {
            let values: Vec<String> = req
                .headers()
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .map(str::trim)
                        .filter(|c| c.split_once('=').map_or(*c, |(k, _)| k) != name)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|v| !v.is_empty())
                .collect();
            let h = req.headers_mut();
            h.remove(COOKIE);
            for v in values {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.append(COOKIE, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(token_from: &[&str], audience: Option<&str>) -> Verifier {
        let cfg_text = format!(
            "type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_file = \"s\"\ntoken_from = [{}]\n{}",
            token_from
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            audience.map_or(String::new(), |a| format!("audience = {a:?}\n"))
        );
        let mut cfg: AuthConfig = toml::from_str(&cfg_text).unwrap();
        cfg.key = Some(crate::config::LoadedKey {
            key: Arc::new(DecodingKey::from_secret(SECRET).unwrap()),
            algorithms: vec![jsonwebtoken::Algorithm::HS256],
        });
        Verifier::new(&cfg).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn later() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    #[test]
    fn a_bearer_token_is_verified_and_removed() {
        let v = verifier(&["header:authorization"], None);
        let t = token(serde_json::json!({"sub": "u1", "exp": later(), "petrel_region": "fra"}));
        let mut req = Request::get("/x")
            .header("authorization", format!("bearer {t}"))
            .body(())
            .unwrap();
        let ok = v.check(&mut req).unwrap();
        assert_eq!(ok.sub.as_deref(), Some("u1"));
        assert!(req.headers().get("authorization").is_none());
        let mut hints = Hints::default();
        ok.steer(&mut hints);
        assert_eq!(hints.prefer_regions, vec!["fra".to_string()]);
    }

    #[test]
    fn every_source_is_stripped_and_query_tokens_are_redacted_for_logs() {
        let v = verifier(
            &["header:authorization", "query:token", "cookie:sess"],
            None,
        );
        let t = token(serde_json::json!({"sub": "u3", "exp": later()}));
        let uri: Uri = format!("/p?token={t}&x=1").parse().unwrap();
        assert_eq!(v.redacted(&uri).as_deref(), Some("/p?token=[redacted]&x=1"));
        let mut req = Request::get(uri)
            .header("authorization", format!("Bearer {t}"))
            .header("cookie", format!("sess={t}; k=v"))
            .body(())
            .unwrap();
        v.check(&mut req).unwrap();
        assert_eq!(req.uri().to_string(), "/p?x=1");
        assert!(req.headers().get("authorization").is_none());
        assert_eq!(req.headers()["cookie"], "k=v");
    }

    #[test]
    fn a_configured_audience_must_be_present() {
        let v = verifier(&["header:authorization"], Some("hello"));
        let mut req = Request::get("/")
            .header(
                "authorization",
                format!("Bearer {}", token(serde_json::json!({"exp": later()}))),
            )
            .body(())
            .unwrap();
        assert_eq!(v.check(&mut req).err(), Some(AuthError::Claims));
    }

    #[test]
    fn query_and_cookie_tokens_leave_the_rest_intact() {
        let v = verifier(
            &["header:authorization", "query:token", "cookie:sess"],
            None,
        );
        let t = token(serde_json::json!({"sub": "u2", "exp": later()}));
        let mut req = Request::get(format!("/ws?a=1&token={t}&b=2"))
            .body(())
            .unwrap();
        assert_eq!(v.check(&mut req).unwrap().sub.as_deref(), Some("u2"));
        assert_eq!(req.uri().to_string(), "/ws?a=1&b=2");
        let mut req = Request::get("/")
            .header("cookie", format!("a=1; sess={t}; b=2"))
            .body(())
            .unwrap();
        v.check(&mut req).unwrap();
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
    }

    #[test]
    fn every_refusal_says_why() {
        let v = verifier(&["header:authorization"], Some("hello"));
        let check = |claims: serde_json::Value| {
            let mut req = Request::get("/")
                .header("authorization", format!("Bearer {}", token(claims)))
                .body(())
                .unwrap();
            v.check(&mut req).err()
        };
        let mut bare = Request::get("/").body(()).unwrap();
        assert_eq!(v.check(&mut bare).err(), Some(AuthError::Missing));
        assert_eq!(
            check(serde_json::json!({"aud": "hello", "exp": 1000})),
            Some(AuthError::Expired)
        );
        assert_eq!(
            check(serde_json::json!({"aud": "other", "exp": later()})),
            Some(AuthError::Audience)
        );
        assert_eq!(
            check(serde_json::json!({"aud": "hello"})),
            Some(AuthError::Claims)
        );
        assert_eq!(
            check(serde_json::json!({"aud": "hello", "exp": later()})),
            None
        );
        let forged = {
            let t = token(serde_json::json!({"aud": "hello", "exp": later()}));
            let (rest, _sig) = t.rsplit_once('.').unwrap();
            format!("{rest}.AAAA")
        };
        let mut req = Request::get("/")
            .header("authorization", format!("Bearer {forged}"))
            .body(())
            .unwrap();
        assert_eq!(v.check(&mut req).err(), Some(AuthError::Signature));
        let mut req = Request::get("/")
            .header("authorization", "Bearer not-a-jwt")
            .body(())
            .unwrap();
        assert_eq!(v.check(&mut req).err(), Some(AuthError::Malformed));
    }
}
