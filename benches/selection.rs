//! Candidate selection per request (`balance::select_top`, and the full `select` order for
//! comparison, and `closest` through its per-snapshot bucket index) at 10 to 10,000 instances, both strategies, over views spread across 14 regions
//! with mixed loads.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use petrel::balance::{select, select_closest, select_top, ClosestIndex, Hints, View};
use petrel::config::Strategy;
use rand::{RngExt, SeedableRng};

const REGIONS: [&str; 14] = [
    "iad", "ord", "dfw", "lax", "sea", "yyz", "gru", "lhr", "fra", "ams", "waw", "nrt", "sin",
    "syd",
];

fn views(n: usize, ids: &[String]) -> Vec<View<'_>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    (0..n)
        .map(|i| {
            let r = i % REGIONS.len();
            View {
                id: &ids[i],
                region: REGIONS[r],
                rtt_ms: if r == 0 { 0.5 } else { 10.0 + 17.0 * r as f64 },
                load: rng.random_range(0..25),
                soft: 20,
                hard: 25,
                healthy: rng.random_range(0..100) > 2,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let hints = Hints::default();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for strategy in [Strategy::Closest, Strategy::Leastload] {
        let mut g = c.benchmark_group(format!("select/{}", strategy.as_str()));
        for n in [10usize, 100, 1_000, 10_000] {
            let ids: Vec<String> = (0..n).map(|i| format!("app-{i:05}")).collect();
            let v = views(n, &ids);
            // What a request pays: the first 1 + retries (here 4) candidates.
            g.bench_with_input(BenchmarkId::new("top4", n), &v, |b, v| {
                b.iter(|| select_top(strategy, std::hint::black_box(v), &hints, &mut rng, 4))
            });
            // closest with the per-snapshot bucket index: reads the nearest buckets only.
            if strategy == Strategy::Closest {
                let index = ClosestIndex::new(&v);
                g.bench_with_input(BenchmarkId::new("indexed_top4", n), &v, |b, v| {
                    b.iter(|| select_closest(&index, std::hint::black_box(v), &hints, &mut rng, 4))
                });
            }
            // The whole order (tests, hints that reorder everything).
            if n <= 1_000 {
                g.bench_with_input(BenchmarkId::new("full", n), &v, |b, v| {
                    b.iter(|| select(strategy, std::hint::black_box(v), &hints, &mut rng))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
