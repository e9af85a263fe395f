//! The list of local instances the table is built from: node.toml's and those registered at run
//! time (admin `PUT`/`DELETE /v1/instances/{id}`, through `crate::node::registry`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::LocalTable;
use crate::config::{Addr, InstanceConfig};

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

    /// Adds an instance and swaps in a table that has it (`local`). `taken_elsewhere`: the id is
    /// already used by an instance on another node. Checking that the app exists is the caller's.
    pub fn add(
        &self,
        local: &ArcSwap<LocalTable>,
        id: &str,
        app: &str,
        addr: SocketAddr,
        taken_elsewhere: bool,
    ) -> Result<(), RegisterError> {
        if !crate::config::valid_name(id) {
            return Err(RegisterError::BadId(id.to_string()));
        }
        let mut configs = self.configs.lock().expect("registry lock");
        if taken_elsewhere || configs.iter().any(|c| c.id == id) {
            return Err(RegisterError::Taken(id.to_string()));
        }
        configs.push(InstanceConfig {
            id: id.to_string(),
            app: app.to_string(),
            address: Addr(addr),
        });
        local.store(Arc::new(LocalTable::build(&configs, Some(&local.load()))));
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
    pub fn reload(&self, local: &ArcSwap<LocalTable>, file: &[InstanceConfig]) {
        let mut configs = self.configs.lock().expect("registry lock");
        let mut from_file = self.from_file.lock().expect("registry lock");
        configs.retain(|c| !from_file.contains(&c.id));
        configs.retain(|c| !file.iter().any(|f| f.id == c.id));
        configs.extend(file.iter().cloned());
        *from_file = file.iter().map(|c| c.id.clone()).collect();
        local.store(Arc::new(LocalTable::build(&configs, Some(&local.load()))));
    }

    /// Forgets `id` and swaps in a table without it (its open work has ended or run out of time).
    pub fn remove(&self, local: &ArcSwap<LocalTable>, id: &str) {
        let mut configs = self.configs.lock().expect("registry lock");
        configs.retain(|c| c.id != id);
        local.store(Arc::new(LocalTable::build(&configs, Some(&local.load()))));
    }
}
