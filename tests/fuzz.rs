//! Stable-toolchain fuzz run: every committed corpus input, then random mutations of them for a
//! bounded time per target (`PETREL_FUZZ_SECS`, default 5), through the same entry points the
//! libFuzzer targets in `fuzz/` use. A panic anywhere fails the test and prints the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, RngExt, SeedableRng};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus for {target}");
    out
}

fn mutate(rng: &mut impl Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.random_range(1..8) {
        let len = v.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let b: u8 = *[0u8, 0xff, b'\n', b'"', b'[', b'=', b':', b'.', 0x7f]
                    .get(rng.random_range(0..9))
                    .unwrap_or(&0);
                v.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                v.drain(i..j);
            }
            4 if !other.is_empty() => {
                let i = rng.random_range(0..=len);
                let a = rng.random_range(0..other.len());
                let b = rng.random_range(a..=other.len().min(a + 64));
                v.splice(i..i, other[a..b].iter().copied());
            }
            _ => v.truncate(rng.random_range(0..=len)),
        }
    }
    v
}

fn run(target: &str, f: fn(&[u8])) {
    let secs: u64 = std::env::var("PETREL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seeds = corpus(target);
    let check = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
            panic!(
                "{target} panicked on input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    };
    for s in &seeds {
        check(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &seeds[rng.random_range(0..seeds.len())];
            let other = &seeds[rng.random_range(0..seeds.len())];
            check(&mutate(&mut rng, base, other));
            runs += 1;
        }
    }
    eprintln!("{target}: {runs} inputs in {secs} s, no panic");
}

#[test]
fn mesh_datagram() {
    run("mesh_datagram", petrel::fuzz_targets::mesh_datagram);
}

#[test]
fn config_text() {
    run("config_text", petrel::fuzz_targets::config_text);
}

#[test]
fn routing_headers() {
    run("routing_headers", petrel::fuzz_targets::routing_headers);
}

#[test]
fn ws_session() {
    run("ws_session", petrel::fuzz_targets::ws_session);
}
