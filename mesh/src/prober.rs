//! Per-peer RTT and loss from petrel's own pings: windowed-minimum RTT, smoothed RTT, jitter, loss.
//!
//! Pure math on times passed in; the smoothing keeps routing from flapping on single samples.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples kept for the windowed minimum.
const MIN_WINDOW: Duration = Duration::from_secs(30);
/// Probe outcomes kept for the loss fraction.
const LOSS_WINDOW: usize = 32;
/// Smoothing gains (RFC 6298).
const ALPHA: f64 = 1.0 / 8.0;
const BETA: f64 = 1.0 / 4.0;
/// The routing RTT moves only when the windowed minimum leaves a band of ±10% (at least ±2 ms)
/// around it, so routing does not flap between two nearly equal peers.
const HYSTERESIS_FRACTION: f64 = 0.10;
const HYSTERESIS_MIN_MS: f64 = 2.0;

/// What one node knows about its path to one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    samples: VecDeque<(Duration, f64)>,
    srtt: Option<f64>,
    jitter: f64,
    outcomes: VecDeque<bool>,
    /// Failures in `outcomes`, and the minimum of `samples`: kept so `summary` is O(1) (it runs
    /// per peer on every probe tick and every snapshot).
    lost: usize,
    rtt_min: Option<f64>,
    pending: VecDeque<(u32, Duration)>,
    last_seen: Option<Duration>,
    routing: Option<f64>,
}

/// A read-only summary for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RttSummary {
    /// Smoothed RTT in ms.
    pub rtt_ms: Option<f64>,
    /// Minimum RTT over the recent window, in ms.
    pub rtt_min_ms: Option<f64>,
    /// Smoothed mean deviation, in ms.
    pub jitter_ms: Option<f64>,
    /// Fraction of recent probes lost, 0..1.
    pub loss: f64,
    /// When a pong last arrived.
    pub last_seen: Option<Duration>,
    /// The RTT routing uses: the windowed minimum behind hysteresis, in ms.
    pub routing_ms: Option<f64>,
}

impl PeerStats {
    /// A probe with sequence `seq` left at `now`.
    pub fn sent(&mut self, seq: u32, now: Duration) {
        self.pending.push_back((seq, now));
        while self.pending.len() > LOSS_WINDOW {
            self.pending.pop_front();
            self.record(false);
        }
    }

    /// The answer to probe `seq` arrived at `now`; returns the RTT sample in ms if it was pending.
    pub fn answered(&mut self, seq: u32, now: Duration) -> Option<f64> {
        let pos = self.pending.iter().position(|(s, _)| *s == seq)?;
        let (_, sent) = self.pending.remove(pos)?;
        let rtt = now.checked_sub(sent)?.as_secs_f64() * 1000.0;
        self.record(true);
        self.last_seen = Some(now);
        self.samples.push_back((now, rtt));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > MIN_WINDOW)
        {
            self.samples.pop_front();
        }
        let min = self
            .samples
            .iter()
            .map(|(_, r)| *r)
            .fold(f64::MAX, f64::min);
        self.rtt_min = Some(min);
        self.routing = match self.routing {
            Some(cur)
                if (min - cur).abs() <= (cur * HYSTERESIS_FRACTION).max(HYSTERESIS_MIN_MS) =>
            {
                Some(cur)
            }
            _ => Some(min),
        };
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.jitter = rtt / 2.0;
            }
            Some(s) => {
                self.jitter = (1.0 - BETA) * self.jitter + BETA * (s - rtt).abs();
                self.srtt = Some((1.0 - ALPHA) * s + ALPHA * rtt);
            }
        }
        Some(rtt)
    }

    /// Probes sent before `now - timeout` with no answer count as lost.
    pub fn expire(&mut self, now: Duration, timeout: Duration) {
        while let Some(&(_, sent)) = self.pending.front() {
            if now.saturating_sub(sent) < timeout {
                break;
            }
            self.pending.pop_front();
            self.record(false);
        }
    }

    fn record(&mut self, ok: bool) {
        self.outcomes.push_back(ok);
        self.lost += usize::from(!ok);
        while self.outcomes.len() > LOSS_WINDOW {
            if self.outcomes.pop_front() == Some(false) {
                self.lost -= 1;
            }
        }
    }

    /// The current figures.
    pub fn summary(&self) -> RttSummary {
        let lost = self.lost;
        RttSummary {
            rtt_ms: self.srtt,
            rtt_min_ms: self.rtt_min,
            jitter_ms: self.srtt.map(|_| self.jitter),
            loss: if self.outcomes.is_empty() {
                0.0
            } else {
                lost as f64 / self.outcomes.len() as f64
            },
            last_seen: self.last_seen,
            routing_ms: self.routing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn smoothed_rtt_resists_one_outlier_and_min_tracks_the_floor() {
        let mut p = PeerStats::default();
        let mut t = 0;
        for seq in 0..20 {
            p.sent(seq, ms(t));
            p.answered(seq, ms(t + 40));
            t += 1000;
        }
        p.sent(99, ms(t));
        p.answered(99, ms(t + 400)); // one 400 ms spike
        let s = p.summary();
        assert!(
            (s.rtt_ms.unwrap() - 85.0).abs() < 1.0,
            "srtt moves 1/8 of the way: {s:?}"
        );
        assert_eq!(s.rtt_min_ms, Some(40.0));
        assert_eq!(s.loss, 0.0);
    }

    #[test]
    fn windowed_minimum_forgets_old_samples() {
        let mut p = PeerStats::default();
        p.sent(0, ms(0));
        p.answered(0, ms(10)); // 10 ms at t=0
        for seq in 1..=40 {
            let t = u64::from(seq) * 1000;
            p.sent(seq, ms(t));
            p.answered(seq, ms(t + 50));
        }
        assert_eq!(
            p.summary().rtt_min_ms,
            Some(50.0),
            "the 10 ms sample is older than 30 s"
        );
    }

    #[test]
    fn loss_is_a_fraction_over_the_recent_window() {
        let mut p = PeerStats::default();
        for seq in 0..32u32 {
            let t = u64::from(seq) * 1000;
            p.sent(seq, ms(t));
            if seq % 4 != 0 {
                p.answered(seq, ms(t + 20));
            }
            p.expire(ms(t + 999), ms(900));
        }
        assert!((p.summary().loss - 0.25).abs() < 1e-9, "{:?}", p.summary());
        for seq in 100..132u32 {
            let t = u64::from(seq) * 1000;
            p.sent(seq, ms(t));
            p.answered(seq, ms(t + 20));
        }
        assert_eq!(p.summary().loss, 0.0, "old losses leave the window");
    }

    #[test]
    fn routing_rtt_holds_within_the_band_and_follows_real_changes() {
        let mut p = PeerStats::default();
        let mut t = 0;
        let mut feed = |p: &mut PeerStats, seq: u32, rtt: u64| {
            p.sent(seq, ms(t));
            p.answered(seq, ms(t + rtt));
            t += 1000;
        };
        feed(&mut p, 0, 40);
        assert_eq!(p.summary().routing_ms, Some(40.0));
        // A slightly better sample (-3 ms, within ±4 ms of 40): routing stays put.
        feed(&mut p, 1, 37);
        assert_eq!(p.summary().routing_ms, Some(40.0));
        assert_eq!(p.summary().rtt_min_ms, Some(37.0));
        // A real improvement (20 ms) moves it at once.
        feed(&mut p, 2, 20);
        assert_eq!(p.summary().routing_ms, Some(20.0));
        // A path that got worse moves it once the old minimum leaves the 30 s window.
        for seq in 3..40 {
            feed(&mut p, seq, 80);
        }
        assert_eq!(p.summary().routing_ms, Some(80.0));
    }

    #[test]
    fn late_or_unknown_answers_are_ignored() {
        let mut p = PeerStats::default();
        p.sent(1, ms(0));
        p.expire(ms(5000), ms(1000));
        assert_eq!(p.answered(1, ms(5001)), None, "already counted lost");
        assert_eq!(p.answered(77, ms(1)), None);
        assert_eq!(p.summary().loss, 1.0);
    }
}
