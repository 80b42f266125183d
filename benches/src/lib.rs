//! Support code shared by the criterion benches in `benches/benches/`:
//! deterministic test data, a gated [`Source`](cache_core::Source) that
//! releases chunks on command, an in-process loopback HTTP origin with
//! a minimal range-reading source over it, and the model of the userspace
//! WAN link that `wan.sh` downloads through ([`wan`]).
//!
//! Every bench shrinks its inputs when it is not run by `cargo bench`
//! (criterion's test mode, e.g. under `cargo test --all-targets`), so CI
//! only checks that the benches work; see [`full_run`].

pub mod gated;
pub mod origin;
pub mod wan;

use std::time::Duration;

/// Criterion warm-up time of every bench (the bench machine is shared).
pub const WARM_UP: Duration = Duration::from_secs(1);
/// Criterion measurement time of every bench.
pub const MEASURE: Duration = Duration::from_secs(3);

/// True when the bench binary runs as a benchmark (`cargo bench` passes
/// `--bench`); false in test mode, where each bench runs once on small data.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The value after command-line flag `name` (`--size 64`), else `default`
/// (for the examples, which take a few numeric flags).
pub fn arg(name: &str, default: usize) -> usize {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value after `name` on the command line, if any.
pub fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `full` in a real run, `quick` in test mode.
pub fn size(full: u64, quick: u64) -> u64 {
    if full_run() {
        full
    } else {
        quick
    }
}

/// Deterministic, incompressible-looking bytes (xorshift64*), fast to make.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The runtime the benches drive the store with: 2 workers, like the
/// machine's 2 cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Percentiles (p50, p90, p99, max) of `samples`, sorted in place.
pub fn percentiles(samples: &mut [Duration]) -> Option<[Duration; 4]> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Some([at(0.5), at(0.9), at(0.99), samples[samples.len() - 1]])
}

/// Human-readable bytes (KiB/MiB/GiB).
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// A temp directory under `$BENCH_TMPDIR`, else the system temp dir (which
/// is on the root ext4 file system on the bench machine, not tmpfs).
pub fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_TMPDIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir")
}

/// Rounds of the interleaved pass some benches add after their criterion
/// groups: `$BENCH_ROUNDS` (default 0 = no interleaved pass).
pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `run(i)` for every variant `i` of `labels`, one after another, for
/// `rounds` rounds — so noise from other work on the machine spreads over
/// all variants instead of hitting one — and prints each variant's median
/// and minimum time and the median throughput for `bytes` per run.
/// Returns the medians.
pub fn interleaved(
    name: &str,
    labels: &[String],
    bytes: u64,
    rounds: usize,
    mut run: impl FnMut(usize) -> Duration,
) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(rounds); labels.len()];
    for _ in 0..rounds {
        for (i, t) in times.iter_mut().enumerate() {
            t.push(run(i));
        }
    }
    let mut medians = Vec::new();
    for (label, t) in labels.iter().zip(&mut times) {
        let Some([p50, ..]) = percentiles(t) else {
            continue;
        };
        let mib_s = bytes as f64 / p50.as_secs_f64() / f64::from(1 << 20);
        println!(
            "{name}/{label} interleaved x{rounds}: median {p50:.2?} ({mib_s:.0} MiB/s), min {:.2?}",
            t[0]
        );
        medians.push(p50);
    }
    medians
}
