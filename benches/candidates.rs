//! The proxy's whole per-request pick (`pick::pick`): read the mesh snapshot, apply
//! this edge's feedback and penalties, order the first 4 candidates. The app has 10 to 10,000
//! instances over 14 regions, in a cluster that also holds 10,000 instances of other apps; loads
//! are either mixed or at the soft limit in the three nearest regions (an overloaded neighbourhood).
//! `closest` walks the app's RTT index; `leastload` reads every instance of the app.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use petrel::balance::Hints;
use petrel::cluster::Snapshot;
use petrel::config::Strategy;
use petrel::pick::Penalties;
use petrel::pick::{pick, Ask, Sources};
use petrel::pick::{Feedback, FEEDBACK_TTL_MS};
use petrel_mesh::{ClusterView, InstanceLoad, RemoteInstance};
use rand::{RngExt, SeedableRng};

const REGIONS: usize = 14;
const OTHER_APPS: usize = 10_000;

fn instance(app: &str, i: usize, load: u32) -> RemoteInstance {
    let r = i % REGIONS;
    RemoteInstance {
        node: format!("node-{r}-{}", i % 7).into(),
        region: format!("r{r:02}").into(),
        backhaul: SocketAddr::from(([127, 0, 0, 1], 4000 + (i % 1000) as u16)),
        rtt_ms: Some(if r == 0 { 0.5 } else { 10.0 + 17.0 * r as f64 }),
        load: InstanceLoad {
            id: format!("{app}-{i:05}").into(),
            app: app.into(),
            load,
            soft: 20,
            hard: 25,
            healthy: true,
        },
        received_at: Duration::ZERO,
    }
}

/// A snapshot with `n` instances of "app" (interleaved with the other apps' instances).
fn snapshot(n: usize, near_full: bool) -> Snapshot {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let mut instances = Vec::with_capacity(n + OTHER_APPS);
    for i in 0..n.max(OTHER_APPS) {
        if i < n {
            let load = if near_full && i % REGIONS < 3 {
                20
            } else {
                rng.random_range(0..25)
            };
            instances.push(instance("app", i, load));
        }
        if i < OTHER_APPS {
            instances.push(instance(
                &format!("other{}", i % 500),
                i,
                rng.random_range(0..25),
            ));
        }
    }
    Snapshot::new(
        ClusterView {
            members: Vec::new(),
            instances,
            built_at: Duration::ZERO,
        },
        std::time::Instant::now(),
    )
}

fn bench(c: &mut Criterion) {
    let region: Arc<str> = "r00".into();
    let feedback = Feedback::new(FEEDBACK_TTL_MS);
    let penalties = Penalties::default();
    let hints = Hints::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let cases = [
        (Strategy::Closest, "mixed", false),
        (Strategy::Closest, "near_full", true),
        (Strategy::Leastload, "mixed", false),
    ];
    for (strategy, name, near_full) in cases {
        let mut g = c.benchmark_group(format!("pick/{}/{name}", strategy.as_str()));
        for n in [10usize, 100, 1_000, 10_000] {
            let snap = snapshot(n, near_full);
            let src = Sources {
                region: &region,
                locals: &[],
                snap: &snap,
                feedback: &feedback,
                penalties: &penalties,
                now_ms: 1,
            };
            let ask = Ask {
                app: "app",
                strategy,
                soft: 20,
                hard: 25,
            };
            g.bench_with_input(BenchmarkId::new("top4", n), &src, |b, src| {
                b.iter(|| pick(std::hint::black_box(src), ask, &hints, 4, &mut rng))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
