//! Mesh timings: foca's LAN/WAN presets (tuned) plus petrel's own ping schedule.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

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
        if profile == Profile::Lan {
            // Tuned: a failed probe is suspected a little sooner, so down is declared well
            // within 10 s for small clusters.
            swim.probe_rtt = Duration::from_millis(400);
        }
        Self {
            profile,
            swim,
            ping_interval,
            ping_timeout,
            keys,
        }
    }
}
