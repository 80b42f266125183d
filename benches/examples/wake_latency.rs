//! Commit → wake-up latency across real processes.
//!
//! A leader process (this example run as a child) fills an object of
//! 64 KiB chunks from a paced in-memory source (16 KiB pieces 1 ms apart,
//! two connections: a commit every ~2 ms) with the default durability
//! cadence (flush every 250 ms). This process follows the fill with no
//! reader (so no demand makes the leader flush early). For every chunk:
//! latency = the time this process published it to its readers minus the
//! time the leader committed it. Both times come from the object's chunk
//! feed, received on a dedicated thread in each process, as wall-clock
//! time of the one machine.
//!
//! Three modes, interleaved per round: `poll` — the follower binds no
//! wake-up socket and polls the index every 20 ms (the behaviour before
//! wake-ups: a chunk is seen once durable); `wake` — the follower is woken
//! by the leader's datagram at each commit, and one reader in it waits for
//! the whole object (`read_at(0, len)`: always waiting for the next
//! missing chunk), so it takes every announcement at once; `wake, idle` —
//! the same with no reader, where the follower takes announcements at most
//! every 50 ms (progress only). Printed: p50/p90/p99/max per mode and the
//! p99 against the 10 ms target.
//!
//! ```text
//! cargo run --release -p benches --example wake_latency [-- CHUNKS [ROUNDS]]
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::{pattern, percentiles};
use cache_core::testing::MemorySource;
use cache_core::{
    ChunkChange, FetchOptions, FillOptions, Object, RangeBody, Source, SourceError, SourceInfo,
    Store, StoreOptions,
};
use futures::future::BoxFuture;

const URL: &str = "mem://wake-latency";
const CS: usize = 64 << 10;
const ROLE_ENV: &str = "WAKE_LATENCY_LEADER";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Records the time each chunk first turns done in `object`'s feed, on a
/// dedicated thread, until every chunk is done.
fn record_done(object: &Object) -> std::thread::JoinHandle<HashMap<u32, u128>> {
    let (map, mut rx) = object.chunk_feed();
    let total = map.chunk_count;
    let mut done = map.done;
    std::thread::spawn(move || {
        let mut at = HashMap::new();
        while done.len() < u64::from(total) {
            match rx.blocking_recv() {
                Ok(ChunkChange::Done(r)) => {
                    let t = now_ns();
                    for c in r {
                        if done.insert(c) {
                            at.insert(c, t);
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("feed lagged by {n} changes");
                }
                Err(_) => break,
            }
        }
        at
    })
}

/// The paced source, held back until the follower is ready (`go` exists).
struct Gate {
    inner: MemorySource,
    go: PathBuf,
}

impl Source for Gate {
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        self.inner.probe()
    }
    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            while !self.go.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.inner.read_range(range, expect).await
        })
    }
}

fn leader(store_dir: &Path, chunks: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = store_dir.with_extension("commits");
    rt.block_on(async {
        let store = Store::open(store_dir).unwrap();
        let src = Gate {
            inner: MemorySource::new(URL, pattern(chunks * CS, 3))
                .with_piece_size(16 << 10)
                .with_piece_delay_ms(1),
            go: store_dir.with_extension("go"),
        };
        let options = FetchOptions {
            chunk_size: CS as u32,
            fill: FillOptions {
                connections: 2,
                ..FillOptions::default()
            },
            ..FetchOptions::default()
        };
        let object = store.fetch(Arc::new(src), options).await.unwrap();
        let commits = record_done(&object);
        object.wait_complete().await.unwrap();
        let commits = commits.join().unwrap();
        let text: String = commits.iter().map(|(c, t)| format!("{c} {t}\n")).collect();
        std::fs::write(out, text).unwrap();
    });
}

/// One round: a leader child, this process following. Returns the
/// per-chunk latencies and how many chunks the follower saw before the
/// leader's index had them.
fn round(chunks: usize, wake: bool, reader: bool) -> Vec<Duration> {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, &store_dir)
        .args([chunks.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !store_dir
        .join("objects")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no leader");
        std::thread::sleep(Duration::from_millis(5));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let store = Store::open_with(
            &store_dir,
            StoreOptions {
                no_wake_ups: !wake,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let object = loop {
            match store.open_ref(URL) {
                Ok(o) => break o,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let seen = record_done(&object);
        // The follower's socket is bound by its watcher task.
        let wake_dir = store_dir.join("objects").join(object.key()).join("wake");
        let t0 = Instant::now();
        while wake && !wake_dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            assert!(t0.elapsed() < Duration::from_secs(10), "no socket bound");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read = reader.then(|| {
            let o = object.clone();
            tokio::spawn(async move { o.read_at(0, o.len()).await.map(|b| b.len()) })
        });
        std::fs::write(store_dir.with_extension("go"), b"").unwrap();
        let seen = tokio::task::spawn_blocking(move || seen.join().unwrap())
            .await
            .unwrap();
        if let Some(read) = read {
            assert_eq!(read.await.unwrap().unwrap(), chunks * CS);
        }
        drop(object);
        seen
    });
    assert!(child.wait().unwrap().success(), "leader failed");
    let commits: HashMap<u32, u128> = std::fs::read_to_string(store_dir.with_extension("commits"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(chunks);
    for (c, t) in &seen {
        if let Some(&committed) = commits.get(c) {
            out.push(Duration::from_nanos(t.saturating_sub(committed) as u64));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chunks: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2048);
    if let Some(store) = std::env::var_os(ROLE_ENV) {
        leader(Path::new(&store), chunks);
        return;
    }
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let modes = [
        ("poll (before)", false, false),
        ("wake, a reader waits (after)", true, true),
        ("wake, idle follower (after)", true, false),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        for (i, (name, wake, reader)) in modes.iter().enumerate() {
            let l = round(chunks, *wake, *reader);
            eprintln!("round {r} {name}: {} chunks measured", l.len());
            samples[i].extend(l);
        }
    }
    let target = Duration::from_millis(10);
    for ((name, _, _), samples) in modes.iter().zip(samples.iter_mut()) {
        let n = samples.len();
        if let Some([p50, p90, p99, max]) = percentiles(samples) {
            println!(
                "commit_to_wake_cross_process/{name}: {n} chunks: p50 {p50:.2?}, p90 {p90:.2?}, \
                 p99 {p99:.2?}, max {max:.2?}; p99 / 10 ms target = {:.3}",
                p99.as_secs_f64() / target.as_secs_f64()
            );
        }
    }
}
