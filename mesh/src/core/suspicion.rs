//! The mesh core's side of Lifeguard (see [`crate::lifeguard`]): raising, hearing, refuting and
//! timing suspicions, and stretching this node's probe waits by its local health.

use std::time::Duration;

use foca::{Member, State, Timer};

use super::{Buffer, Event, Mesh};
use crate::identity::NodeId;
use crate::lifeguard::{Heard, SuspicionRecord};
use crate::wire::{self, Kind};

/// How long a heard suspicion record is remembered (so it is passed on once).
const REMEMBER_RECORDS: Duration = Duration::from_secs(600);

impl Mesh {
    /// foca's probe of `id` failed, direct and indirect: this node suspects it.
    pub(super) fn suspect(&mut self, id: NodeId, now: Duration) {
        self.counters.suspicions_raised += 1;
        self.events.push_back(Event::Suspected(id.clone()));
        if self.cfg.lifeguard.is_none() {
            return;
        }
        // Only a suspicion foca took: when the member refuted while the probe ran, foca kept it
        // alive at its new incarnation, and that incarnation is not the one that failed.
        let Some(incarnation) = self.suspect_incarnation(&id) else {
            return;
        };
        let rec = SuspicionRecord {
            target: id.name.clone(),
            generation: id.generation,
            incarnation,
            from: self.id.name.clone(),
        };
        let encoded = rec.encode();
        // Through foca's handler like any heard record: it starts the timer here and is passed on.
        self.inbox.lock().expect("suspicion inbox").now = now;
        let _ = self.foca.add_broadcast(&encoded);
        self.take_suspicions(now);
        // The buddy system: tell the suspect itself, so it refutes without waiting for gossip.
        let region = (!id.region.is_empty()).then(|| id.region.clone());
        self.send(id.addr, region, Kind::Suspect, &encoded);
    }

    /// A suspicion record sent straight to this node.
    pub(super) fn on_suspect_datagram(&mut self, payload: &[u8], now: Duration) {
        match SuspicionRecord::decode(payload) {
            Some(rec) => self.hear(rec, now),
            None => self.drop_packet(wire::Drop::Payload),
        }
    }

    /// Hands every record foca's handler heard to [`Mesh::hear`].
    pub(super) fn take_suspicions(&mut self, now: Duration) {
        let new = std::mem::take(&mut self.inbox.lock().expect("suspicion inbox").new);
        for rec in new {
            self.hear(rec, now);
        }
    }

    fn hear(&mut self, rec: SuspicionRecord, now: Duration) {
        let Some(cfg) = self.cfg.lifeguard else {
            return;
        };
        if rec.target == self.id.name {
            if rec.generation == self.id.generation {
                self.refute(rec.incarnation, now);
            }
            return;
        }
        let Some(target) = self.find_member(&rec.target, rec.generation) else {
            return;
        };
        if target.incarnation() > rec.incarnation || target.state() == State::Down {
            return; // refuted already, or down
        }
        let target = target.clone();
        let members = self.foca.num_members() + 1;
        let bounds = cfg.bounds(members, self.cfg.swim.probe_period);
        let k = cfg.k_for(members);
        if self.suspicions.hear(&rec, now, bounds, k) == Heard::Started
            && (target.state() == State::Alive || target.incarnation() < rec.incarnation)
        {
            // The record outran foca's own Suspect update: take it as one, so that foca holds
            // the incarnation this timer will check.
            let suspect = Member::new(target.id().clone(), rec.incarnation, State::Suspect);
            self.apply(suspect, now);
        }
    }

    /// Someone suspects this node at `incarnation`: foca raises its incarnation and gossips that
    /// it is alive (a no-op when it already has). Lifeguard counts each incarnation suspected
    /// once against local health (the same suspicion arrives by gossip and straight from its
    /// suspecters).
    fn refute(&mut self, incarnation: u16, now: Duration) {
        if self.refuted_up_to.is_some_and(|i| incarnation <= i) {
            return;
        }
        self.refuted_up_to = Some(incarnation);
        self.counters.refuted += 1;
        if let Some(cfg) = self.cfg.lifeguard {
            self.health.apply(1, cfg.max_health_multiplier);
            self.suspicions.set_stretch(self.health.multiplier());
        }
        let me = Member::new(self.id.clone(), incarnation, State::Suspect);
        self.apply(me, now);
    }

    /// Declares down every member whose suspicion ran out and that is still suspect at the
    /// incarnation suspected.
    pub(super) fn expire_suspicions(&mut self, now: Duration) {
        if now >= self.next_inbox_prune {
            self.next_inbox_prune = now + Duration::from_secs(60);
            let before = now.saturating_sub(REMEMBER_RECORDS);
            self.inbox
                .lock()
                .expect("suspicion inbox")
                .forget_before(before);
        }
        if self.suspicions.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        for (name, generation, incarnation) in self.suspicions.expired(now) {
            let Some(m) = self.find_member(&name, generation) else {
                continue;
            };
            if m.state() == State::Suspect && m.incarnation() == incarnation {
                let down = Member::new(m.id().clone(), incarnation, State::Down);
                self.counters.declared_down += 1;
                self.apply(down, now);
            }
        }
    }

    /// Lifeguard's local health after a probe round: up when it failed, down when it did not.
    pub(super) fn probe_verdict(&mut self, failed: bool) {
        if let Some(cfg) = self.cfg.lifeguard {
            self.health
                .apply(if failed { 1 } else { -1 }, cfg.max_health_multiplier);
            self.suspicions.set_stretch(self.health.multiplier());
        }
    }

    /// foca's probe timeout and probe period, stretched by local health (memberlist
    /// `awareness.ScaleTimeout`); other timers as asked.
    pub(super) fn health_scaled(&self, ev: &Timer<NodeId>, after: Duration) -> Duration {
        match ev {
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. }
                if self.cfg.lifeguard.is_some() =>
            {
                self.health.scale(after)
            }
            _ => after,
        }
    }

    /// The local health multiplier (1 is healthy).
    pub fn health_multiplier(&self) -> u32 {
        self.health.multiplier()
    }

    fn apply(&mut self, m: Member<NodeId>, now: Duration) {
        let mut buf = Buffer::default();
        let _ = self.foca.apply_many(std::iter::once(m), true, &mut buf);
        self.absorb(buf, now);
    }

    fn suspect_incarnation(&self, id: &NodeId) -> Option<u16> {
        self.foca
            .iter_membership_state()
            .find(|m| m.id() == id && m.state() == State::Suspect)
            .map(|m| m.incarnation())
    }

    fn find_member(&self, name: &str, generation: u64) -> Option<&Member<NodeId>> {
        self.foca
            .iter_membership_state()
            .find(|m| *m.id().name == *name && m.id().generation == generation)
    }
}
