//! Times the ways of opening one real chunk index (e.g. a copy of a big
//! partial object's `index` and `index.snap`, as `benches/big_object.sh`
//! makes): what `ls`, readers and followers do (`IndexReader::open`,
//! snapshot + the records after it), what a filler does when it takes the
//! lease (`IndexWriter::open_replayed`: state and every chunk's CV), and
//! `index::read_cvs` (a complete object's manifest).
//!
//! ```text
//! cargo run --release -p benches --example index_open -- PATH [--runs N]
//! ```
//!
//! `open_replayed` opens for writing (it may cut a torn tail or remove an
//! untrusted snapshot): give it a copy. Prints the median and minimum wall
//! time and the mean CPU time (user + system) of N runs (default 9) of
//! each, page cache hot (one untimed run first). On a loaded machine the
//! CPU time is the steadier figure.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cache_core::index::{read_cvs, IndexReader, IndexWriter};

/// CPU time (user + system) of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Median and minimum wall time, and mean CPU time, of `runs` calls.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    f();
    let c0 = cpu();
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    let c = (cpu() - c0) / runs as u32;
    t.sort();
    (t[t.len() / 2], t[0], c)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
    else {
        eprintln!("usage: index_open PATH [--runs N]");
        std::process::exit(2);
    };
    let runs = benches::arg("--runs", 9).max(1);
    let log_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (_, header, state) = IndexReader::open(&path).expect("open index");
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).expect("open_replayed");
    assert_eq!(
        replayed.state, state,
        "snapshot + tail and a full replay disagree"
    );
    println!(
        "{}: {} chunks of {} KiB, {} done, log {} records ({:.1} MiB), snapshot {}",
        path.display(),
        header.chunk_count(),
        header.chunk_size >> 10,
        state.done.len(),
        rec.records,
        log_len as f64 / (1 << 20) as f64,
        if snapshot_exists(&path) {
            "present"
        } else {
            "absent"
        },
    );
    let report = |what: &str, (med, min, cpu): (Duration, Duration, Duration)| {
        println!(
            "{what:<28} median {:>8.3} ms, min {:>8.3} ms, CPU {:>8.3} ms",
            med.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3
        );
    };
    report(
        "IndexReader::open",
        time(runs, || {
            IndexReader::open(&path).expect("open");
        }),
    );
    report(
        "IndexWriter::open_replayed",
        time(runs, || {
            IndexWriter::open_replayed(&path).expect("open_replayed");
        }),
    );
    report(
        "index::read_cvs",
        time(runs, || {
            read_cvs(&path).expect("read_cvs");
        }),
    );
}

fn snapshot_exists(index: &std::path::Path) -> bool {
    let mut s = index.as_os_str().to_owned();
    s.push(".snap");
    PathBuf::from(s).exists()
}
