//! SHA-256 over bytes in the page cache, four ways (issue 13 item 7):
//! why the fill's prefix hasher maps the data file and starts its loads
//! ahead (`PrefixHasher::update_streaming` in cache-core).
//!
//! ```text
//! cargo run --release -p benches --example sha_from_cache [MIB]
//! ```
//!
//! Writes a file of MIB MiB (default 512) in a temp dir, reads it once
//! (into the page cache), then hashes it, three rounds, each way:
//!
//! * `hot`: one 1 MiB buffer hashed over and over (bytes already in the
//!   CPU's cache: the ceiling);
//! * `pread`: 1 MiB `pread`s into a buffer, each hashed (the hasher
//!   before);
//! * `map`: 8 MiB maps of the file, hashed in place;
//! * `map+prefetch`: the same with the loads of each next KiB started
//!   while this one is hashed (the hasher now).
//!
//! Prints MB/s per round and the medians. All four hash with the fill's
//! own code (`cache_core::Sha256AsPrefix`, `internals`).

use std::os::unix::fs::FileExt;
use std::time::Instant;

use cache_core::Sha256AsPrefix;

const WINDOW: usize = 8 << 20;

/// Hashes the first `len` bytes of the file one way.
type Way = fn(&std::fs::File, usize) -> Vec<u8>;
const PIECE: usize = 1 << 20;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("MIB: a number"))
        .unwrap_or(512);
    let len = mib << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data");
    let bytes: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).expect("write the file");
    drop(bytes);
    let file = std::fs::File::open(&path).expect("open");
    // Into the page cache (and the check value).
    let mut buf = vec![0u8; PIECE];
    let mut all = Vec::with_capacity(len);
    for off in (0..len).step_by(PIECE) {
        file.read_exact_at(&mut buf, off as u64).expect("read");
        all.extend_from_slice(&buf);
    }
    let mut h = Sha256AsPrefix::default();
    h.update(&all, false);
    let want = h.finish();
    drop(all);

    let ways: [(&str, Way); 4] = [
        ("hot", hot),
        ("pread", pread),
        ("map", |f, len| mapped(f, len, false)),
        ("map+prefetch", |f, len| mapped(f, len, true)),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for round in 1..=3 {
        let mut line = format!("round {round}:");
        for (i, (name, way)) in ways.iter().enumerate() {
            let t = Instant::now();
            let got = way(&file, len);
            let mbps = len as f64 / t.elapsed().as_secs_f64() / 1e6;
            if *name != "hot" {
                assert_eq!(got, want, "{name} hashed other bytes");
            }
            results[i].push(mbps);
            line += &format!(" {name} {mbps:.0} MB/s,");
        }
        println!("{}", line.trim_end_matches(','));
    }
    for (i, (name, _)) in ways.iter().enumerate() {
        let mut r = results[i].clone();
        r.sort_by(f64::total_cmp);
        println!("{name:>13}: median {:.0} MB/s", r[r.len() / 2]);
    }
}

/// The same 1 MiB over and over, `len` bytes in all (a digest of other
/// bytes: not compared).
fn hot(file: &std::fs::File, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; PIECE];
    file.read_exact_at(&mut buf, 0).expect("read");
    let mut h = Sha256AsPrefix::default();
    for _ in 0..len / PIECE {
        h.update(&buf, false);
    }
    h.finish()
}

fn pread(file: &std::fs::File, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; PIECE];
    let mut h = Sha256AsPrefix::default();
    for off in (0..len).step_by(PIECE) {
        let n = PIECE.min(len - off);
        file.read_exact_at(&mut buf[..n], off as u64).expect("read");
        h.update(&buf[..n], false);
    }
    h.finish()
}

fn mapped(file: &std::fs::File, len: usize, streaming: bool) -> Vec<u8> {
    let mut h = Sha256AsPrefix::default();
    for off in (0..len).step_by(WINDOW) {
        let n = WINDOW.min(len - off);
        // SAFETY: a temp file this program wrote and nobody changes.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(off as u64)
                .len(n)
                .map(file)
        }
        .expect("map");
        h.update(&map, streaming);
    }
    h.finish()
}
