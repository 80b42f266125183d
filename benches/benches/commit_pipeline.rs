//! The filler's commit path, per chunk size.
//!
//! * `commit_pipeline/{sync,nosync}/<chunk size>`: for each chunk,
//!   `hash::chunk_cv` + `pwrite` into a temp data file + a `Record::Chunk`;
//!   every 64 MiB (the filler's `FLUSH_BYTES`) a batch flush as in
//!   `fill/durability.rs`: `fdatasync` of the data file (`sync` only), then
//!   `IndexWriter::append` of the batch (one write + one `fdatasync` of the
//!   index; the public API always syncs the index, in both variants).
//! * `fetch_e2e/<chunk size>`: `Store::fetch` of a 256 MiB in-memory
//!   `MemorySource` (no delay) until `wait_complete` — the whole fill
//!   machinery (scheduler, 4 connections, commit, durability, root). This is
//!   what the default chunk size is chosen on. With `BENCH_ROUNDS=N` an
//!   interleaved pass follows (N rounds over all chunk sizes; median, min).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use benches::{
    full_run, human, interleaved, pattern, rounds, runtime, size, tempdir, MEASURE, WARM_UP,
};
use cache_core::hash::chunk_cv;
use cache_core::index::{IndexHeader, IndexWriter, Record};
use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, Store};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

const CHUNK_SIZES: [u64; 5] = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
/// `fill::durability::FLUSH_BYTES`.
const FLUSH_BYTES: u64 = 64 << 20;

fn commit_pipeline(c: &mut Criterion) {
    let batch = size(FLUSH_BYTES, 16 << 20);
    // A window of the data file that batches rotate through.
    let window = 4 * batch;
    let data = pattern(batch as usize, 1);
    let mut g = c.benchmark_group("commit_pipeline");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10)
        .throughput(Throughput::Bytes(batch));
    for sync in [true, false] {
        for cs in CHUNK_SIZES {
            let dir = tempdir();
            // A big object so chunk indexes never run out (64 GiB).
            let object_len = 64u64 << 30;
            let header = IndexHeader {
                len: object_len,
                chunk_size: cs as u32,
                data_id: [7; 16],
                source: "bench://commit".into(),
                validator: "\"v\"".into(),
                expected: None,
                created_unix: 0,
            };
            let mut index = IndexWriter::create(&dir.path().join("index"), &header).unwrap();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join("data"))
                .unwrap();
            file.set_len(window).unwrap();
            let chunk_count = (object_len / cs) as u32;
            let mut next_chunk = 0u32;
            let mut batch_no = 0u64;
            let name = if sync { "sync" } else { "nosync" };
            g.bench_function(BenchmarkId::new(name, human(cs)), |b| {
                b.iter(|| {
                    let base = (batch_no % (window / batch)) * batch;
                    batch_no += 1;
                    let mut records = Vec::with_capacity((batch / cs) as usize);
                    for (i, chunk) in data.chunks(cs as usize).enumerate() {
                        let idx = next_chunk;
                        next_chunk = (next_chunk + 1) % chunk_count;
                        let cv = chunk_cv(chunk, idx, cs as u32, object_len);
                        file.write_all_at(chunk, base + i as u64 * cs).unwrap();
                        records.push(Record::Chunk { index: idx, cv });
                    }
                    if sync {
                        file.sync_data().unwrap();
                    }
                    index.append(&records).unwrap();
                })
            });
        }
    }
    g.finish();
}

fn fetch_e2e(c: &mut Criterion) {
    let len = size(256 << 20, 16 << 20);
    let bytes = pattern(len as usize, 2);
    let expected = blake3::hash(&bytes);
    let source = Arc::new(MemorySource::new("mem://e2e", bytes));
    let rt = runtime();
    let mut g = c.benchmark_group("fetch_e2e");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10)
        .throughput(Throughput::Bytes(len));
    let fetch_once = |cs: u64| {
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let options = FetchOptions {
            chunk_size: cs as u32,
            ..FetchOptions::default()
        };
        let src = source.clone();
        let t0 = Instant::now();
        let hash = rt.block_on(async move {
            let object = store.fetch(src, options).await.unwrap();
            object.wait_complete().await.unwrap()
        });
        let elapsed = t0.elapsed();
        assert_eq!(hash, expected);
        elapsed
    };
    for cs in CHUNK_SIZES {
        g.bench_function(BenchmarkId::from_parameter(human(cs)), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| fetch_once(cs)).sum())
        });
    }
    g.finish();
    let labels: Vec<String> = CHUNK_SIZES.iter().map(|&cs| human(cs)).collect();
    interleaved("fetch_e2e", &labels, len, rounds(), |i| {
        fetch_once(CHUNK_SIZES[i])
    });
}

criterion_group!(benches, commit_pipeline, fetch_e2e);

fn main() {
    if !full_run() {
        eprintln!("commit_pipeline: test mode (small inputs)");
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
