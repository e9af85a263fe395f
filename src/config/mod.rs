//! Configuration: `node.toml` and fly.toml-format app files, parsed, defaulted and validated once.
//!
//! Every error names the file, the line and the key (`node.toml:14: mesh.seeds[1]: …`);
//! `load_node` collects all errors of all files before giving up, so one `petrel check` shows
//! everything that is wrong.

mod app;
mod auth;
mod fly;
mod node;
mod source;
pub mod topology;
mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;

pub use app::{
    AppConfig, Check, Concurrency, HeaderNames, HeaderRule, HttpService, LimitType, LoadBalancing,
    ResponseOptions, Strategy,
};
pub use auth::{AuthConfig, AuthType, LoadedKey, TokenSource};
pub use node::{
    valid_name, valid_region, AccessFormat, AdminSection, BackhaulSection, EdgeSection,
    InstanceConfig, LogFormat, LogSection, MeshProfile, MeshSection, NodeConfig, NodeSection,
    SimulateSection, Transport,
};
pub use source::{ConfigError, ConfigErrors, Source};
pub use value::{Addr, Dur};

/// A node config with every app config it names, all valid.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node file as written (with defaults filled in).
    pub node: NodeConfig,
    /// The apps, in the order their files were found.
    pub apps: Vec<AppConfig>,
    /// Where the node file is.
    pub path: PathBuf,
    /// Where each app came from, parallel to `apps`.
    pub app_paths: Vec<PathBuf>,
    /// Edge certificates, loaded when `edge.tls_listen` is set.
    pub certs: Option<std::sync::Arc<crate::certs::CertStore>>,
}

/// Decodes `base64:<32 bytes>`.
pub fn decode_cluster_key(s: &str) -> Result<[u8; 32], String> {
    let b64 = s.strip_prefix("base64:").ok_or_else(|| {
        "must start with \"base64:\" (make one with: head -c32 /dev/urandom | base64)".to_string()
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("invalid base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("must decode to 32 bytes, got {}", b.len()))
}

/// Parses `src` as `T` and runs `validate`; every error comes back together.
fn parse_checked<T: serde::de::DeserializeOwned>(
    src: &Source,
    validate: impl Fn(&T, &Source) -> Vec<ConfigError>,
) -> Result<T, ConfigErrors> {
    let value: T = src.parse().map_err(|e| ConfigErrors(vec![e]))?;
    let errs = validate(&value, src);
    if errs.is_empty() {
        Ok(value)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Parses and validates node-file text on its own (no app files are read); for fuzzing and tools.
pub fn check_node_text(name: &Path, text: String) -> Result<NodeConfig, ConfigErrors> {
    parse_checked(&Source::from_text(name, text), NodeConfig::validate)
}

/// Parses and validates app-file text; for fuzzing and tools.
pub fn check_app_text(name: &Path, text: String) -> Result<AppConfig, ConfigErrors> {
    parse_app(&Source::from_text(name, text))
}

/// Loads and validates one app file on its own (`petrel check --app`).
pub fn load_app(path: &Path) -> Result<AppConfig, ConfigErrors> {
    let src = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
    parse_app(&src)
}

/// Parses an app file (Fly's keys that petrel does not use set aside into `ignored`) and
/// validates it.
fn parse_app(src: &Source) -> Result<AppConfig, ConfigErrors> {
    let (mut app, ignored): (AppConfig, _) = src
        .parse_ignoring(fly::FLY_IGNORED)
        .map_err(|e| ConfigErrors(vec![e]))?;
    app.ignored = ignored;
    let mut errs = app.validate(src);
    if let Some(auth) = app.http_service.auth.as_mut() {
        errs.extend(auth.load(src));
    }
    if errs.is_empty() {
        Ok(app)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Loads the node file and every app file its `node.apps` globs match, then checks them together.
pub fn load_node(path: &Path) -> Result<Config, ConfigErrors> {
    let src = Source::read(path).map_err(|e| ConfigErrors(vec![e]))?;
    let node: NodeConfig = src.parse().map_err(|e| ConfigErrors(vec![e]))?;
    let mut errs = node.validate(&src);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut app_paths = Vec::new();
    for (i, pattern) in node.node.apps.iter().enumerate() {
        let full = dir.join(pattern);
        match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => {
                let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                found.sort();
                for p in found {
                    if !app_paths.contains(&p) {
                        app_paths.push(p);
                    }
                }
            }
            Err(e) => errs.push(src.error(
                &format!("node.apps[{i}]"),
                format!("invalid glob {pattern:?}: {e}"),
            )),
        }
    }

    let mut apps = Vec::new();
    let mut loaded_paths = Vec::new();
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    let mut by_host: HashMap<String, String> = HashMap::new();
    for p in &app_paths {
        let app_src = match Source::read(p) {
            Ok(s) => s,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        let mut app = match app_src.parse_ignoring::<AppConfig>(fly::FLY_IGNORED) {
            Ok((mut a, ignored)) => {
                a.ignored = ignored;
                a
            }
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        errs.extend(app.validate(&app_src));
        if let Some(auth) = app.http_service.auth.as_mut() {
            errs.extend(auth.load(&app_src));
        }
        if let Some(prev) = by_name.insert(app.app.clone(), p.clone()) {
            errs.push(app_src.error(
                "app",
                format!("app {:?} is also defined in {}", app.app, prev.display()),
            ));
        }
        for (i, h) in app.http_service.hosts.iter().enumerate() {
            if let Some(other) = by_host.insert(h.clone(), app.app.clone()) {
                if other != app.app {
                    errs.push(app_src.error(
                        &format!("http_service.hosts[{i}]"),
                        format!("host {h:?} is already routed to app {other:?}"),
                    ));
                }
            }
        }
        apps.push(app);
        loaded_paths.push(p.clone());
    }

    for (i, inst) in node.instances.iter().enumerate() {
        if !by_name.contains_key(&inst.app) {
            errs.push(src.error(
                &format!("instances[{i}].app"),
                format!(
                    "unknown app {:?} (no file matched by node.apps defines it)",
                    inst.app
                ),
            ));
        }
    }

    let mut bound: HashMap<std::net::SocketAddr, String> = HashMap::new();
    for (key, addr) in node.bound_addresses() {
        if addr.get().port() == 0 {
            continue;
        }
        if let Some(prev) = bound.insert(addr.get(), key.clone()) {
            errs.push(src.error(&key, format!("address {addr} is also used by {prev}")));
        }
    }

    if let Some(sim) = &node.simulate {
        let topo = dir.join(&sim.topology);
        match crate::config::topology::Topology::load(&topo) {
            Ok(t) if !t.regions().contains(&node.node.region) => errs.push(src.error(
                "simulate.topology",
                format!(
                    "topology {} has no region {:?} (node.region)",
                    topo.display(),
                    node.node.region
                ),
            )),
            Ok(_) => {}
            Err(e) => errs.extend(e.0),
        }
    }
    if !matches!(node.log.access.as_str(), "off" | "stderr" | "") {
        let file = dir.join(&node.log.access);
        // A bare file name's parent is "" (the config's own directory when run as
        // `--config node.toml`): the current directory.
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        if file.file_name().is_none() {
            errs.push(src.error("log.access", format!("{:?} names no file", node.log.access)));
        } else if !parent.is_dir() {
            errs.push(src.error(
                "log.access",
                format!("directory {} does not exist", parent.display()),
            ));
        }
    }
    if node.mesh.advertise.is_none() && node.mesh.bind.get().ip().is_unspecified() {
        errs.push(src.error(
            "mesh.advertise",
            format!(
                "required when mesh.bind is {} (peers cannot send to an unspecified address)",
                node.mesh.bind
            ),
        ));
    }

    let mut certs = None;
    if !node.edge.tls_listen.is_empty() {
        let dir = dir.join(&node.edge.certs_dir);
        match crate::certs::CertStore::load(&dir, node.edge.default_cert.as_deref()) {
            Ok(store) => certs = Some(std::sync::Arc::new(store)),
            Err(e @ crate::certs::CertError::NoDefault(..)) => {
                errs.push(src.error("edge.default_cert", e.to_string()))
            }
            Err(e) => errs.push(src.error("edge.certs_dir", e.to_string())),
        }
    }

    if errs.is_empty() {
        Ok(Config {
            node,
            apps,
            path: path.to_path_buf(),
            app_paths: loaded_paths,
            certs,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_key_must_be_32_bytes_of_base64() {
        let ok = format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        assert_eq!(decode_cluster_key(&ok).unwrap(), [7u8; 32]);
        assert!(decode_cluster_key("base64:AAAA")
            .unwrap_err()
            .contains("32 bytes"));
        assert!(decode_cluster_key("hunter2")
            .unwrap_err()
            .contains("base64:"));
    }
}
