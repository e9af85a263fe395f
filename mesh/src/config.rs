//! Mesh timings: foca's LAN/WAN presets (tuned) plus petrel's own ping schedule.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::lifeguard::LifeguardConfig;
use crate::wire::MAX_PAYLOAD;

/// Most pings a node sends per second; larger clusters ping each peer less often.
pub const MAX_PINGS_PER_SEC: f64 = 200.0;

/// Which preset to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One data centre: fast probes, fast detection.
    Lan,
    /// Continents apart: tolerant probes.
    Wan,
}

/// Everything the mesh core needs to know up front.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Preset the SWIM timings came from.
    pub profile: Profile,
    /// SWIM timings.
    pub swim: foca::Config,
    /// How often each peer gets an RTT ping.
    pub ping_interval: Duration,
    /// A ping unanswered after this counts as lost.
    pub ping_timeout: Duration,
    /// 32-byte cluster keys: the first seals, any opens; none is an open cluster.
    pub keys: Vec<[u8; 32]>,
    /// Lifeguard on top of SWIM (both presets have it); `None` is foca's plain SWIM, whose
    /// suspicions last `swim.suspect_to_down_after`.
    pub lifeguard: Option<LifeguardConfig>,
}

impl MeshConfig {
    /// A preset for a cluster of about `cluster_size` nodes.
    pub fn new(profile: Profile, cluster_size: u32, keys: Vec<[u8; 32]>) -> Self {
        let size = NonZeroU32::new(cluster_size.max(2)).expect("non-zero");
        let mut swim = match profile {
            Profile::Lan => foca::Config::new_lan(size),
            Profile::Wan => foca::Config::new_wan(size),
        };
        swim.max_packet_size = NonZeroUsize::new(MAX_PAYLOAD).expect("non-zero");
        // Fly's lesson: a restarted node must not be mistaken for its old self for long; forget
        // down identities after a while, renewals take over their address at once anyway.
        swim.remove_down_after = Some(Duration::from_secs(3600));
        let (ping_interval, ping_timeout) = match profile {
            // Tuned: LAN pings twice a second so RTT and loss react within seconds.
            Profile::Lan => (Duration::from_millis(500), Duration::from_secs(2)),
            Profile::Wan => (Duration::from_secs(1), Duration::from_secs(3)),
        };
        // Every node pings every peer, so a node's ping rate grows with the cluster. Past
        // MAX_PINGS_PER_SEC peers the interval stretches instead: bytes per node stay bounded
        // and the windowed-minimum RTT needs only a sample every few seconds.
        let floor = Duration::from_secs_f64(f64::from(cluster_size) / MAX_PINGS_PER_SEC);
        let ping_interval = ping_interval.max(floor);
        let ping_timeout = ping_timeout.max(ping_interval * 2);
        // Tuned by `petrel sim` (config/topologies/detection.toml, README "Failure detection"):
        // probes every 2 s on a WAN with 1 s for the direct ack (the longest RTT is about 300 ms),
        // 1 s left for the indirect ones (two hops each way); Lifeguard's shortest suspicion
        // 1.5 × log10(n) probe periods (9 s at 1,000 nodes), 6× that with no confirmation.
        // The LAN keeps foca's 1 s probes with a quicker 400 ms ack, and suspects for 3 s at the
        // shortest (K = 2 confirmations; memberlist's LAN has K = 2 too): a kill -9 in a
        // five-node cluster is down everywhere in under 5 s (tests/mesh.rs).
        let (period, rtt, lifeguard) = match profile {
            Profile::Lan => (
                Duration::from_secs(1),
                Duration::from_millis(400),
                LifeguardConfig {
                    suspicion_mult: 3.0,
                    confirmations: 2,
                    ..LifeguardConfig::default()
                },
            ),
            Profile::Wan => (
                Duration::from_secs(2),
                Duration::from_secs(1),
                LifeguardConfig {
                    suspicion_mult: 1.5,
                    ..LifeguardConfig::default()
                },
            ),
        };
        swim.probe_period = period;
        swim.probe_rtt = rtt;
        // foca's own timer runs only at the first suspecter: a backstop past Lifeguard's longest.
        let (_, longest) = lifeguard.bounds(cluster_size.max(1000) as usize, period);
        swim.suspect_to_down_after = longest * 2;
        Self {
            profile,
            swim,
            ping_interval,
            ping_timeout,
            keys,
            lifeguard: Some(lifeguard),
        }
    }

    /// The same timings with plain SWIM instead of Lifeguard: no local health, no buddy, and a
    /// fixed suspicion of Lifeguard's shortest for a cluster of `cluster_size` (as fast on a
    /// crash). For comparisons (`petrel sim`).
    pub fn plain_swim(mut self, cluster_size: u32) -> Self {
        if let Some(lg) = self.lifeguard.take() {
            let (shortest, _) = lg.bounds(cluster_size as usize, self.swim.probe_period);
            self.swim.suspect_to_down_after = shortest;
        }
        self
    }
}
