//! Hitless reload (SIGHUP, `POST /v1/reload`): re-read node and app configs, validate them, and
//! swap the route table, edge settings and instance table atomically. An invalid config changes
//! nothing; open connections are never touched.

use std::sync::Arc;

use crate::config::{self, ConfigErrors};
use crate::routes::RouteTable;
use crate::state::{restart_only, EdgeSettings, NodeState};

/// What a successful reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Apps now routed.
    pub apps: usize,
    /// Instances from node.toml now hosted.
    pub instances: usize,
    /// True if settings changed that only a restart can apply (they were not applied).
    pub needs_restart: bool,
}

/// Re-reads the config files and applies them, or returns why not (old config keeps running).
pub fn reload(node: &NodeState) -> Result<Reloaded, ConfigErrors> {
    let cfg = config::load_node(&node.config_path)?;
    let needs_restart = restart_only(&cfg) != node.restart_only;
    node.routes.store(Arc::new(RouteTable::build(&cfg.apps)));
    node.settings
        .store(Arc::new(EdgeSettings::from_config(&cfg)));
    node.registry.reload(&node.local, &cfg.node.instances);
    rotate_keys(node, &cfg);
    if let (Some(resolver), Some(store)) = (&node.tls, &cfg.certs) {
        tracing::info!(names = store.len(), "edge certificates reloaded");
        resolver.swap(store.clone());
    }
    let r = Reloaded {
        apps: cfg.apps.len(),
        instances: cfg.node.instances.len(),
        needs_restart,
    };
    if needs_restart {
        tracing::warn!("reloaded; listener, identity, mesh or backhaul settings changed and need a restart to apply");
    }
    tracing::info!(
        apps = r.apps,
        instances = r.instances,
        "configuration reloaded"
    );
    Ok(r)
}

/// Applies changed cluster keys (`mesh.cluster_key` / `cluster_keys`): the mesh seals with the new
/// primary and opens with any; the backhaul signs with it, accepts any, presents a certificate
/// from its CA and trusts every key's CA. Open connections keep their TLS session.
fn rotate_keys(node: &NodeState, cfg: &config::Config) {
    let keys = cfg.node.mesh.keys();
    if keys.is_empty() || **node.keys.mesh.load() == keys {
        return; // an open cluster has nothing to rotate (becoming keyed needs a restart)
    }
    let backhaul = &node.keys.backhaul;
    let tls = match cfg.node.backhaul.cert_files() {
        Some(_) => backhaul.load().tls.clone(), // `petrel certs` files: not derived from keys
        None => match crate::backhaul::tls::ClusterTls::derive(&keys, &node.name) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                tracing::error!(error = %e, "cluster keys not rotated: backhaul TLS could not be derived");
                return;
            }
        },
    };
    if let (Some(endpoint), Some(t)) = (&node.keys.quic, &tls) {
        match crate::backhaul::quic_server_config(t) {
            Ok(c) => endpoint.set_server_config(Some(c)),
            Err(e) => tracing::error!(error = %e, "QUIC backhaul keeps its old TLS"),
        }
    }
    backhaul.store(crate::backhaul::Credentials {
        auth: Some(crate::backhaul::protocol::AuthKey::new(&keys)),
        tls,
    });
    node.keys.mesh.store(Arc::new(keys.clone()));
    tracing::info!(
        keys = keys.len(),
        "cluster keys rotated: sending with the first, accepting all"
    );
}

/// Reload and log the outcome; errors name file, line and key.
pub fn reload_logged(node: &NodeState) -> Result<Reloaded, ConfigErrors> {
    crate::systemd::reloading();
    let r = reload(node);
    crate::systemd::reloaded();
    if let Err(errs) = &r {
        for e in &errs.0 {
            tracing::error!("reload refused, old configuration keeps running: {e}");
        }
    }
    r
}
