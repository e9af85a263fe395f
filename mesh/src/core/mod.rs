//! The mesh core: foca membership, petrel's RTT prober and load gossip behind one sans-IO API.
//!
//! The caller feeds datagrams (`handle_datagram`) and the clock (`handle_timeout`), then drains
//! `poll_transmit` and `poll_event`. Time is a `Duration` since an arbitrary epoch, so the same
//! code runs on a real clock in the node and on a virtual clock in the simulator.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{Foca, Notification, OwnedNotification, PostcardCodec, Runtime, State, Timer};

mod suspicion;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::config::MeshConfig;
use crate::gossip::{Handler, SuspicionInbox};
use crate::identity::NodeId;
use crate::lifeguard::{Health, Suspicions};
use crate::load::{InstanceLoad, LoadBook, LoadRecord, LoadRecordRef};
use crate::prober::{PeerStats, RttSummary};
use crate::replay::ReplayGuard;
use crate::view::{ClusterView, MemberState, MemberView, RemoteInstance};
use crate::wire::{self, Kind, Sealer};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Destination's region when known (for simulated latency).
    pub region: Option<Arc<str>>,
    /// The sealed datagram.
    pub data: Vec<u8>,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member became active.
    MemberUp(NodeId),
    /// A member was declared down or left.
    MemberDown(NodeId),
    /// A member came back with a newer identity (restart).
    Renamed(NodeId, NodeId),
    /// This node was declared down and rejoined with a new identity.
    Rejoined(NodeId),
    /// This node is known by the cluster.
    Active,
    /// Every known member is gone.
    Idle,
    /// This node's probe of a member failed, direct and indirect: it suspects the member (SWIM's
    /// suspicion; the member is declared down unless it refutes in time).
    Suspected(NodeId),
}

/// Traffic and drop counters.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Datagrams received that passed every check.
    pub packets_in: u64,
    /// Datagrams handed to the caller to send.
    pub packets_out: u64,
    /// Bytes of the above.
    pub bytes_in: u64,
    /// Bytes of the above.
    pub bytes_out: u64,
    /// Dropped datagrams by reason.
    pub dropped: HashMap<wire::Drop, u64>,
    /// Suspicions this node raised (its probe of a member failed).
    pub suspicions_raised: u64,
    /// Suspicions of this node that it answered, one per incarnation suspected (foca raises its
    /// incarnation when one is about its current incarnation).
    pub refuted: u64,
    /// Members this node declared down when a Lifeguard suspicion timer ran out.
    pub declared_down: u64,
}

impl Counters {
    /// All drops together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

struct Peer {
    id: NodeId,
    stats: PeerStats,
    next_ping: Duration,
    /// Every local record up to this version is known to have reached the peer (a pong came back
    /// for a ping that carried them).
    acked: u64,
    /// Pings in flight: (seq, highest record version they carried).
    carried: VecDeque<(u32, u64)>,
}

type Swim = Foca<NodeId, PostcardCodec, SmallRng, Handler>;

/// One node's mesh state machine.
pub struct Mesh {
    id: NodeId,
    cfg: MeshConfig,
    foca: Swim,
    book: Arc<Mutex<LoadBook>>,
    sealer: Sealer,
    replay: ReplayGuard,
    counter: u64,
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    timer_events: HashMap<u64, Timer<NodeId>>,
    timer_seq: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    // Ordered maps wherever the core iterates: the same seed gives the same datagrams in the
    // same order, which the simulator's byte-identical reports rely on.
    peers: BTreeMap<SocketAddr, Peer>,
    ping_seq: u32,
    next_probe_tick: Duration,
    local: BTreeMap<Arc<str>, InstanceLoad>,
    /// This node's newest record per instance, with its encoding (pings carry it as is).
    local_records: BTreeMap<Arc<str>, (LoadRecord, Vec<u8>)>,
    local_version: u64,
    counters: Counters,
    changes: u64,
    rng_state: u64,
    live: Mutex<Option<Arc<LiveMap>>>,
    /// Suspicion records foca's broadcast handler heard, for the Lifeguard timers.
    inbox: Arc<Mutex<SuspicionInbox>>,
    /// Lifeguard's suspicion timers (unused without Lifeguard).
    suspicions: Suspicions,
    /// Lifeguard's local health.
    health: Health,
    /// The highest incarnation of this node a suspicion record was answered for.
    refuted_up_to: Option<u16>,
    next_inbox_prune: Duration,
}

/// foca's gateway: buffers what foca asks for until the core processes it.
#[derive(Default)]
struct Buffer {
    sends: Vec<(NodeId, Vec<u8>)>,
    timers: Vec<(Timer<NodeId>, Duration)>,
    notes: Vec<OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for Buffer {
    fn notify(&mut self, n: Notification<'_, NodeId>) {
        // Every datagram in and out is announced too; only the membership news is kept.
        if !matches!(n, Notification::DataReceived(_) | Notification::DataSent(_)) {
            self.notes.push(n.to_owned());
        }
    }
    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push((event, after));
    }
}

impl Mesh {
    /// A mesh core for `id`, seeded for its random choices (probe order, gossip targets).
    pub fn new(id: NodeId, cfg: MeshConfig, seed: u64, now: Duration) -> Self {
        let book = Arc::new(Mutex::new(LoadBook::default()));
        let mut inbox = SuspicionInbox::default();
        inbox.pass_on = cfg.lifeguard.map_or(0, |l| l.confirmations + 1);
        let inbox = Arc::new(Mutex::new(inbox));
        let foca = Foca::with_custom_broadcast(
            id.clone(),
            cfg.swim.clone(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            Handler {
                book: book.clone(),
                suspicions: inbox.clone(),
            },
        );
        Self {
            sealer: Sealer::new(&cfg.keys, Sealer::sender_id(&id.name)),
            id,
            foca,
            book,
            replay: ReplayGuard::new(4096),
            counter: 0,
            timers: BinaryHeap::new(),
            timer_events: HashMap::new(),
            timer_seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            peers: BTreeMap::new(),
            ping_seq: 0,
            next_probe_tick: now,
            local: BTreeMap::new(),
            local_records: BTreeMap::new(),
            local_version: 0,
            counters: Counters::default(),
            changes: 0,
            rng_state: seed | 1,
            live: Mutex::new(None),
            inbox,
            suspicions: Suspicions::default(),
            health: Health::default(),
            refuted_up_to: None,
            next_inbox_prune: now,
            cfg,
        }
    }

    /// Replaces the cluster keys (a reload rotating them): the first seals from now on, any opens.
    pub fn set_keys(&mut self, keys: &[[u8; 32]]) {
        self.sealer.set_keys(keys);
    }

    /// This node's current identity (the generation changes after a rejoin).
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Asks each seed to let us in. Seeds' real identities are learnt from their answers.
    pub fn join(&mut self, seeds: &[SocketAddr], now: Duration) {
        let me = self.id.addr;
        for s in seeds.iter().filter(|s| **s != me) {
            let mut buf = Buffer::default();
            let _ = self.foca.announce(NodeId::seed(*s), &mut buf);
            self.absorb(buf, now);
        }
    }

    /// Tells a few members we are leaving, so peers stop routing here at once.
    pub fn leave(&mut self, now: Duration) {
        let mut buf = Buffer::default();
        let _ = self.foca.leave_cluster(&mut buf);
        self.absorb(buf, now);
    }

    /// Handles one datagram from `from`. Bad datagrams are counted and dropped; state is untouched.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Duration) {
        let frame = match self.sealer.open(data) {
            Ok(f) => f,
            Err(d) => return self.drop_packet(d),
        };
        if !self
            .replay
            .accept(frame.sender, frame.generation, frame.counter)
        {
            return self.drop_packet(wire::Drop::Replay);
        }
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        match frame.kind {
            Kind::Swim => {
                self.book.lock().expect("load book").now = now;
                self.inbox.lock().expect("suspicion inbox").now = now;
                let mut buf = Buffer::default();
                let r = self.foca.handle_data(&frame.payload, &mut buf);
                self.absorb(buf, now);
                self.take_suspicions(now);
                if r.is_err() {
                    self.drop_packet(wire::Drop::Payload);
                }
            }
            Kind::Suspect => self.on_suspect_datagram(&frame.payload, now),
            Kind::Ping => self.on_ping(from, &frame.payload, now),
            Kind::Pong => match <[u8; 4]>::try_from(&frame.payload[..]) {
                Ok(seq) => self.on_pong(from, u32::from_le_bytes(seq), now),
                Err(_) => self.drop_packet(wire::Drop::Payload),
            },
        }
    }

    /// A ping: answer it, and take the load records it carries if the sender is a known member.
    fn on_ping(&mut self, from: SocketAddr, payload: &[u8], now: Duration) {
        if payload.len() < 4 {
            return self.drop_packet(wire::Drop::Payload);
        }
        let (seq, rest) = payload.split_at(4);
        // The sender's region rides in the ping, so the pong is delayed right under [simulate]
        // even before the sender is a known member (else that first RTT sample is half).
        let Some((&n, rest)) = rest.split_first() else {
            return self.drop_packet(wire::Drop::Payload);
        };
        let n = usize::from(n);
        if n > 8 || rest.len() < n {
            return self.drop_packet(wire::Drop::Payload);
        }
        let (region, rest) = rest.split_at(n);
        let Ok(region) = std::str::from_utf8(region) else {
            return self.drop_packet(wire::Drop::Payload);
        };
        let records: Vec<LoadRecordRef<'_>> = if rest.is_empty() {
            Vec::new()
        } else {
            match postcard::from_bytes(rest) {
                Ok(r) => r,
                Err(_) => return self.drop_packet(wire::Drop::Payload),
            }
        };
        let sender = self.peers.get(&from).map(|p| p.id.clone());
        let reply_region = match &sender {
            Some(s) => Some(s.region.clone()),
            None => (!region.is_empty()).then(|| Arc::from(region)),
        };
        self.send(from, reply_region, Kind::Pong, seq);
        let Some(sender) = sender else {
            return;
        };
        let mut book = self.book.lock().expect("load book");
        book.now = now;
        for r in records {
            // A member speaks only for itself and its current generation.
            if *r.node == *sender.name && r.generation == sender.generation {
                book.offer_ref(&r);
            }
        }
    }

    fn on_pong(&mut self, from: SocketAddr, seq: u32, now: Duration) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let routing = p.stats.summary().routing_ms;
        if p.stats.answered(seq, now).is_some() {
            self.changes += 1;
        }
        if p.stats.summary().routing_ms != routing {
            *self.live.get_mut().expect("live cache") = None;
        }
        if let Some(pos) = p.carried.iter().position(|(s, _)| *s == seq) {
            let (_, v) = p.carried[pos];
            p.acked = p.acked.max(v);
            p.carried.drain(..=pos);
        }
    }

    fn drop_packet(&mut self, d: wire::Drop) {
        *self.counters.dropped.entry(d).or_default() += 1;
    }

    /// When `handle_timeout` next needs to run.
    pub fn poll_timeout(&self) -> Duration {
        let foca = self.timers.peek().map(|Reverse((t, _))| *t);
        let mut next = self.next_probe_tick;
        for t in foca.into_iter().chain(self.suspicions.next_deadline()) {
            next = next.min(t);
        }
        next
    }

    /// Runs every timer due at `now`: foca's and the prober's.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(ev) = self.timer_events.remove(&seq) {
                let probe_round = matches!(ev, Timer::ProbeRandomMember(_));
                let mut buf = Buffer::default();
                let _ = self.foca.handle_timer(ev, &mut buf);
                if probe_round {
                    // The previous probe's verdict is taken at the start of each round.
                    let failed = buf
                        .notes
                        .iter()
                        .any(|n| matches!(n, OwnedNotification::ProbeFailed(..)));
                    self.probe_verdict(failed);
                }
                self.absorb(buf, now);
            }
        }
        self.expire_suspicions(now);
        if now >= self.next_probe_tick {
            self.probe(now);
            self.next_probe_tick =
                now + (self.cfg.ping_interval / 5).max(Duration::from_millis(20));
        }
    }

    fn probe(&mut self, now: Duration) {
        let interval = self.cfg.ping_interval;
        let timeout = self.cfg.ping_timeout;
        let mut due = Vec::new();
        for (addr, p) in self.peers.iter_mut() {
            let before = p.stats.summary().loss;
            p.stats.expire(now, timeout);
            if p.stats.summary().loss != before {
                self.changes += 1;
            }
            if now >= p.next_ping {
                due.push((*addr, p.id.region.clone()));
                p.next_ping = now + interval;
            }
        }
        let mut by_version: Vec<&(LoadRecord, Vec<u8>)> = self.local_records.values().collect();
        by_version.sort_by_key(|(r, _)| r.version);
        let mut pings = Vec::with_capacity(due.len());
        for (addr, region) in due {
            self.ping_seq = self.ping_seq.wrapping_add(1);
            let seq = self.ping_seq;
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            p.stats.sent(seq, now);
            // Records the peer may not have, oldest change first, as many as fit.
            let mut carry: Vec<&[u8]> = Vec::new();
            let mut last_version = 0;
            let mut size = 8 + 1 + self.id.region.len();
            for (r, encoded) in by_version.iter().filter(|(r, _)| r.version > p.acked) {
                let len = encoded.len() + 1;
                if size + len > wire::MAX_PAYLOAD - 4 {
                    break;
                }
                size += len;
                carry.push(encoded);
                last_version = r.version;
            }
            let mut payload = seq.to_le_bytes().to_vec();
            let mine = &self.id.region.as_bytes()[..self.id.region.len().min(8)];
            payload.push(mine.len() as u8);
            payload.extend_from_slice(mine);
            if !carry.is_empty() {
                p.carried.push_back((seq, last_version));
                while p.carried.len() > 64 {
                    p.carried.pop_front();
                }
                // postcard's encoding of a sequence: varint length, then each element.
                wire::put_varint(&mut payload, carry.len());
                for encoded in carry {
                    payload.extend_from_slice(encoded);
                }
            }
            pings.push((addr, region, payload));
        }
        for (addr, region, payload) in pings {
            self.send(addr, Some(region), Kind::Ping, &payload);
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next event worth logging.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Members currently believed alive (or suspect), not counting this node.
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Traffic and drop counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bumped whenever the view would look different (membership, RTT, load).
    pub fn changes(&self) -> u64 {
        self.changes + self.book.lock().expect("load book").changes
    }

    /// Reports this node's instances. Only changed ones are broadcast; missing ones are
    /// broadcast as removed.
    pub fn set_local_instances(&mut self, instances: Vec<InstanceLoad>, now: Duration) {
        let mut changed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for inst in instances {
            seen.insert(inst.id.clone());
            if self.local.get(&inst.id) != Some(&inst) {
                self.local.insert(inst.id.clone(), inst.clone());
                changed.push((inst, false));
            }
        }
        let gone: Vec<_> = self
            .local
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for id in gone {
            if let Some(inst) = self.local.remove(&id) {
                changed.push((inst, true));
            }
        }
        for (inst, removed) in changed {
            self.broadcast_record(inst, removed, now);
        }
    }

    fn broadcast_record(&mut self, inst: InstanceLoad, removed: bool, now: Duration) {
        self.local_version += 1;
        let rec = LoadRecord {
            node: self.id.name.clone(),
            generation: self.id.generation,
            version: self.local_version,
            removed,
            inst,
        };
        self.book.lock().expect("load book").now = now;
        let encoded = rec.encode();
        let _ = self.foca.add_broadcast(&encoded);
        self.local_records
            .insert(rec.inst.id.clone(), (rec, encoded));
    }

    fn rebroadcast_all(&mut self, now: Duration) {
        let all: Vec<_> = self.local.values().cloned().collect();
        for inst in all {
            self.broadcast_record(inst, false, now);
        }
    }

    fn send(&mut self, to: SocketAddr, region: Option<Arc<str>>, kind: Kind, payload: &[u8]) {
        self.counter += 1;
        let data = self
            .sealer
            .seal(self.id.generation, self.counter, kind, payload);
        self.counters.packets_out += 1;
        self.counters.bytes_out += data.len() as u64;
        self.out.push_back(Transmit { to, region, data });
    }

    /// Processes what foca asked for: sends, timers, notifications.
    fn absorb(&mut self, buf: Buffer, now: Duration) {
        for (to, data) in buf.sends {
            let region = (!to.region.is_empty()).then(|| to.region.clone());
            self.send(to.addr, region, Kind::Swim, &data);
        }
        for (ev, after) in buf.timers {
            let after = self.health_scaled(&ev, after);
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq)));
            self.timer_events.insert(self.timer_seq, ev);
        }
        for n in buf.notes {
            self.notice(n, now);
        }
    }

    fn spread(&mut self) -> Duration {
        // xorshift: a ping offset so peers are not all pinged in the same instant.
        self.rng_state ^= self.rng_state << 13;
        self.rng_state ^= self.rng_state >> 7;
        self.rng_state ^= self.rng_state << 17;
        let ms = self.cfg.ping_interval.as_millis().max(1) as u64;
        Duration::from_millis(self.rng_state % ms)
    }

    fn notice(&mut self, n: OwnedNotification<NodeId>, now: Duration) {
        self.changes += 1;
        self.forget_live();
        match n {
            OwnedNotification::MemberUp(id) => {
                let offset = self.spread();
                self.peers
                    .entry(id.addr)
                    .and_modify(|p| p.id = id.clone())
                    .or_insert_with(|| Peer {
                        id: id.clone(),
                        stats: PeerStats::default(),
                        next_ping: now + offset,
                        acked: 0,
                        carried: VecDeque::new(),
                    });
                self.book
                    .lock()
                    .expect("load book")
                    .forget_node_below(&id.name, id.generation);
                self.events.push_back(Event::MemberUp(id));
            }
            OwnedNotification::MemberDown(id) => {
                self.book
                    .lock()
                    .expect("load book")
                    .forget_node(&id.name, id.generation);
                self.events.push_back(Event::MemberDown(id));
            }
            OwnedNotification::Rename(old, new) => {
                if let Some(p) = self.peers.get_mut(&new.addr) {
                    // A restarted peer knows nothing of our records.
                    p.id = new.clone();
                    p.acked = 0;
                    p.carried.clear();
                }
                if old.name == new.name {
                    self.book
                        .lock()
                        .expect("load book")
                        .forget_node_below(&new.name, new.generation);
                }
                self.events.push_back(Event::Renamed(old, new));
            }
            OwnedNotification::Rejoin(id) => {
                // New generation: every record is re-issued under it, and every peer needs them.
                self.id = id.clone();
                self.refuted_up_to = None;
                for p in self.peers.values_mut() {
                    p.acked = 0;
                    p.carried.clear();
                }
                self.rebroadcast_all(now);
                self.events.push_back(Event::Rejoined(id));
            }
            OwnedNotification::ProbeFailed(_, id) => self.suspect(id, now),
            OwnedNotification::Active => self.events.push_back(Event::Active),
            OwnedNotification::Idle => self.events.push_back(Event::Idle),
            _ => {}
        }
    }

    /// Builds the snapshot the request path routes on.
    pub fn view(&self, now: Duration) -> ClusterView {
        let live = self.live();
        ClusterView {
            members: self.members(),
            instances: self.instances(&live, None),
            built_at: now,
        }
    }

    /// The instances of one app only, without member details: what a simulated edge needs per
    /// request at thousands of instances.
    pub fn app_instances(&self, app: &str) -> Vec<RemoteInstance> {
        self.instances(&self.live(), Some(app))
    }

    fn members(&self) -> Vec<MemberView> {
        let mut members: Vec<MemberView> = self
            .foca
            .iter_membership_state()
            .filter(|m| !m.id().name.is_empty() && *m.id() != self.id)
            .map(|m| MemberView {
                id: m.id().clone(),
                state: match m.state() {
                    State::Alive => MemberState::Alive,
                    State::Suspect => MemberState::Suspect,
                    State::Down => MemberState::Down,
                },
                rtt: self.rtt_of(m.id()),
            })
            .collect();
        members.sort_by(|a, b| a.id.name.cmp(&b.id.name));
        members
    }

    fn rtt_of(&self, id: &NodeId) -> RttSummary {
        self.peers
            .get(&id.addr)
            .map(|p| p.stats.summary())
            .unwrap_or_default()
    }

    /// Members that are not down, by name. Cached: it changes only with membership (every
    /// change arrives as a foca notification) or with a peer's routing RTT, and both drop the
    /// cache; a 1,000-node mesh would otherwise rebuild it for every snapshot.
    fn live(&self) -> Arc<LiveMap> {
        let mut cache = self.live.lock().expect("live cache");
        if let Some(live) = cache.as_ref() {
            return live.clone();
        }
        let mut live = LiveMap::default();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if id.name.is_empty() || *id == self.id || m.state() == State::Down {
                continue;
            }
            let entry = (
                id.generation,
                id.region.clone(),
                id.backhaul,
                self.rtt_of(id).routing_ms,
            );
            live.insert(id.name.clone(), entry);
        }
        let live = Arc::new(live);
        *cache = Some(live.clone());
        live
    }

    fn forget_live(&mut self) {
        *self.live.get_mut().expect("live cache") = None;
    }

    fn instances(&self, live: &LiveMap, app: Option<&str>) -> Vec<RemoteInstance> {
        let book = self.book.lock().expect("load book");
        let to_view = |(r, at): (&LoadRecord, Duration)| {
            let (generation, region, backhaul, rtt) = live.get(&r.node)?;
            (*generation == r.generation).then(|| RemoteInstance {
                node: r.node.clone(),
                region: region.clone(),
                backhaul: *backhaul,
                rtt_ms: *rtt,
                load: r.inst.clone(),
                received_at: at,
            })
        };
        match app {
            // Already in id order.
            Some(app) => book.iter_app(app).filter_map(to_view).collect(),
            None => {
                let mut all: Vec<RemoteInstance> = book.iter().filter_map(to_view).collect();
                all.sort_by(|a, b| a.load.id.cmp(&b.load.id));
                all
            }
        }
    }
}

/// A member that is not down: (generation, region, backhaul, routing RTT).
type Live = (u64, Arc<str>, SocketAddr, Option<f64>);
type LiveMap = foldhash::HashMap<Arc<str>, Live>;
