//! The fluid bound: the least mean network time any router can pay for a scenario's demand.
//!
//! Demand (requests per second from each client region) is assigned to serving regions, each
//! able to take `instances × soft_limit ÷ mean service time` requests per second, at the least
//! total RTT: the transportation problem (Hitchcock 1941). No router, however well informed, pays
//! less in steady state; the excess of what a policy's requests paid over it is what routing
//! cost. Solved exactly with successive shortest augmenting paths (Bellman–Ford on the residual
//! graph, so the negative costs of undoing an assignment are allowed): a few dozen regions take
//! microseconds.

/// An optimal assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `flow[i][j]`: requests per second from client region `i` served in region `j`.
    pub flow: Vec<Vec<f64>>,
    /// Requests per second assigned (all the demand, or all the capacity when demand exceeds it).
    pub served: f64,
    /// Σ flow × RTT, ms × requests per second.
    pub cost: f64,
}

impl Plan {
    /// Mean RTT of an assigned request, ms (0 when nothing is assigned).
    pub fn mean_ms(&self) -> f64 {
        if self.served > 0.0 {
            self.cost / self.served
        } else {
            0.0
        }
    }

    /// Mean RTT of client region `i`'s assigned requests, ms (`None` when it has none).
    pub fn mean_ms_from(&self, i: usize, rtt_ms: &[Vec<f64>]) -> Option<f64> {
        let total: f64 = self.flow[i].iter().sum();
        (total > EPS).then(|| {
            self.flow[i]
                .iter()
                .zip(&rtt_ms[i])
                .map(|(f, c)| f * c)
                .sum::<f64>()
                / total
        })
    }
}

const EPS: f64 = 1e-9;

/// The fluid bound of a run's measured window: the mean over one-second steps of the optimal
/// assignment of that step's demand (diurnal rates move it), weighted by demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// Mean RTT of an assigned request, ms.
    pub mean_ms: f64,
    /// The same per client region (`None`: no demand there).
    pub by_region: Vec<Option<f64>>,
}

/// The bound for `steps` demand vectors (requests per second per client region, one per step),
/// per app capacities `capacity[app][region]` (requests per second) and the RTT matrix. Each
/// app gets `1 / apps` of the demand, as the simulator's clients pick an app uniformly.
pub fn bound(steps: &[Vec<f64>], capacity: &[Vec<f64>], rtt_ms: &[Vec<f64>]) -> Bound {
    let n = rtt_ms.len();
    let apps = capacity.len().max(1) as f64;
    let (mut cost, mut served) = (0.0, 0.0);
    let mut by = vec![(0.0, 0.0); n];
    for demand in steps {
        let share: Vec<f64> = demand.iter().map(|d| d / apps).collect();
        for cap in capacity {
            let plan = transport(&share, cap, rtt_ms);
            cost += plan.cost;
            served += plan.served;
            for (i, row) in plan.flow.iter().enumerate() {
                by[i].0 += row.iter().sum::<f64>();
                by[i].1 += row.iter().zip(&rtt_ms[i]).map(|(f, c)| f * c).sum::<f64>();
            }
        }
    }
    Bound {
        mean_ms: if served > 0.0 { cost / served } else { 0.0 },
        by_region: by.iter().map(|&(f, c)| (f > EPS).then(|| c / f)).collect(),
    }
}

/// One arc of the residual graph.
struct Arc {
    to: usize,
    cap: f64,
    cost: f64,
}

/// Assigns `demand[i]` (≥ 0) to regions of `capacity[j]` (≥ 0) at least total `rtt_ms[i][j]`.
/// Demand beyond the total capacity is left unassigned (the bound then covers what can be
/// served). Panics if the matrix is not `demand.len() × capacity.len()`.
pub fn transport(demand: &[f64], capacity: &[f64], rtt_ms: &[Vec<f64>]) -> Plan {
    let (m, n) = (demand.len(), capacity.len());
    assert!(rtt_ms.len() == m && rtt_ms.iter().all(|r| r.len() == n));
    // Nodes: source 0, clients 1..=m, regions m+1..=m+n, sink m+n+1.
    let (src, sink) = (0, m + n + 1);
    let mut arcs: Vec<Arc> = Vec::new();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); m + n + 2];
    let mut add = |arcs: &mut Vec<Arc>, from: usize, to: usize, cap: f64, cost: f64| {
        out[from].push(arcs.len());
        arcs.push(Arc { to, cap, cost });
        out[to].push(arcs.len());
        arcs.push(Arc {
            to: from,
            cap: 0.0,
            cost: -cost,
        });
    };
    for (i, d) in demand.iter().enumerate() {
        add(&mut arcs, src, 1 + i, d.max(0.0), 0.0);
    }
    for (j, c) in capacity.iter().enumerate() {
        add(&mut arcs, 1 + m + j, sink, c.max(0.0), 0.0);
    }
    let mut client_arc = vec![vec![0usize; n]; m];
    for i in 0..m {
        for j in 0..n {
            client_arc[i][j] = arcs.len();
            add(&mut arcs, 1 + i, 1 + m + j, f64::INFINITY, rtt_ms[i][j]);
        }
    }
    let nodes = m + n + 2;
    let (mut served, mut cost) = (0.0, 0.0);
    loop {
        // Bellman–Ford from the source over arcs with room.
        let mut dist = vec![f64::INFINITY; nodes];
        let mut via = vec![usize::MAX; nodes];
        dist[src] = 0.0;
        for _ in 0..nodes {
            let mut changed = false;
            for u in 0..nodes {
                if dist[u] == f64::INFINITY {
                    continue;
                }
                for &a in &out[u] {
                    let arc = &arcs[a];
                    if arc.cap > EPS && dist[u] + arc.cost < dist[arc.to] - EPS {
                        dist[arc.to] = dist[u] + arc.cost;
                        via[arc.to] = a;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        if dist[sink] == f64::INFINITY {
            break;
        }
        // The bottleneck along the path, then push it.
        let mut push = f64::INFINITY;
        let mut v = sink;
        while v != src {
            let a = via[v];
            push = push.min(arcs[a].cap);
            v = arcs[a ^ 1].to;
        }
        let mut v = sink;
        while v != src {
            let a = via[v];
            arcs[a].cap -= push;
            arcs[a ^ 1].cap += push;
            v = arcs[a ^ 1].to;
        }
        served += push;
        cost += push * dist[sink];
    }
    let flow = client_arc
        .iter()
        .map(|row| row.iter().map(|&a| arcs[a ^ 1].cap).collect())
        .collect();
    Plan { flow, served, cost }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three regions by hand. A has demand 10 and room for 6; B demand 5, room 6; C no demand,
    /// room 10. RTT A–B 10 ms, B–C 15 ms, A–C 30 ms. Nearest-first sends A's overflow of 4 to B
    /// (1 fits) and C (3 × 30): 100. Better: all 4 to B (40), which pushes 3 of B's own to C
    /// (45): 85, mean 85 / 15 ms. Nothing beats it: moving A's overflow to C costs 30 per
    /// request, going through B costs 10 + 15 = 25.
    #[test]
    fn a_hand_solved_three_region_case() {
        let rtt = vec![
            vec![0.0, 10.0, 30.0],
            vec![10.0, 0.0, 15.0],
            vec![30.0, 15.0, 0.0],
        ];
        let plan = transport(&[10.0, 5.0, 0.0], &[6.0, 6.0, 10.0], &rtt);
        assert!((plan.served - 15.0).abs() < 1e-9);
        assert!((plan.cost - 85.0).abs() < 1e-9, "{plan:?}");
        assert!((plan.mean_ms() - 85.0 / 15.0).abs() < 1e-9);
        assert!((plan.flow[0][0] - 6.0).abs() < 1e-9 && (plan.flow[0][1] - 4.0).abs() < 1e-9);
        assert!((plan.flow[1][2] - 3.0).abs() < 1e-9);
        assert_eq!(plan.mean_ms_from(2, &rtt), None);
        assert!((plan.mean_ms_from(0, &rtt).unwrap() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn demand_beyond_capacity_is_left_unassigned() {
        let rtt = vec![vec![0.0, 50.0], vec![50.0, 0.0]];
        let plan = transport(&[10.0, 10.0], &[5.0, 5.0], &rtt);
        assert!((plan.served - 10.0).abs() < 1e-9);
        assert!(
            plan.cost.abs() < 1e-9,
            "each region serves its own: {plan:?}"
        );
    }

    #[test]
    fn room_everywhere_means_no_network_beyond_the_nearest() {
        let rtt = vec![vec![3.0, 40.0], vec![40.0, 2.0]];
        let plan = transport(&[5.0, 7.0], &[100.0, 100.0], &rtt);
        assert!((plan.mean_ms() - (5.0 * 3.0 + 7.0 * 2.0) / 12.0).abs() < 1e-9);
    }
}
