//! Mesh datagram costs: sealing and opening (XChaCha20-Poly1305) a full-size datagram, and encoding and
//! decoding one load record.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use petrel_mesh::wire::{Kind, Sealer};
use petrel_mesh::{InstanceLoad, LoadRecord};

fn bench(c: &mut Criterion) {
    let sealer = Sealer::new(&[[9; 32]], 1);
    let payload = vec![0x5a; 1100];
    c.bench_function("wire/seal_1100B", |b| {
        b.iter(|| sealer.seal(1, 42, Kind::Swim, std::hint::black_box(&payload)))
    });
    let datagram = sealer.seal(1, 42, Kind::Swim, &payload);
    c.bench_function("wire/open_1100B", |b| {
        b.iter(|| sealer.open(std::hint::black_box(&datagram)).is_ok())
    });
    let record = LoadRecord {
        node: Arc::from("iad-1"),
        generation: 1_700_000_000_000_000_000,
        version: 1234,
        removed: false,
        inst: InstanceLoad {
            id: Arc::from("hello-iad-1a"),
            app: Arc::from("hello"),
            load: 17,
            soft: 20,
            hard: 25,
            healthy: true,
        },
    };
    c.bench_function("load_record/encode", |b| {
        b.iter(|| std::hint::black_box(&record).encode())
    });
    let bytes = record.encode();
    c.bench_function("load_record/decode", |b| {
        b.iter(|| LoadRecord::decode(std::hint::black_box(&bytes)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
