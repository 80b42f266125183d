//! Reading a complete object (page-cache hot), 1 reader and 8 concurrent
//! readers, 64 KiB and 1 MiB reads:
//!
//! * `read_at`: `Object::read_at` (a zero-copy `Bytes` slice of the data
//!   file's mmap), then a copy into the reader's buffer — as a server does
//!   when it writes the bytes to a socket — so every byte is touched;
//! * `pread`: plain `pread` from the data file into the reader's buffer;
//! * `stream`: `Object::stream` over the whole object (pieces of one chunk,
//!   1 MiB), each piece copied into the buffer (read size column = chunk).
//!
//! Each reader reads the whole object once per iteration, starting at its
//! own offset (reader `i` at `i * len / 8`, wrapping); throughput counts
//! the bytes of all readers.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use benches::{human, pattern, runtime, size, tempdir, MEASURE, WARM_UP};
use cache_core::index::IndexReader;
use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, Object, Store};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;

const READERS: [u64; 2] = [1, 8];
const READ_SIZES: [u64; 2] = [64 << 10, 1 << 20];

/// Offsets of reader `i` of `n` over an object of `len` bytes in reads of `rs`.
fn offsets(i: u64, n: u64, len: u64, rs: u64) -> impl Iterator<Item = u64> {
    let start = (i * len / n) / rs * rs;
    (0..len / rs).map(move |k| (start + k * rs) % len)
}

fn read_complete(c: &mut Criterion) {
    let len = size(128 << 20, 8 << 20);
    let rt = runtime();
    let dir = tempdir();
    let store = Store::open(dir.path()).unwrap();
    let src = Arc::new(MemorySource::new("mem://read", pattern(len as usize, 3)));
    let object: Object = rt.block_on(async {
        let o = store.fetch(src, FetchOptions::default()).await.unwrap();
        o.wait_complete().await.unwrap();
        o
    });
    // The plain data file, for pread.
    let obj_dir = dir.path().join("objects").join(object.key());
    let (_, header, _) = IndexReader::open(&obj_dir.join("index")).unwrap();
    let data = Arc::new(File::open(obj_dir.join(header.data_file_name())).unwrap());

    let mut g = c.benchmark_group("read_complete");
    g.warm_up_time(WARM_UP)
        .measurement_time(MEASURE)
        .sample_size(10);
    for n in READERS {
        g.throughput(Throughput::Bytes(n * len));
        for rs in READ_SIZES {
            let param = format!("{n}r/{}", human(rs));
            g.bench_function(BenchmarkId::new("read_at", &param), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..n)
                            .map(|i| {
                                let o = object.clone();
                                tokio::spawn(async move {
                                    let mut buf = vec![0u8; rs as usize];
                                    for off in offsets(i, n, len, rs) {
                                        let piece = o.read_at(off, rs).await.unwrap();
                                        buf.copy_from_slice(&piece);
                                    }
                                    buf[0]
                                })
                            })
                            .collect();
                        for t in tasks {
                            std::hint::black_box(t.await.unwrap());
                        }
                    })
                })
            });
            g.bench_function(BenchmarkId::new("pread", &param), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..n)
                            .map(|i| {
                                let f = data.clone();
                                tokio::spawn(async move {
                                    let mut buf = vec![0u8; rs as usize];
                                    for off in offsets(i, n, len, rs) {
                                        f.read_exact_at(&mut buf, off).unwrap();
                                    }
                                    buf[0]
                                })
                            })
                            .collect();
                        for t in tasks {
                            std::hint::black_box(t.await.unwrap());
                        }
                    })
                })
            });
        }
        let param = format!("{n}r/chunk");
        g.bench_function(BenchmarkId::new("stream", &param), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..n)
                        .map(|i| {
                            let o = object.clone();
                            let start = (i * len / n) / (1 << 20) * (1 << 20);
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 1 << 20];
                                for range in [start..len, 0..start] {
                                    let mut s = Box::pin(o.stream(range));
                                    while let Some(piece) = s.next().await {
                                        let piece = piece.unwrap();
                                        buf[..piece.len()].copy_from_slice(&piece);
                                    }
                                }
                                buf[0]
                            })
                        })
                        .collect();
                    for t in tasks {
                        std::hint::black_box(t.await.unwrap());
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, read_complete);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
