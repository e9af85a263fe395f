//! Load records: each node's compact, versioned view of its own instances, gossiped through foca
//! custom broadcasts. Newer versions invalidate older ones; a node's records die with its generation.

use std::collections::BTreeSet;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One instance's load as its owner node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLoad {
    /// Instance id (unique in the cluster).
    pub id: Arc<str>,
    /// App it serves.
    pub app: Arc<str>,
    /// In-flight requests or connections.
    pub load: u32,
    /// Soft limit.
    pub soft: u32,
    /// Hard limit.
    pub hard: u32,
    /// Passing health checks and not being removed.
    pub healthy: bool,
}

/// A versioned record as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// Owner node name.
    pub node: Arc<str>,
    /// Owner node generation: records of older generations are void.
    pub generation: u64,
    /// Increases with every change the owner makes.
    pub version: u64,
    /// The instance was removed from the owner.
    pub removed: bool,
    /// The figures.
    pub inst: InstanceLoad,
}

impl LoadRecord {
    /// Encodes for a broadcast.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("load records always serialize")
    }

    /// Decodes a broadcast.
    pub fn decode(data: &[u8]) -> Option<Self> {
        postcard::from_bytes(data).ok()
    }

    fn key(&self) -> LoadKey {
        LoadKey {
            tag: LoadKey::tag(&self.node, &self.inst.id),
            node: self.node.clone(),
            instance: self.inst.id.clone(),
            generation: self.generation,
            version: self.version,
        }
    }
}

/// A record decoded in place: the same wire layout as [`LoadRecord`], borrowing its strings, so
/// the common case (a newer version of a known instance) costs no allocation.
#[derive(Debug, Deserialize)]
pub struct LoadRecordRef<'a> {
    /// Owner node name.
    pub node: &'a str,
    /// Owner node generation.
    pub generation: u64,
    /// Owner's change count.
    pub version: u64,
    /// The instance was removed.
    pub removed: bool,
    /// The figures.
    #[serde(borrow)]
    pub inst: InstanceLoadRef<'a>,
}

/// The borrowed form of [`InstanceLoad`].
#[derive(Debug, Deserialize)]
pub struct InstanceLoadRef<'a> {
    /// Instance id.
    pub id: &'a str,
    /// App it serves.
    pub app: &'a str,
    /// In-flight requests or connections.
    pub load: u32,
    /// Soft limit.
    pub soft: u32,
    /// Hard limit.
    pub hard: u32,
    /// Healthy.
    pub healthy: bool,
}

impl LoadRecordRef<'_> {
    /// Decodes a record without copying its strings.
    pub fn decode(data: &[u8]) -> Option<LoadRecordRef<'_>> {
        postcard::from_bytes(data).ok()
    }

    /// The owned record.
    pub fn to_owned(&self) -> LoadRecord {
        LoadRecord {
            node: self.node.into(),
            generation: self.generation,
            version: self.version,
            removed: self.removed,
            inst: InstanceLoad {
                id: self.inst.id.into(),
                app: self.inst.app.into(),
                load: self.inst.load,
                soft: self.inst.soft,
                hard: self.inst.hard,
                healthy: self.inst.healthy,
            },
        }
    }
}

/// Identifies a broadcast for foca's dissemination backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadKey {
    /// A hash of (node, instance): foca compares every new key with its whole backlog (thousands
    /// of records at 1,000 nodes), and two different instances almost always differ here, before
    /// any string is compared.
    tag: u64,
    node: Arc<str>,
    instance: Arc<str>,
    generation: u64,
    version: u64,
}

impl LoadKey {
    fn tag(node: &str, instance: &str) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x5eed).hash_one((node, instance))
    }
}

impl foca::Invalidates for LoadKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.tag == other.tag
            && self.node == other.node
            && self.instance == other.instance
            && (self.generation, self.version) >= (other.generation, other.version)
    }
}

/// (instance, node): where a record sits in the book, in the order snapshots list instances.
type RecordKey = (Arc<str>, Arc<str>);

/// One node's records: instance → newest record and when it arrived.
type NodeRecords = HashMap<Arc<str>, (LoadRecord, Duration)>;

/// The newest record per (node, instance), and each node's current generation.
#[derive(Debug, Default)]
pub struct LoadBook {
    /// Node → instance → newest record and when it arrived. Nested so that forgetting a node
    /// costs its own records, not the whole book (a 1,000-node mesh forgets often at start-up).
    records: HashMap<Arc<str>, NodeRecords>,
    /// App → (instance, node) of every record in `records`: one app's instances without a pass
    /// over the whole book (10,000 records at 1,000 nodes).
    by_app: HashMap<Arc<str>, BTreeSet<RecordKey>>,
    generations: HashMap<Arc<str>, u64>,
    /// Bumped whenever what `records` says changes.
    pub changes: u64,
    /// The mesh clock, set by the core before it hands foca any data (records are stamped with it).
    pub now: Duration,
}

impl LoadBook {
    /// Takes `rec` if it is newer than what is known; returns true when it changed the book
    /// (and so should be passed on).
    pub fn offer(&mut self, rec: LoadRecord) -> bool {
        let current_gen = self.generations.get(&rec.node).copied().unwrap_or(0);
        if rec.generation < current_gen {
            return false; // an older incarnation of that node: void
        }
        if rec.generation > current_gen {
            self.forget_node_below(&rec.node, rec.generation);
        }
        let node = self.records.entry(rec.node.clone()).or_default();
        let key = (rec.inst.id.clone(), rec.node.clone());
        if let Some((old, _)) = node.get(&rec.inst.id) {
            if (old.generation, old.version) >= (rec.generation, rec.version) {
                return false;
            }
            if old.inst.app != rec.inst.app {
                if let Some(set) = self.by_app.get_mut(&old.inst.app) {
                    set.remove(&key);
                }
            }
        }
        self.by_app
            .entry(rec.inst.app.clone())
            .or_default()
            .insert(key);
        node.insert(rec.inst.id.clone(), (rec, self.now));
        self.changes += 1;
        true
    }

    /// [`offer`](Self::offer) for a borrowed record: a newer version of an instance the book
    /// already holds (same node generation, same app) is written in place; anything else takes
    /// the owned path.
    pub fn offer_ref(&mut self, rec: &LoadRecordRef<'_>) -> bool {
        let current_gen = self.generations.get(rec.node).copied().unwrap_or(0);
        if rec.generation < current_gen {
            return false;
        }
        if rec.generation == current_gen {
            let known = self
                .records
                .get_mut(rec.node)
                .and_then(|m| m.get_mut(rec.inst.id));
            if let Some((old, at)) = known {
                if *old.inst.app == *rec.inst.app {
                    if (old.generation, old.version) >= (rec.generation, rec.version) {
                        return false;
                    }
                    old.generation = rec.generation;
                    old.version = rec.version;
                    old.removed = rec.removed;
                    old.inst.load = rec.inst.load;
                    old.inst.soft = rec.inst.soft;
                    old.inst.hard = rec.inst.hard;
                    old.inst.healthy = rec.inst.healthy;
                    *at = self.now;
                    self.changes += 1;
                    return true;
                }
            }
        }
        self.offer(rec.to_owned())
    }

    /// The dissemination key of the record the book holds for (node, instance).
    pub fn key_of(&self, node: &str, id: &str) -> Option<LoadKey> {
        self.records.get(node)?.get(id).map(|(r, _)| r.key())
    }

    /// Drops every record of `node` older than `generation` and remembers the generation.
    pub fn forget_node_below(&mut self, node: &Arc<str>, generation: u64) {
        self.generations.insert(node.clone(), generation);
        if let Some(mine) = self.records.get_mut(node) {
            let before = mine.len();
            let by_app = &mut self.by_app;
            mine.retain(|id, (r, _)| {
                let keep = r.generation >= generation;
                if !keep {
                    if let Some(set) = by_app.get_mut(&r.inst.app) {
                        set.remove(&(id.clone(), node.clone()));
                    }
                }
                keep
            });
            if mine.len() != before {
                self.changes += 1;
            }
            if mine.is_empty() {
                self.records.remove(node);
            }
        }
    }

    /// Drops every record of `node` (it went down); a later generation may come back.
    pub fn forget_node(&mut self, node: &Arc<str>, generation: u64) {
        self.forget_node_below(node, generation.saturating_add(1));
    }

    /// Live records (removed ones excluded) with the time each arrived.
    pub fn iter(&self) -> impl Iterator<Item = (&LoadRecord, Duration)> {
        self.records
            .values()
            .flat_map(|m| m.values())
            .filter(|(r, _)| !r.removed)
            .map(|(r, t)| (r, *t))
    }

    /// Live records of one app, through the app index, ordered by instance id.
    pub fn iter_app<'a>(
        &'a self,
        app: &str,
    ) -> impl Iterator<Item = (&'a LoadRecord, Duration)> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|(id, node)| self.records.get(node)?.get(id))
            .filter(|(r, _)| !r.removed)
            .map(|(r, t)| (r, *t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Invalidates;

    fn rec(node: &str, generation: u64, version: u64, id: &str, load: u32) -> LoadRecord {
        LoadRecord {
            node: node.into(),
            generation,
            version,
            removed: false,
            inst: InstanceLoad {
                id: id.into(),
                app: "app".into(),
                load,
                soft: 10,
                hard: 20,
                healthy: true,
            },
        }
    }

    #[test]
    fn newer_versions_win_and_stale_ones_are_ignored() {
        let mut b = LoadBook::default();
        assert!(b.offer(rec("a", 1, 1, "i", 3)));
        assert!(b.offer(rec("a", 1, 2, "i", 5)));
        assert!(!b.offer(rec("a", 1, 1, "i", 9)), "older version");
        assert!(!b.offer(rec("a", 1, 2, "i", 9)), "same version");
        assert_eq!(b.iter().next().unwrap().0.inst.load, 5);
    }

    #[test]
    fn a_new_generation_voids_the_old_ones_records_for_good() {
        let mut b = LoadBook::default();
        b.offer(rec("a", 1, 50, "old-inst", 3));
        assert!(b.offer(rec("a", 2, 1, "new-inst", 1)));
        let ids: Vec<_> = b.iter().map(|(r, _)| r.inst.id.to_string()).collect();
        assert_eq!(ids, ["new-inst"]);
        assert!(
            !b.offer(rec("a", 1, 51, "old-inst", 3)),
            "late gossip of the old generation"
        );
        assert_eq!(b.iter().count(), 1);
    }

    #[test]
    fn a_down_node_loses_its_records_until_a_newer_generation_speaks() {
        let mut b = LoadBook::default();
        b.offer(rec("a", 3, 1, "i", 3));
        b.offer(rec("b", 1, 1, "j", 3));
        b.forget_node(&"a".into(), 3);
        assert_eq!(b.iter().count(), 1);
        assert!(
            !b.offer(rec("a", 3, 2, "i", 3)),
            "still generation 3: it was declared down"
        );
        assert!(b.offer(rec("a", 4, 1, "i", 3)));
    }

    #[test]
    fn the_app_index_follows_offers_moves_and_forgotten_nodes() {
        let mut b = LoadBook::default();
        let mut other = rec("b", 1, 1, "k", 1);
        other.inst.app = "other".into();
        b.offer(rec("a", 1, 1, "i", 3));
        b.offer(rec("a", 1, 2, "j", 3));
        b.offer(other);
        let ids = |b: &LoadBook, app: &str| {
            let mut v: Vec<String> = b
                .iter_app(app)
                .map(|(r, _)| r.inst.id.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(&b, "app"), ["i", "j"]);
        assert_eq!(ids(&b, "other"), ["k"]);
        let mut moved = rec("a", 1, 3, "j", 3);
        moved.inst.app = "other".into();
        b.offer(moved);
        assert_eq!(ids(&b, "app"), ["i"]);
        assert_eq!(ids(&b, "other"), ["j", "k"]);
        let mut gone = rec("a", 1, 4, "i", 0);
        gone.removed = true;
        b.offer(gone);
        assert!(
            ids(&b, "app").is_empty(),
            "a removed instance is not listed"
        );
        b.forget_node(&"a".into(), 1);
        assert_eq!(ids(&b, "other"), ["k"]);
        assert!(ids(&b, "nope").is_empty());
        let all: usize = b.by_app.values().map(|s| s.len()).sum();
        assert_eq!(
            all,
            b.records.values().map(|m| m.len()).sum::<usize>(),
            "index matches the book"
        );
    }

    #[test]
    fn borrowed_offers_agree_with_owned_ones() {
        let cases = [
            rec("a", 1, 1, "i", 3),
            rec("a", 1, 2, "i", 5),
            rec("a", 1, 2, "i", 9),
            rec("a", 1, 1, "i", 9),
            rec("a", 2, 1, "j", 1),
            rec("a", 1, 3, "i", 2),
            rec("b", 1, 1, "i", 4),
        ];
        let (mut owned, mut borrowed) = (LoadBook::default(), LoadBook::default());
        for r in cases {
            let bytes = r.encode();
            let view = LoadRecordRef::decode(&bytes).unwrap();
            assert_eq!(view.to_owned(), r);
            assert_eq!(owned.offer(r.clone()), borrowed.offer_ref(&view), "{r:?}");
        }
        let dump = |b: &LoadBook| {
            let mut v: Vec<LoadRecord> = b.iter().map(|(r, _)| r.clone()).collect();
            v.sort_by(|x, y| (&x.node, &x.inst.id).cmp(&(&y.node, &y.inst.id)));
            v
        };
        assert_eq!(dump(&owned), dump(&borrowed));
        assert_eq!(owned.changes, borrowed.changes);
        assert_eq!(
            borrowed.key_of("a", "j"),
            Some(rec("a", 2, 1, "j", 1).key())
        );
    }

    #[test]
    fn keys_invalidate_older_versions_of_the_same_instance_only() {
        let k = |g, v, i: &str| rec("a", g, v, i, 0).key();
        assert!(k(1, 2, "i").invalidates(&k(1, 1, "i")));
        assert!(k(2, 1, "i").invalidates(&k(1, 9, "i")));
        assert!(!k(1, 1, "i").invalidates(&k(1, 2, "i")));
        assert!(!k(1, 2, "i").invalidates(&k(1, 1, "j")));
    }

    #[test]
    fn records_are_small() {
        let r = rec("iad-1", u64::MAX, 1 << 40, "hello-iad-1a", 25);
        assert!(r.encode().len() < 64, "{} bytes", r.encode().len());
        assert_eq!(LoadRecord::decode(&r.encode()), Some(r));
        assert_eq!(LoadRecord::decode(b"\xff\xff"), None);
    }
}
