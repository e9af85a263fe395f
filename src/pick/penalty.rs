//! Instances this edge saw reject or refuse a connection: skipped for a short time, fresher than
//! gossip. Lock-free to read: the map is swapped whole (`ArcSwap`) on the rare write.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;

type Map<K> = HashMap<K, u64, foldhash::fast::RandomState>;

/// Instance → until when (the caller's clock, any unit) it counts as full or unreachable. Keys are
/// instance ids at the edge and instance numbers in `petrel sim`.
#[derive(Debug)]
pub struct Penalties<K> {
    map: ArcSwap<Map<K>>,
}

impl<K> Default for Penalties<K> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(Map::default()),
        }
    }
}

impl<K: Hash + Eq + Clone> Penalties<K> {
    /// Skip `id` until `until` (a later mark wins).
    pub fn mark(&self, id: &K, until: u64) {
        self.map.rcu(|m| {
            let mut m = Map::clone(m);
            let e = m.entry(id.clone()).or_insert(0);
            *e = (*e).max(until);
            m
        });
    }

    /// True while `id` is penalised. One atomic load and, when any penalty exists, a lookup.
    pub fn active<Q>(&self, id: &Q, now: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let m = self.map.load();
        !m.is_empty() && m.get(id).is_some_and(|&t| t > now)
    }

    /// Forgets expired entries (called now and then, not on every request).
    pub fn sweep(&self, now: u64) {
        if self.map.load().values().all(|&t| t > now) {
            return;
        }
        self.map.rcu(|m| {
            let mut m = Map::clone(m);
            m.retain(|_, t| *t > now);
            m
        });
    }

    /// Forgets every entry (a restarted node).
    pub fn clear(&self) {
        self.map.store(Arc::new(Map::default()));
    }

    /// Entries, expired or not.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire() {
        let p = Penalties::<Arc<str>>::default();
        assert!(!p.active("a", 0));
        p.mark(&"a".into(), 100);
        p.mark(&"a".into(), 50);
        assert!(p.active("a", 99), "the later mark holds");
        assert!(!p.active("a", 100));
        p.sweep(100);
        assert!(p.is_empty());
    }
}
