//! The immutable table of local instances, swapped whole when instances are added or removed.

use std::collections::HashMap;
use std::sync::Arc;

use super::Instance;
use crate::config::InstanceConfig;

/// Local instances by app and by id; read through an `ArcSwap` on the request path.
#[derive(Default)]
pub struct LocalTable {
    by_app: HashMap<Arc<str>, Vec<Arc<Instance>>>,
    by_id: HashMap<Arc<str>, Arc<Instance>>,
}

impl LocalTable {
    /// Builds a table from config, keeping the live `Instance` (counters, pools) of ids already in `prev`.
    pub fn build(instances: &[InstanceConfig], prev: Option<&LocalTable>) -> Self {
        let mut t = LocalTable::default();
        for ic in instances {
            let inst = match prev.and_then(|p| p.by_id.get(ic.id.as_str())) {
                Some(old) if old.addr == ic.address.get() && *old.app == *ic.app => old.clone(),
                _ => Instance::new(&ic.id, &ic.app, ic.address.get()),
            };
            t.by_app
                .entry(inst.app.clone())
                .or_default()
                .push(inst.clone());
            t.by_id.insert(inst.id.clone(), inst);
        }
        t
    }

    /// Instances of `app` on this node.
    pub fn for_app(&self, app: &str) -> &[Arc<Instance>] {
        self.by_app.get(app).map(Vec::as_slice).unwrap_or(&[])
    }

    /// One instance by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Instance>> {
        self.by_id.get(id)
    }

    /// Every instance, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.by_id.values()
    }
}
