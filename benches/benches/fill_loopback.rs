//! End-to-end fill over loopback HTTP: an in-process hyper 1.x origin
//! serving a 256 MiB in-memory body with Range support, filled through
//! [`LoopbackSource`] (a minimal range source: no retries, redirects or
//! TLS) with the default fill options, per chunk size. Time is
//! `Store::fetch` → `wait_complete`; throughput = object bytes.
//!
//! The origin and the filler share the machine's 2 cores (the origin runs on
//! its own 1-worker runtime).

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::origin::{LoopbackSource, Origin};
use benches::{human, pattern, runtime, size, tempdir, MEASURE, WARM_UP};
use bytes::Bytes;
use cache_core::{FetchOptions, Source, Store};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

fn fill_loopback(c: &mut Criterion) {
    let len = size(256 << 20, 8 << 20);
    let bytes = Bytes::from(pattern(len as usize, 5));
    let expected = blake3::hash(&bytes);
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let origin = origin_rt.block_on(Origin::start(bytes));
    let rt = runtime();
    let mut g = c.benchmark_group("fill_loopback");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10)
        .throughput(Throughput::Bytes(len));
    for cs in [256u64 << 10, 1 << 20, 4 << 20] {
        g.bench_function(BenchmarkId::new("minimal_source", human(cs)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempdir();
                    let store = Store::open(dir.path()).unwrap();
                    let src: Arc<dyn Source> = Arc::new(LoopbackSource::new(&origin.url("img")));
                    let options = FetchOptions {
                        chunk_size: cs as u32,
                        ..FetchOptions::default()
                    };
                    let t0 = Instant::now();
                    let hash = rt.block_on(async move {
                        let object = store.fetch(src, options).await.unwrap();
                        object.wait_complete().await.unwrap()
                    });
                    total += t0.elapsed();
                    assert_eq!(hash, expected);
                }
                total
            })
        });
    }
    g.finish();
    drop(origin);
}

criterion_group!(benches, fill_loopback);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
