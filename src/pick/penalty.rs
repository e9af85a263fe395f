//! Instances this edge saw reject or refuse a connection: skipped for a short time, fresher than gossip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Instance id → until when (node clock, ms) it counts as full or unreachable.
#[derive(Default)]
pub struct Penalties {
    map: RwLock<HashMap<Arc<str>, u64>>,
    len: AtomicUsize,
}

impl Penalties {
    /// Skip `id` until `until_ms`.
    pub fn mark(&self, id: &Arc<str>, until_ms: u64) {
        let mut m = self.map.write().expect("penalty lock");
        let e = m.entry(id.clone()).or_insert(0);
        *e = (*e).max(until_ms);
        self.len.store(m.len(), Ordering::Relaxed);
    }

    /// True while `id` is penalised. Costs one atomic load when nothing is.
    pub fn active(&self, id: &str, now_ms: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.map
            .read()
            .expect("penalty lock")
            .get(id)
            .is_some_and(|&t| t > now_ms)
    }

    /// Forgets expired entries (called now and then, not on every request).
    pub fn sweep(&self, now_ms: u64) {
        let mut m = self.map.write().expect("penalty lock");
        m.retain(|_, t| *t > now_ms);
        self.len.store(m.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire() {
        let p = Penalties::default();
        assert!(!p.active("a", 0));
        p.mark(&"a".into(), 100);
        assert!(p.active("a", 99));
        assert!(!p.active("a", 100));
        p.sweep(100);
        assert_eq!(p.len.load(Ordering::Relaxed), 0);
    }
}
