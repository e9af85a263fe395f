//! One local instance: its address, in-flight counter with hard-limit admission, and passive health.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::pool::ConnPool;

/// An instance (VM or container) hosted on this node.
pub struct Instance {
    /// Unique in the cluster.
    pub id: Arc<str>,
    /// The app it serves.
    pub app: Arc<str>,
    /// Where it listens.
    pub addr: SocketAddr,
    inflight: AtomicU32,
    /// Monotonic milliseconds (see `Instance::now_ms`) until which it is treated as unreachable.
    bad_until_ms: AtomicU64,
    /// Being removed: takes no new work, open work finishes.
    draining: AtomicBool,
    /// Failing its active health checks.
    failing_checks: AtomicBool,
    /// Monotonic ms (node clock) when this instance was added; health-check grace counts from it.
    pub(crate) added_ms: AtomicU64,
    pub(super) pool: ConnPool,
}

impl Instance {
    /// A new instance with no load.
    pub fn new(id: &str, app: &str, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            app: app.into(),
            addr,
            inflight: AtomicU32::new(0),
            bad_until_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            failing_checks: AtomicBool::new(false),
            added_ms: AtomicU64::new(u64::MAX),
            pool: ConnPool::default(),
        })
    }

    /// Current load: in-flight requests or open connections, per the app's limit type.
    pub fn load(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Takes one unit of load if the instance is below `hard`; `None` means "full, try elsewhere".
    /// Never waits: this is the point where petrel rejects instead of queuing.
    pub fn try_acquire(self: &Arc<Self>, hard: u32) -> Option<Slot> {
        let mut cur = self.inflight.load(Ordering::Relaxed);
        loop {
            if cur >= hard {
                return None;
            }
            match self.inflight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// Treat as unreachable until `until_ms` (after a failed connect), fresher than any gossip.
    pub fn mark_unreachable(&self, until_ms: u64) {
        self.bad_until_ms.fetch_max(until_ms, Ordering::Relaxed);
    }

    /// False while a recent connect failure is in force.
    pub fn reachable(&self, now_ms: u64) -> bool {
        self.bad_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Stops new work going to this instance (it is being removed).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once `start_draining` was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reachable, passing its checks and not being removed: may be given new work.
    pub fn accepts_work(&self, now_ms: u64) -> bool {
        self.reachable(now_ms)
            && !self.is_draining()
            && !self.failing_checks.load(Ordering::Relaxed)
    }

    /// Records the outcome of an active health check; returns true if the state changed.
    pub fn set_check_result(&self, passing: bool) -> bool {
        self.failing_checks.swap(!passing, Ordering::Relaxed) == passing
    }

    /// Clears the passive mark after a successful connect.
    pub fn mark_reachable(&self) {
        self.bad_until_ms.store(0, Ordering::Relaxed);
    }
}

/// One unit of an instance's load; released when dropped.
pub struct Slot(Arc<Instance>);

impl Slot {
    /// The instance this slot is on.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_hard_and_releases_on_drop() {
        let i = Instance::new("a", "app", "127.0.0.1:1".parse().unwrap());
        let slots: Vec<_> = (0..5)
            .map(|_| i.try_acquire(5).expect("below hard"))
            .collect();
        assert_eq!(i.load(), 5);
        assert!(i.try_acquire(5).is_none(), "at hard: no sixth slot");
        drop(slots);
        assert_eq!(i.load(), 0);
        assert!(i.try_acquire(5).is_some());
    }

    #[test]
    fn concurrent_admission_never_exceeds_hard() {
        let i = Instance::new("a", "app", "127.0.0.1:1".parse().unwrap());
        let max = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (i, max) = (i.clone(), max.clone());
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(slot) = i.try_acquire(3) {
                            max.fetch_max(slot.instance().load(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(max.load(Ordering::Relaxed) <= 3);
        assert_eq!(i.load(), 0);
    }

    #[test]
    fn unreachable_mark_expires() {
        let i = Instance::new("a", "app", "127.0.0.1:1".parse().unwrap());
        assert!(i.reachable(0));
        i.mark_unreachable(1_000);
        assert!(!i.reachable(999));
        assert!(i.reachable(1_000));
    }
}
