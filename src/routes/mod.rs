//! The route table snapshot: which app a Host belongs to, and that app's settings and metric handles.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AppConfig, LimitType, Strategy};
use crate::telemetry::AppMetrics;

pub mod auth;
pub mod per_client;

/// One app as the request path sees it.
pub struct AppRoute {
    /// App name.
    pub name: Arc<str>,
    /// Extra hosts from config.
    pub hosts: Vec<String>,
    /// Strategy for picking instances.
    pub strategy: Strategy,
    /// Deprioritise at or above.
    pub soft: u32,
    /// Take nothing new at or above.
    pub hard: u32,
    /// Other instances tried after a reject or failed connect.
    pub retries: u32,
    /// What counts as load.
    pub kind: LimitType,
    /// Pre-registered metric handles.
    pub metrics: AppMetrics,
    /// Active health checks of its local instances.
    pub checks: Vec<crate::config::Check>,
    /// Instances speak HTTP/2 with prior knowledge (`http_options.h2_backend`); else HTTP/1.1.
    pub h2_backend: bool,
    /// Plaintext requests are redirected to https (Fly's `force_https`).
    pub force_https: bool,
    /// The forwarding headers take Fly's names (`http_options.header_names = "fly"`).
    pub fly_names: bool,
    /// Responses get none of petrel's own headers (`http_options.response.pristine`).
    pub pristine: bool,
    /// Fly's response header rules: set these values (`Some`), or remove the header (`None`).
    pub response_headers: Vec<(http::HeaderName, Option<Vec<http::HeaderValue>>)>,
    /// In-flight requests per client IP, when the app limits them.
    pub per_client: Option<Arc<per_client::PerClient>>,
    /// The app's token check (`[http_service.auth]`), if it has one.
    pub auth: Option<Arc<auth::Verifier>>,
    /// Resumable WebSockets (`[http_service.sessions] resume = true`), if the app has them.
    pub sessions: Option<crate::session::SessionConfig>,
}

/// Parses validated `[http_service.http_options.response] headers` into ready rules.
fn response_rules(
    rules: &std::collections::BTreeMap<String, crate::config::HeaderRule>,
) -> Vec<(http::HeaderName, Option<Vec<http::HeaderValue>>)> {
    use crate::config::HeaderRule;
    rules
        .iter()
        .filter_map(|(name, rule)| {
            let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let values = |vs: &[String]| {
                vs.iter()
                    .filter_map(|v| http::HeaderValue::from_str(v).ok())
                    .collect()
            };
            Some(match rule {
                HeaderRule::One(v) => (name, Some(values(std::slice::from_ref(v)))),
                HeaderRule::Many(v) => (name, Some(values(v))),
                HeaderRule::Remove(_) => (name, None),
            })
        })
        .collect()
}

/// Host → app, immutable; a reload builds a new one and swaps it in.
#[derive(Default)]
pub struct RouteTable {
    exact: HashMap<String, Arc<AppRoute>>,
    wildcard: HashMap<String, Arc<AppRoute>>,
    apps: Vec<Arc<AppRoute>>,
}

impl RouteTable {
    /// Builds the table from validated app configs.
    pub fn build(apps: &[AppConfig]) -> Self {
        let mut t = RouteTable::default();
        for a in apps {
            let svc = &a.http_service;
            let route = Arc::new(AppRoute {
                name: a.app.as_str().into(),
                hosts: svc.hosts.clone(),
                strategy: svc.load_balancing.strategy,
                soft: svc.concurrency.soft_limit,
                hard: svc.concurrency.hard_limit,
                retries: svc.load_balancing.retries,
                kind: svc.concurrency.kind,
                metrics: AppMetrics::new(&a.app),
                checks: svc.checks.clone(),
                h2_backend: svc.http_options.h2_backend,
                force_https: svc.force_https,
                fly_names: svc.http_options.header_names == crate::config::HeaderNames::Fly,
                pristine: svc.http_options.response.pristine,
                response_headers: response_rules(&svc.http_options.response.headers),
                per_client: svc
                    .concurrency
                    .per_client
                    .map(|n| Arc::new(per_client::PerClient::new(n))),
                auth: svc
                    .auth
                    .as_ref()
                    .and_then(auth::Verifier::new)
                    .map(Arc::new),
                sessions: svc.sessions.resume.then(|| crate::session::SessionConfig {
                    hold: svc.sessions.hold.get(),
                    replay_bytes: svc.sessions.replay_bytes as usize,
                    ping_interval: svc.sessions.ping_interval.get(),
                }),
            });
            t.exact.insert(a.app.clone(), route.clone());
            t.exact
                .insert(format!("{}.localhost", a.app), route.clone());
            for h in &svc.hosts {
                match h.strip_prefix("*.") {
                    Some(suffix) => t.wildcard.insert(suffix.to_string(), route.clone()),
                    None => t.exact.insert(h.clone(), route.clone()),
                };
            }
            t.apps.push(route);
        }
        t
    }

    /// The app for a normalised host (lowercase, no port); exact names win over wildcards.
    pub fn lookup(&self, host: &str) -> Option<&Arc<AppRoute>> {
        self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// An app by name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<AppRoute>> {
        self.apps.iter().find(|a| &*a.name == name)
    }

    /// Every app.
    pub fn apps(&self) -> &[Arc<AppRoute>] {
        &self.apps
    }
}

/// Lowercases and strips the port and a trailing dot: `Hello.Example.com.:8080` → `hello.example.com`.
/// Borrows from `raw` when it is already lowercase (most requests: no allocation). `None` when
/// `raw` is not a valid host (RFC 3986 §3.2.2, RFC 9112 §3.2).
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    // No userinfo (RFC 9110 §4.2.4: a sender must not generate it, a recipient should treat it as
    // an error), and a port, if any, of digits (RFC 9112 §3.2).
    if raw.contains('@') {
        return None;
    }
    // RFC 3986 §3.2.3: `port = *DIGIT`, so `host:` (an empty port) is valid and means the default.
    let port_ok = |p: &str| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let host = if raw.starts_with('[') {
        let end = raw.find(']')?;
        match &raw[end + 1..] {
            "" => {}
            rest => {
                if !rest.strip_prefix(':').is_some_and(port_ok) {
                    return None;
                }
            }
        }
        &raw[..=end]
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if port_ok(p) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    // RFC 3986 §3.2.2: a reg-name (unreserved, sub-delims, pct-encoded) or an IP literal.
    let valid = match host.strip_prefix('[') {
        Some(lit) => lit.strip_suffix(']').is_some_and(|l| {
            l.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }),
        None => host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)),
    };
    if !valid {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use std::path::Path;

    fn app(text: &str) -> AppConfig {
        Source::from_text(Path::new("t.toml"), text.into())
            .parse()
            .unwrap()
    }

    #[test]
    fn hosts_with_characters_no_uri_allows_are_refused() {
        for bad in [
            "raw.example.com/evil",
            "a b",
            "a\tb",
            "x\\y",
            "h?q",
            "[::1",
            "[zz::1]",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(
            normalize_host("My-App.example.com.").as_deref(),
            Some("my-app.example.com")
        );
    }

    #[test]
    fn routes_by_name_localhost_hosts_and_wildcards() {
        let t = RouteTable::build(&[
            app("app = \"hello\"\n[http_service]\nhosts = [\"hello.example.com\"]\n"),
            app("app = \"shop\"\n[http_service]\nhosts = [\"*.shop.test\"]\n"),
        ]);
        let name = |h: &str| t.lookup(h).map(|r| r.name.to_string());
        assert_eq!(name("hello").as_deref(), Some("hello"));
        assert_eq!(name("hello.localhost").as_deref(), Some("hello"));
        assert_eq!(name("hello.example.com").as_deref(), Some("hello"));
        assert_eq!(name("eu.shop.test").as_deref(), Some("shop"));
        assert_eq!(name("shop.test"), None);
        assert_eq!(name("nope.example.com"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalize_host("Hello.Example.COM.:8080").as_deref(),
            Some("hello.example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("hello").as_deref(), Some("hello"));
        assert_eq!(normalize_host(""), None);
    }
}
