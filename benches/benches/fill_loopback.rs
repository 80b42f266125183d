//! End-to-end fill over loopback HTTP: an in-process hyper 1.x origin
//! serving a 256 MiB in-memory body with Range support, filled with the
//! default fill options through
//!
//! * `http_source/<chunk size>`: the real `cache_http::HttpSource`
//!   (proxies off), for every chunk size;
//! * `minimal_source/1MiB`: [`LoopbackSource`], a minimal range source (no
//!   retries, redirects, TLS or rate limiting), for reference.
//!
//! Time is
//! `Store::fetch` → `wait_complete`; throughput = object bytes. With
//! `BENCH_ROUNDS=N` an interleaved pass follows (N rounds; median, min).
//!
//! The origin and the filler share the machine's 2 cores (the origin runs on
//! its own 1-worker runtime).

use std::sync::Arc;
use std::time::Instant;

use benches::origin::{LoopbackSource, Origin};
use benches::{human, interleaved, pattern, rounds, runtime, size, tempdir, MEASURE, WARM_UP};
use bytes::Bytes;
use cache_core::{FetchOptions, Source, Store};
use cache_http::{HttpSource, HttpSourceConfig, ProxyConfig};
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
    let sizes = [64u64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
    let url = origin.url("img");
    let fill_once = |minimal: bool, cs: u64| {
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let src: Arc<dyn Source> = if minimal {
            Arc::new(LoopbackSource::new(&url))
        } else {
            let config = HttpSourceConfig {
                proxy: ProxyConfig::None,
                ..HttpSourceConfig::default()
            };
            Arc::new(HttpSource::new(&url, config).unwrap())
        };
        let options = FetchOptions {
            chunk_size: cs as u32,
            ..FetchOptions::default()
        };
        let t0 = Instant::now();
        let hash = rt.block_on(async move {
            let object = store.fetch(src, options).await.unwrap();
            object.wait_complete().await.unwrap()
        });
        let elapsed = t0.elapsed();
        assert_eq!(hash, expected);
        elapsed
    };
    // (source is minimal, chunk size)
    let mut variants: Vec<(bool, u64)> = sizes.iter().map(|&cs| (false, cs)).collect();
    variants.push((true, 1 << 20));
    let name = |minimal: bool| {
        if minimal {
            "minimal_source"
        } else {
            "http_source"
        }
    };
    for &(minimal, cs) in &variants {
        g.bench_function(BenchmarkId::new(name(minimal), human(cs)), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| fill_once(minimal, cs)).sum())
        });
    }
    g.finish();
    let labels: Vec<String> = variants
        .iter()
        .map(|&(minimal, cs)| format!("{}/{}", name(minimal), human(cs)))
        .collect();
    interleaved("fill_loopback", &labels, len, rounds(), |i| {
        fill_once(variants[i].0, variants[i].1)
    });
    drop(origin);
}

criterion_group!(benches, fill_loopback);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
