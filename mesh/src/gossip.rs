//! foca's custom-broadcast handler: the two kinds of gossip petrel adds to SWIM's, load records
//! and Lifeguard suspicion records, each kept only when it is news.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lifeguard::SuspicionRecord;
use crate::load::{LoadBook, LoadKey, LoadRecordRef};

/// Where a broadcast sits in foca's dissemination backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipKey {
    /// A load record; a newer version of the same instance replaces it.
    Load(LoadKey),
    /// A suspicion record; only a newer incarnation by the same suspecter replaces it.
    Suspicion(SuspicionKey),
}

/// A suspicion record with a hash of (target, suspecter): foca compares each new key with its
/// whole backlog, and at 1,000 nodes most suspicions share generation and incarnation, so
/// without it nearly every comparison reached the strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspicionKey {
    tag: u64,
    rec: SuspicionRecord,
}

impl SuspicionKey {
    /// The key of `rec`.
    pub fn new(rec: SuspicionRecord) -> Self {
        use std::hash::BuildHasher;
        let tag = foldhash::fast::FixedState::with_seed(0x5eed).hash_one((
            &*rec.target,
            &*rec.from,
            rec.generation,
        ));
        Self { tag, rec }
    }
}

impl foca::Invalidates for GossipKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (GossipKey::Load(a), GossipKey::Load(b)) => a.invalidates(b),
            // Numbers first: most pairs differ there, before any string is compared.
            (GossipKey::Suspicion(a), GossipKey::Suspicion(b)) => {
                a.tag == b.tag
                    && a.rec.incarnation >= b.rec.incarnation
                    && a.rec.generation == b.rec.generation
                    && a.rec.target == b.rec.target
                    && a.rec.from == b.rec.from
            }
            _ => false,
        }
    }
}

/// Suspicion records heard and not yet taken by the mesh core, and the ones already heard (so
/// each is passed on once), stamped with the mesh clock when first heard.
#[derive(Debug, Default)]
pub struct SuspicionInbox {
    /// New records, in arrival order.
    pub new: Vec<SuspicionRecord>,
    seen: BTreeMap<SuspicionRecord, Duration>,
    /// Distinct suspecters heard per (target, generation, incarnation), and when the first was.
    suspecters: BTreeMap<(Arc<str>, u64, u16), (u32, Duration)>,
    /// Suspecters of one suspicion passed on at most: past K + 1 (the first and K confirmations)
    /// no timer gets shorter, so more would only cost bytes. 0 passes every one on.
    pub pass_on: u32,
    /// The mesh clock, set by the core before it hands foca any data.
    pub now: Duration,
}

impl SuspicionInbox {
    /// Forgets records first heard before `before` (their suspicions are over).
    pub fn forget_before(&mut self, before: Duration) {
        self.seen.retain(|_, at| *at >= before);
        self.suspecters.retain(|_, (_, at)| *at >= before);
    }
}

/// foca's custom-broadcast handler.
pub struct Handler {
    /// Load records go here.
    pub book: Arc<Mutex<LoadBook>>,
    /// Suspicion records go here.
    pub suspicions: Arc<Mutex<SuspicionInbox>>,
}

/// A broadcast that is neither a load record nor a suspicion record.
#[derive(Debug)]
pub struct BadRecord;

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("undecodable gossip record")
    }
}

impl std::error::Error for BadRecord {}

impl<T> foca::BroadcastHandler<T> for Handler {
    type Key = GossipKey;
    type Error = BadRecord;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<GossipKey>, BadRecord> {
        if data.first() == Some(&SuspicionRecord::MARKER) {
            let rec = SuspicionRecord::decode(data).ok_or(BadRecord)?;
            let mut inbox = self.suspicions.lock().expect("suspicion inbox");
            let now = inbox.now;
            if inbox.seen.insert(rec.clone(), now).is_some() {
                return Ok(None);
            }
            inbox.new.push(rec.clone());
            let key = (rec.target.clone(), rec.generation, rec.incarnation);
            let (count, _) = inbox.suspecters.entry(key).or_insert((0, now));
            *count += 1;
            let count = *count;
            if inbox.pass_on > 0 && count > inbox.pass_on {
                return Ok(None);
            }
            return Ok(Some(GossipKey::Suspicion(SuspicionKey::new(rec))));
        }
        let rec = LoadRecordRef::decode(data).ok_or(BadRecord)?;
        let mut book = self.book.lock().expect("load book lock");
        if !book.offer_ref(&rec) {
            return Ok(None);
        }
        Ok(book.key_of(rec.node, rec.inst.id).map(GossipKey::Load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};

    fn handler() -> Handler {
        Handler {
            book: Arc::default(),
            suspicions: Arc::default(),
        }
    }

    #[test]
    fn a_suspicion_is_passed_on_once_and_never_read_as_load() {
        let mut h = handler();
        let rec = SuspicionRecord {
            target: "x".into(),
            generation: 3,
            incarnation: 2,
            from: "a".into(),
        };
        let key = BroadcastHandler::<()>::receive_item(&mut h, &rec.encode(), None).unwrap();
        let suspicion = |r: &SuspicionRecord| GossipKey::Suspicion(SuspicionKey::new(r.clone()));
        assert_eq!(key, Some(suspicion(&rec)));
        let again = BroadcastHandler::<()>::receive_item(&mut h, &rec.encode(), None).unwrap();
        assert_eq!(again, None, "heard before: not passed on again");
        assert_eq!(h.suspicions.lock().unwrap().new, vec![rec.clone()]);
        assert_eq!(h.book.lock().unwrap().iter().count(), 0);
        let newer = SuspicionRecord {
            incarnation: 3,
            ..rec.clone()
        };
        assert!(suspicion(&newer).invalidates(&suspicion(&rec)));
        assert!(!suspicion(&rec).invalidates(&suspicion(&newer)));
        let other = SuspicionRecord {
            from: "b".into(),
            ..rec.clone()
        };
        assert!(!suspicion(&other).invalidates(&suspicion(&rec)));
        assert!(BroadcastHandler::<()>::receive_item(&mut h, &[0xFF, 0xFF], None).is_err());
    }
}
