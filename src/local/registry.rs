//! Run-time registration of local instances (admin `PUT`/`DELETE /v1/instances/{id}`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::LocalTable;
use crate::config::{Addr, InstanceConfig};
use crate::state::NodeState;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The id is already used here or elsewhere in the cluster.
    #[error("instance id {0:?} is already taken")]
    Taken(String),
    /// No such app on this node.
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    /// The id does not follow the naming rule.
    #[error("invalid instance id {0:?} (use a-z, 0-9 and '-', at most 63 characters)")]
    BadId(String),
}

/// The list the local table is built from; changes swap in a new table.
pub struct Registry {
    configs: Mutex<Vec<InstanceConfig>>,
    /// Ids that came from node.toml (the rest were registered at run time and survive reloads).
    from_file: Mutex<std::collections::HashSet<String>>,
}

impl Registry {
    /// Starts from the instances in node.toml.
    pub fn new(configs: Vec<InstanceConfig>) -> Self {
        Self {
            from_file: Mutex::new(configs.iter().map(|c| c.id.clone()).collect()),
            configs: Mutex::new(configs),
        }
    }

    /// Adds an instance and swaps in a table that has it.
    pub fn register(
        &self,
        node: &NodeState,
        id: &str,
        app: &str,
        addr: SocketAddr,
    ) -> Result<(), RegisterError> {
        if !crate::config::valid_name(id) {
            return Err(RegisterError::BadId(id.to_string()));
        }
        if node.routes.load().by_name(app).is_none() {
            return Err(RegisterError::UnknownApp(app.to_string()));
        }
        let taken_remotely = node
            .cluster
            .load()
            .view
            .instances
            .iter()
            .any(|i| &*i.load.id == id);
        let mut configs = self.configs.lock().expect("registry lock");
        if taken_remotely || configs.iter().any(|c| c.id == id) {
            return Err(RegisterError::Taken(id.to_string()));
        }
        configs.push(InstanceConfig {
            id: id.to_string(),
            app: app.to_string(),
            address: Addr(addr),
        });
        let table = LocalTable::build(&configs, Some(&node.local.load()));
        node.local.store(Arc::new(table));
        tracing::info!(instance = id, app, %addr, "instance registered");
        Ok(())
    }

    /// Instances registered at run time (not from node.toml).
    pub fn run_time(&self) -> Vec<InstanceConfig> {
        let from_file = self.from_file.lock().expect("registry lock");
        let configs = self.configs.lock().expect("registry lock");
        configs
            .iter()
            .filter(|c| !from_file.contains(&c.id))
            .cloned()
            .collect()
    }

    /// Replaces the instances that came from node.toml with `file`, keeping run-time ones and the
    /// live state (load, pools) of instances that stay; swaps in the new table.
    pub fn reload(&self, node: &NodeState, file: &[InstanceConfig]) {
        let mut configs = self.configs.lock().expect("registry lock");
        let mut from_file = self.from_file.lock().expect("registry lock");
        configs.retain(|c| !from_file.contains(&c.id));
        configs.retain(|c| !file.iter().any(|f| f.id == c.id));
        configs.extend(file.iter().cloned());
        *from_file = file.iter().map(|c| c.id.clone()).collect();
        let table = LocalTable::build(&configs, Some(&node.local.load()));
        node.local.store(Arc::new(table));
    }

    /// Stops new work to `id` at once; forgets it once its open work has finished (or after
    /// `limit`). Returns false if there is no such local instance.
    pub fn deregister(&self, node: &Arc<NodeState>, id: &str, limit: Duration) -> bool {
        let Some(inst) = node.local.load().get(id).cloned() else {
            return false;
        };
        inst.start_draining();
        tracing::info!(
            instance = id,
            open = inst.load(),
            "instance deregistering: no new work"
        );
        let (node, id) = (node.clone(), id.to_string());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            while inst.load() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let registry = &node.registry;
            let mut configs = registry.configs.lock().expect("registry lock");
            configs.retain(|c| c.id != id);
            let table = LocalTable::build(&configs, Some(&node.local.load()));
            node.local.store(Arc::new(table));
            tracing::info!(instance = %id, left_open = inst.load(), "instance removed");
        });
        true
    }
}
