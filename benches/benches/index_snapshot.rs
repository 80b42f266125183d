//! The chunk index at scale.
//!
//! * `index_1m/snapshot_write`: `IndexWriter::snapshot` of a state with
//!   1,048,576 done chunks (64 GiB at 64 KiB); includes its fsync, rename
//!   and directory fsync.
//! * `index_1m/open_snapshot`: `IndexReader::open` of that index with its
//!   snapshot (snapshot decode; nothing after it to replay).
//! * `index_1m/open_replayed_{digest,checked}`: `IndexWriter::open_replayed`
//!   of that index (what a filler does when it takes the lease: state and
//!   every chunk's CV) with a snapshot that carries the records digest (the
//!   records under it read in bulk, hashed once) vs. one without it (as
//!   before snapshot version 2: every record's checksum checked).
//! * `index_45g/{open_snapshot,open_replay,read_cvs}`: a 45 GiB object at
//!   64 KiB chunks (737,280 records, 34 MiB log): `IndexReader::open` with
//!   a snapshot vs. without one (full replay: every record's checksum is
//!   verified), and `index::read_cvs` without a snapshot (every record
//!   checked).
//!
//! Logs are written in batches of 4096 records (as the filler does); the
//! files are page-cache hot.

use std::path::{Path, PathBuf};

use benches::{size, tempdir, MEASURE, WARM_UP};
use cache_core::hash::chunk_count;
use cache_core::index::{read_cvs, IndexHeader, IndexReader, IndexState, IndexWriter, Record};
use criterion::{criterion_group, Criterion};

const CS: u32 = 64 << 10;

/// Writes an index of every chunk of an object of `len` bytes; returns its
/// writer and the state it describes.
fn build(path: &Path, len: u64) -> (IndexWriter, IndexState) {
    let header = IndexHeader {
        len,
        chunk_size: CS,
        data_id: [9; 16],
        source: "bench://index".into(),
        validator: "\"v\"".into(),
        expected: None,
        created_unix: 0,
    };
    let mut w = IndexWriter::create(path, &header).unwrap();
    let n = chunk_count(len, CS).unwrap();
    let mut state = IndexState::default();
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        let mut cv = [0u8; 32];
        cv[..4].copy_from_slice(&i.to_le_bytes());
        batch.push(Record::Chunk { index: i, cv });
        state.done.insert(i);
        if batch.len() == 4096 || i + 1 == n {
            w.append(&batch).unwrap();
            batch.clear();
        }
    }
    (w, state)
}

fn snap_of(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".snap");
    s.into()
}

fn index_1m(c: &mut Criterion) {
    let dir = tempdir();
    let path = dir.path().join("index");
    let len = size(1 << 36, 1 << 30); // 1 Mi chunks (16 Ki in test mode)
    let (mut w, state) = build(&path, len);
    let mut g = c.benchmark_group("index_1m");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10);
    g.bench_function("snapshot_write", |b| b.iter(|| w.snapshot(&state).unwrap()));
    println!(
        "index_1m: log {} bytes, snapshot {} bytes",
        std::fs::metadata(&path).unwrap().len(),
        std::fs::metadata(snap_of(&path)).unwrap().len()
    );
    g.bench_function("open_snapshot", |b| {
        b.iter(|| {
            let (_, _, st) = IndexReader::open(&path).unwrap();
            assert_eq!(st.done.len(), state.done.len());
        })
    });
    drop(w);
    let replayed = |b: &mut criterion::Bencher, digest: bool| {
        b.iter(|| {
            let (_, _, r, rec) = IndexWriter::open_replayed(&path).unwrap();
            assert_eq!(rec.snapshot_used, digest);
            assert_eq!(r.cvs.len() as u64, state.done.len());
        })
    };
    // The writer made by `build` wrote or read every record: its snapshot
    // carries the records digest.
    g.bench_function("open_replayed_digest", |b| replayed(b, true));
    // One opened on a snapshot did not: its snapshot has no digest.
    let (mut w, ..) = IndexWriter::open(&path).unwrap();
    w.snapshot(&state).unwrap();
    drop(w);
    g.bench_function("open_replayed_checked", |b| replayed(b, false));
    g.finish();
}

fn index_45g(c: &mut Criterion) {
    let dir = tempdir();
    let with_snap = dir.path().join("with-snap");
    let without = dir.path().join("without");
    let len = size(45 << 30, 1 << 30);
    let (mut w, state) = build(&with_snap, len);
    w.snapshot(&state).unwrap();
    drop(build(&without, len));
    let mut g = c.benchmark_group("index_45g");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10);
    g.bench_function("open_snapshot", |b| {
        b.iter(|| {
            let (_, _, st) = IndexReader::open(&with_snap).unwrap();
            assert_eq!(st.done.len(), state.done.len());
        })
    });
    g.bench_function("open_replay", |b| {
        b.iter(|| {
            let (_, _, st) = IndexReader::open(&without).unwrap();
            assert_eq!(st.done.len(), state.done.len());
        })
    });
    g.bench_function("read_cvs", |b| {
        b.iter(|| {
            let cvs = read_cvs(&without).unwrap();
            assert_eq!(cvs.len() as u64, state.done.len());
        })
    });
    g.finish();
}

criterion_group!(benches, index_1m, index_45g);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
