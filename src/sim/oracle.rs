//! The oracle's memory: per app and region, how many instances were below their soft and hard
//! limits at each moment, so a finished request can be judged against the capacity each nearer
//! region had when the request could have reached it.

use super::queue::Nanos;

/// Free instances of one (app, region): below soft, below hard.
pub type Free = (u32, u32);

/// Per (app, region), the free-instance counts over time.
#[derive(Debug, Default)]
pub struct Timeline {
    /// [app][region] → (time, counts from then on), in time order; never empty.
    series: Vec<Vec<Vec<(Nanos, Free)>>>,
}

impl Timeline {
    /// Starts every (app, region) at time 0 with `initial` counts.
    pub fn new(initial: &[Vec<Free>]) -> Self {
        let series = initial
            .iter()
            .map(|regions| regions.iter().map(|&c| vec![(0, c)]).collect())
            .collect();
        Self { series }
    }

    /// The counts of (app, region) changed to `c` at `now` (not before any earlier record).
    pub fn record(&mut self, app: usize, region: usize, now: Nanos, c: Free) {
        let s = &mut self.series[app][region];
        match s.last_mut() {
            Some(last) if last.0 == now => last.1 = c,
            Some(last) if last.1 == c => {}
            _ => s.push((now, c)),
        }
    }

    /// The counts of (app, region) at time `t`. Times before the oldest record kept answer the
    /// oldest record.
    pub fn at(&self, app: usize, region: usize, t: Nanos) -> Free {
        let s = &self.series[app][region];
        let k = s.partition_point(|&(at, _)| at <= t);
        s[k.saturating_sub(1)].1
    }

    /// Forgets what no request can ask about any more: records superseded before `before`.
    pub fn prune(&mut self, before: Nanos) {
        for s in self.series.iter_mut().flatten() {
            let k = s.partition_point(|&(at, _)| at <= before);
            if k > 1 {
                s.drain(..k - 1);
            }
        }
    }
}

/// Judges one answered request. `all` lists every region, nearest to the edge first, each with
/// the time the request would have reached it; the first `nearer` are nearer than the region that
/// served it. Optimal unless a nearer region had an instance below its soft limit by then, or,
/// when no region at all had one, a nearer region had one below its hard limit.
pub fn optimal(tl: &Timeline, app: usize, all: &[(usize, Nanos)], nearer: usize) -> bool {
    let free = |&(r, t): &(usize, Nanos)| tl.at(app, r, t);
    let nearer = &all[..nearer];
    if nearer.iter().any(|x| free(x).0 > 0) {
        return false;
    }
    if all.iter().any(|x| free(x).0 > 0) {
        return true;
    }
    !nearer.iter().any(|x| free(x).1 > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_counts_in_force_at_each_time() {
        let mut tl = Timeline::new(&[vec![(2, 2), (1, 1)]]);
        tl.record(0, 0, 10, (1, 2));
        tl.record(0, 0, 20, (0, 1));
        tl.record(0, 0, 20, (0, 0)); // same instant: the last change wins
        assert_eq!(tl.at(0, 0, 0), (2, 2));
        assert_eq!(tl.at(0, 0, 9), (2, 2));
        assert_eq!(tl.at(0, 0, 10), (1, 2));
        assert_eq!(tl.at(0, 0, 19), (1, 2));
        assert_eq!(tl.at(0, 0, 25), (0, 0));
        assert_eq!(tl.at(0, 1, 25), (1, 1));
        tl.prune(15);
        assert_eq!(
            tl.at(0, 0, 15),
            (1, 2),
            "the record in force at the cut stays"
        );
        assert_eq!(tl.at(0, 0, 25), (0, 0));
    }

    #[test]
    fn a_nearer_region_free_when_the_request_would_arrive_makes_it_not_optimal() {
        // Region 0 is full from t=0 until t=30, then frees a slot; region 1 always has room.
        let mut tl = Timeline::new(&[vec![(1, 1), (1, 1)]]);
        tl.record(0, 0, 0, (0, 1));
        tl.record(0, 0, 30, (1, 1));
        let all = |t0: Nanos| [(0, t0), (1, t0 + 5)];
        // Served in region 1: fine if region 0 was full when the request would have got there.
        assert!(optimal(&tl, 0, &all(20), 1));
        // ... not if region 0 had freed a slot by then.
        assert!(!optimal(&tl, 0, &all(40), 1));
        // Served in region 0 itself: nothing was nearer.
        assert!(optimal(&tl, 0, &all(40), 0));
    }

    #[test]
    fn with_no_room_below_soft_anywhere_the_hard_limit_decides() {
        let tl = Timeline::new(&[vec![(0, 1), (0, 1)]]);
        let all = [(0, 10), (1, 15)];
        assert!(!optimal(&tl, 0, &all, 1));
        let tl = Timeline::new(&[vec![(0, 0), (0, 1)]]);
        assert!(optimal(&tl, 0, &all, 1));
    }
}
