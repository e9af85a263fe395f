//! The pick: candidates for one request from the mesh snapshot, this node's instances and this
//! edge's fresher marks (penalties, owners' answers, requests on the wire), ordered by the app's
//! strategy. The edge and `petrel sim` both call it (one pick, never a copy).

use std::borrow::Borrow;
use std::hash::Hash;

use rand::Rng;

use crate::balance::{self, Empty, Hints, View};
use crate::config::Strategy;

pub mod candidates;
mod feedback;
mod penalty;

pub use candidates::{pick, Ask, Candidate, Picked, Remote, Sources, Target, Unreachable};
pub use feedback::{Feedback, Reader, FEEDBACK_IDLE_MS, FEEDBACK_TTL_MS, ON_WIRE_SLOTS};
pub use penalty::Penalties;

/// How long an instance (or its owner) that refused a connection or could not be reached is
/// skipped by this edge. Edge and simulator alike.
pub const UNREACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// One instance as an edge knows it before its own marks: live figures for a local instance,
/// the mesh snapshot's for a remote one (`view.load` is the live or gossiped load). `petrel sim`
/// feeds the pick these; the proxy reads the same figures straight from its tables ([`pick`]),
/// and a test checks both pick alike.
#[derive(Debug, Clone)]
pub struct Seen<'a, K> {
    /// What the edge's penalties and feedback are keyed by.
    pub key: K,
    /// Hosted by this node.
    pub local: bool,
    /// The instance as the strategy sees it, its load before this edge's marks.
    pub view: View<'a>,
}

/// The strategy's views of `seen`, each load through this edge's marks ([`local_load`],
/// [`remote_load`]); `views[k]` is `seen[k]`.
pub fn views<'a, K: Hash + Eq + Clone>(
    seen: &[Seen<'a, K>],
    penalties: &Penalties<K>,
    feedback: &Feedback<K>,
    now: u64,
) -> Vec<View<'a>> {
    let fb = feedback.read();
    seen.iter()
        .map(|s| {
            let (v, k) = (&s.view, &s.key);
            let load = if s.local {
                local_load(penalties, k, v.load, v.hard, now)
            } else {
                remote_load(penalties, &fb, k, v.load, v.hard, now)
            };
            View { load, ..v.clone() }
        })
        .collect()
}

/// The first `budget` tries of one request, as indexes into `views`, best first: the app's
/// strategy under the request's hints ([`balance::select_top`]). [`Empty`] says why there is none.
pub fn order<R: Rng + ?Sized>(
    strategy: Strategy,
    views: &[View<'_>],
    hints: &Hints,
    budget: usize,
    rng: &mut R,
) -> Result<Vec<usize>, Empty> {
    balance::select_top(strategy, views, hints, rng, budget)
}

/// Before a request's last try under `closest`: the instance with the most room anywhere.
pub use crate::balance::last_resort;

/// The load a pick routes a local instance on: its live load, or at least `hard` (full) while
/// this edge holds a penalty against it. Edge and simulator alike.
pub fn local_load<K, Q>(penalties: &Penalties<K>, id: &Q, live: u32, hard: u32, now: u64) -> u32
where
    K: Borrow<Q> + Hash + Eq + Clone,
    Q: Hash + Eq + ?Sized,
{
    if penalties.active(id, now) {
        live.max(hard)
    } else {
        live
    }
}

/// The load a pick routes a remote instance on: the owner's last answer while fresh, else the
/// gossiped figure, plus this edge's requests on the wire ([`Feedback::estimate`]); at least
/// `hard` (full) while this edge holds a penalty against it. Edge and simulator alike.
pub fn remote_load<K, Q>(
    penalties: &Penalties<K>,
    feedback: &Reader<'_, K>,
    id: &Q,
    gossiped: u32,
    hard: u32,
    now: u64,
) -> u32
where
    K: Borrow<Q> + Hash + Eq + Clone,
    Q: Hash + Eq + ?Sized,
{
    let load = feedback.estimate(id, gossiped, now);
    if penalties.active(id, now) {
        load.max(hard)
    } else {
        load
    }
}
