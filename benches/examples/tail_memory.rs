//! Memory and slowdown of many readers tailing one fill.
//!
//! Fills a `--size` MiB object (default 512) from an in-memory source paced
//! like a fast WAN link, once with no reader and once with `--readers`
//! (default 64) readers streaming the whole object while it fills; prints
//! the fill time of each and the process's memory high-water marks. File
//! pages of the data file that readers map count in RSS as *file* pages
//! (page cache shared with every other process), so anonymous memory is
//! reported separately: that is what readers actually cost.
//!
//! ```sh
//! cargo run --release -p benches --example tail_memory -- --readers 64 --size 512
//! ```

use std::sync::Arc;
use std::time::Instant;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, Store};
use futures::StreamExt;

/// `VmHWM`, `RssAnon` and `RssFile` of this process, in MiB.
fn memory() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
}

async fn fill(bytes: bytes::Bytes, readers: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    // 256 KiB pieces every 1 ms per connection: ~250 MiB/s per connection,
    // a fast link that still leaves the CPU time for the readers.
    let src = MemorySource::new("mem://tail", bytes.clone())
        .with_piece_size(256 << 10)
        .with_piece_delay_ms(1);
    let started = Instant::now();
    let object = store
        .fetch(Arc::new(src), FetchOptions::default())
        .await
        .expect("fetch");
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let object = object.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Box::pin(object.stream(0..object.len()));
            let mut sum = 0u64;
            while let Some(piece) = s.next().await {
                let piece = piece.expect("piece");
                // Touch the bytes, as a real consumer would.
                sum = sum.wrapping_add(
                    piece
                        .iter()
                        .step_by(4096)
                        .map(|&b| u64::from(b))
                        .sum::<u64>(),
                );
            }
            sum
        }));
    }
    let root = object.wait_complete().await.expect("fill");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(root, blake3::hash(&bytes));
    let mut anon_peak = memory().1;
    for t in tasks {
        t.await.expect("reader");
        anon_peak = anon_peak.max(memory().1);
    }
    (secs, anon_peak)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let size = benches::arg("--size", 512) << 20;
    let readers = benches::arg("--readers", 64);
    let bytes = bytes::Bytes::from(
        (0..size)
            .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
            .collect::<Vec<u8>>(),
    );
    let (_, base_anon, _) = memory();
    println!(
        "object {} MiB; source bytes held in memory: {} MiB anonymous before the runs",
        size >> 20,
        base_anon
    );
    let mut alone = Vec::new();
    let mut tailed = Vec::new();
    for _ in 0..3 {
        alone.push(fill(bytes.clone(), 0).await.0);
        let (t, anon) = fill(bytes.clone(), readers).await;
        tailed.push(t);
        println!(
            "  round: alone {:.3} s, with {readers} readers {t:.3} s, anonymous peak {anon} MiB ({} MiB above the source's copy)",
            alone.last().copied().unwrap_or(0.0),
            anon.saturating_sub(base_anon)
        );
    }
    alone.sort_by(f64::total_cmp);
    tailed.sort_by(f64::total_cmp);
    let (a, t) = (alone[1], tailed[1]);
    let (hwm, anon, file) = memory();
    println!(
        "fill alone: {a:.3} s; with {readers} tailing readers: {t:.3} s; slowdown x{:.3}",
        t / a
    );
    println!("memory now: VmHWM {hwm} MiB (RssAnon {anon} MiB, RssFile {file} MiB); the source's own copy of the object is {} MiB of that", size >> 20);
}
