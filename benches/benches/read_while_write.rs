//! Readers of an object that is still filling.
//!
//! * `commit_to_wake/<chunk size>`: a reader is blocked in `read_at` on
//!   chunk `k` of a lazily filled object (its demand made the filler request
//!   exactly chunk `k` from a [`GatedSource`]); the bench releases chunk `k`
//!   and measures from the release to the reader's return: the filler
//!   receiving the piece, hashing, `pwrite`, marking the chunk done and
//!   waking the reader. The per-wake-up distribution (p50/p90/p99/max) is
//!   printed after the criterion line.
//! * `tail_fill/<readers>`: fill of a 128 MiB `MemorySource` (no delay,
//!   default options) with 0 or 64 readers streaming the whole object while
//!   it fills (each touches one byte per 4 KiB page of every piece). Time is
//!   fetch → `wait_complete`; throughput = object bytes. The slowdown ratio
//!   is printed after the criterion lines. With `BENCH_ROUNDS=N` an
//!   interleaved pass follows (N alternating rounds; median, min, ratio).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::gated::GatedSource;
use benches::{
    human, interleaved, pattern, percentiles, rounds, runtime, size, tempdir, MEASURE, WARM_UP,
};
use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, FillPolicy, Object, Store};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;

fn commit_to_wake(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("commit_to_wake");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10);
    for cs in [64u64 << 10, 1 << 20] {
        let chunks = size(2048, 8).min((256 << 20) / cs);
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let options = FetchOptions {
            chunk_size: cs as u32,
            fill: FillOptions {
                connections: 1,
                readahead_chunks: 0,
                policy: FillPolicy::Lazy,
                ..FillOptions::default()
            },
            ..FetchOptions::default()
        };
        let mut generation = 0u32;
        let mut open = || {
            generation += 1;
            let src = GatedSource::new(&format!("gated://{cs}/{generation}"), cs, chunks);
            let object = rt
                .block_on(store.fetch(Arc::new(src.clone()), options.clone()))
                .unwrap();
            (src, object)
        };
        let mut current: (GatedSource, Object) = open();
        let mut k = 0u64;
        let samples = RefCell::new(Vec::new());
        g.bench_function(BenchmarkId::from_parameter(human(cs)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if k == chunks {
                        current = open();
                        k = 0;
                    }
                    let (src, object) = (&current.0, current.1.clone());
                    let off = k * cs;
                    let reader = rt.spawn(async move {
                        let got = object.read_at(off, 1).await.unwrap();
                        (Instant::now(), got.len())
                    });
                    // The request for chunk k exists only once the reader
                    // has demanded it, i.e. is waiting.
                    rt.block_on(src.wait_requested(off + cs));
                    let t0 = Instant::now();
                    src.release(off + cs);
                    let (t1, n) = rt.block_on(reader).unwrap();
                    assert_eq!(n, 1);
                    total += t1 - t0;
                    samples.borrow_mut().push(t1 - t0);
                    k += 1;
                }
                total
            })
        });
        let mut samples = samples.into_inner();
        if let Some([p50, p90, p99, max]) = percentiles(&mut samples) {
            println!(
                "commit_to_wake/{}: {} wake-ups: p50 {p50:?}, p90 {p90:?}, p99 {p99:?}, max {max:?}",
                human(cs),
                samples.len()
            );
        }
    }
    g.finish();
}

fn tail_fill(c: &mut Criterion) {
    let len = size(128 << 20, 8 << 20);
    let bytes = pattern(len as usize, 4);
    let source = Arc::new(MemorySource::new("mem://tail", bytes));
    let rt = runtime();
    let mut g = c.benchmark_group("tail_fill");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10)
        .throughput(Throughput::Bytes(len));
    let fill_once = |readers: usize| {
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let src = source.clone();
        rt.block_on(async move {
            let t0 = Instant::now();
            let object = store.fetch(src, FetchOptions::default()).await.unwrap();
            let tasks: Vec<_> = (0..readers)
                .map(|_| {
                    let o = object.clone();
                    tokio::spawn(async move {
                        let mut s = Box::pin(o.stream(0..o.len()));
                        let (mut n, mut x) = (0u64, 0u8);
                        while let Some(piece) = s.next().await {
                            let piece = piece.unwrap();
                            n += piece.len() as u64;
                            x ^= piece.iter().step_by(4096).fold(0, |a, b| a ^ b);
                        }
                        (n, x)
                    })
                })
                .collect();
            object.wait_complete().await.unwrap();
            let elapsed = t0.elapsed();
            for t in tasks {
                let (n, x) = t.await.unwrap();
                assert_eq!(n, len);
                std::hint::black_box(x);
            }
            elapsed
        })
    };
    let variants = [0usize, 64];
    let mut means = Vec::new();
    for readers in variants {
        let mut runs = (0u64, Duration::ZERO);
        g.bench_function(
            BenchmarkId::from_parameter(format!("{readers}readers")),
            |b| {
                b.iter_custom(|iters| {
                    let total: Duration = (0..iters).map(|_| fill_once(readers)).sum();
                    runs.0 += iters;
                    runs.1 += total;
                    total
                })
            },
        );
        means.push(runs.1 / runs.0.max(1) as u32);
    }
    g.finish();
    let mib_s = |d: Duration| len as f64 / d.as_secs_f64() / f64::from(1 << 20);
    println!(
        "tail_fill: mean fill {:.2?} ({:.0} MiB/s) with 0 readers, {:.2?} ({:.0} MiB/s) with 64 readers: ratio x{:.2} (criterion runs, warm-up included)",
        means[0],
        mib_s(means[0]),
        means[1],
        mib_s(means[1]),
        means[1].as_secs_f64() / means[0].as_secs_f64()
    );
    let labels: Vec<String> = variants.iter().map(|r| format!("{r}readers")).collect();
    let medians = interleaved("tail_fill", &labels, len, rounds(), |i| {
        fill_once(variants[i])
    });
    if let [m0, m64] = medians[..] {
        println!(
            "tail_fill interleaved: 64 readers / 0 readers = x{:.2}",
            m64.as_secs_f64() / m0.as_secs_f64()
        );
    }
}

criterion_group!(benches, commit_to_wake, tail_fill);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
