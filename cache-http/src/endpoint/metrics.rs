//! A tiny Prometheus registry rendering the text exposition format 0.0.4,
//! without extra dependencies.
//!
//! The set of metrics is fixed, so a struct of atomics beats a generic
//! registry: recording is one relaxed atomic add on the hot path (every
//! served chunk), and there is nothing to register or look up.
//!
//! ```
//! use cache_http::endpoint::metrics::Metrics;
//! use std::time::Duration;
//!
//! let m = Metrics::new();
//! m.bytes_served_total.add(4096);
//! m.hits_total.inc();
//! {
//!     let _fill = m.active_fills.track(); // +1 until dropped
//!     m.chunk_fetch_seconds.observe(Duration::from_millis(30));
//! }
//! let text = m.render();
//! assert!(text.contains("blockcache_bytes_served_total 4096\n"));
//! assert!(text.contains("blockcache_chunk_fetch_seconds_bucket{le=\"0.05\"} 1\n"));
//! assert!(text.contains("blockcache_active_fills 0\n"));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` to serve [`Metrics::render`] with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        // Relaxed: metrics need no ordering with other memory operations.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Increments now and decrements when the guard drops, so an early
    /// return or a panic in a fill cannot leave the gauge too high.
    pub fn track(&self) -> GaugeGuard<'_> {
        self.inc();
        GaugeGuard(self)
    }
}

/// Decrements its [`Gauge`] on drop; see [`Gauge::track`].
#[derive(Debug)]
#[must_use = "the gauge is decremented as soon as the guard is dropped"]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Upper bounds (seconds) of [`Histogram`] buckets for chunk fetches: from
/// a loopback hit (~1 ms) to a stalled upstream (a minute).
pub const CHUNK_FETCH_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

const NBUCKETS: usize = CHUNK_FETCH_BUCKETS.len() + 1; // + the +Inf bucket

/// A histogram of durations with the fixed [`CHUNK_FETCH_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last is the +Inf overflow bucket.
    buckets: [AtomicU64; NBUCKETS],
    /// Sum of observations in nanoseconds: an integer atomic add is exact and
    /// lock-free, unlike a CAS loop on f64 bits. (u64 ns overflows after
    /// 584 years of accumulated fetch time.)
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = CHUNK_FETCH_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(NBUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// All metrics of a blockcache process. Share it as `Arc<Metrics>` (or a
/// `static`): every method takes `&self`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes sent to clients of the endpoint (bodies only).
    pub bytes_served_total: Counter,
    /// Bytes received from upstream sources.
    pub upstream_bytes_total: Counter,
    /// Requests served from already-complete chunks.
    pub hits_total: Counter,
    /// Requests that needed at least one chunk fetched.
    pub misses_total: Counter,
    /// Requests that attached to a fill already in progress instead of
    /// starting their own download.
    pub coalesced_requests_total: Counter,
    /// Fills running now.
    pub active_fills: Gauge,
    /// Time to fetch one chunk from upstream.
    pub chunk_fetch_seconds: Histogram,
}

fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// All metrics at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renders every metric in the Prometheus text exposition format
    /// (serve with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let counters = [
            (
                "blockcache_bytes_served_total",
                "Bytes of object data sent to endpoint clients.",
                &self.bytes_served_total,
            ),
            (
                "blockcache_upstream_bytes_total",
                "Bytes received from upstream sources.",
                &self.upstream_bytes_total,
            ),
            (
                "blockcache_hits_total",
                "Requests served entirely from complete chunks.",
                &self.hits_total,
            ),
            (
                "blockcache_misses_total",
                "Requests that needed chunks fetched from upstream.",
                &self.misses_total,
            ),
            (
                "blockcache_coalesced_requests_total",
                "Requests that attached to a fill already in progress.",
                &self.coalesced_requests_total,
            ),
        ];
        for (name, help, c) in counters {
            write_header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.get());
        }

        // Kept by cache-core (the filler refuses the chunk there).
        let name = "blockcache_chunk_verify_failures_total";
        write_header(
            &mut out,
            name,
            "counter",
            "Chunks refused because they did not match the trusted manifest (fetched again elsewhere).",
        );
        let _ = writeln!(out, "{name} {}", cache_core::chunk_verify_failures());

        let name = "blockcache_active_fills";
        write_header(&mut out, name, "gauge", "Object fills running now.");
        let _ = writeln!(out, "{name} {}", self.active_fills.get());

        let name = "blockcache_chunk_fetch_seconds";
        let h = &self.chunk_fetch_seconds;
        write_header(
            &mut out,
            name,
            "histogram",
            "Time to fetch one chunk from upstream.",
        );
        // Load each bucket once and derive _count from the same snapshot, so
        // the output is self-consistent (+Inf == _count, buckets monotone)
        // even while observations race with the scrape.
        let mut cumulative = 0u64;
        for (i, b) in h.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match CHUNK_FETCH_BUCKETS.get(i) {
                // `{:?}` prints floats with a decimal point ("1.0"), which is
                // the conventional Prometheus spelling of `le`.
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le:?}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {:?}", h.sum_seconds());
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Checks the exposition format strictly enough to catch real mistakes:
    /// every sample has a preceding `# TYPE` for its family, names are valid,
    /// values parse, histogram buckets are cumulative and +Inf == _count.
    /// Returns sample name (with labels) → value.
    fn validate(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with('\n'));
        let valid_name = |n: &str| {
            let mut c = n.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps = 0;
        let mut samples = HashMap::new();
        let mut last_bucket: Option<f64> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, help) = rest.split_once(' ').unwrap();
                assert!(valid_name(n) && !help.is_empty());
                helps += 1;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                assert!(valid_name(n));
                assert!(["counter", "gauge", "histogram"].contains(&t));
                assert!(
                    types.insert(n.to_string(), t.to_string()).is_none(),
                    "dup TYPE {n}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let base = series.split('{').next().unwrap();
            assert!(valid_name(base), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    base.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(base);
            let ty = types
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE before {line}"));
            if ty == "counter" {
                assert!(family.ends_with("_total") && v >= 0.0);
            }
            if base.ends_with("_bucket") {
                let le = series
                    .strip_prefix(&format!("{base}{{le=\""))
                    .unwrap()
                    .strip_suffix("\"}")
                    .unwrap();
                assert!(le == "+Inf" || le.parse::<f64>().is_ok());
                assert!(last_bucket.is_none_or(|p| p <= v), "buckets not cumulative");
                last_bucket = Some(v);
            }
            assert!(
                samples.insert(series.to_string(), v).is_none(),
                "dup {series}"
            );
        }
        assert_eq!(helps, types.len());
        samples
    }

    #[test]
    fn empty_registry_is_valid() {
        let s = validate(&Metrics::new().render());
        assert_eq!(s["blockcache_hits_total"], 0.0);
        assert_eq!(s["blockcache_chunk_fetch_seconds_count"], 0.0);
        assert_eq!(s["blockcache_chunk_fetch_seconds_bucket{le=\"+Inf\"}"], 0.0);
        assert!(s.contains_key("blockcache_chunk_verify_failures_total"));
        assert_eq!(s.len(), 6 + 1 + NBUCKETS + 2);
    }

    #[test]
    fn values_and_buckets() {
        let m = Metrics::new();
        m.bytes_served_total.add(10);
        m.bytes_served_total.add(5);
        m.upstream_bytes_total.add(7);
        m.hits_total.inc();
        m.misses_total.inc();
        m.misses_total.inc();
        m.coalesced_requests_total.inc();
        m.active_fills.set(3);
        m.active_fills.dec();
        {
            let _g = m.active_fills.track();
            assert_eq!(m.active_fills.get(), 3);
        }
        let h = &m.chunk_fetch_seconds;
        h.observe(Duration::from_micros(500)); // ≤ 0.001
        h.observe(Duration::from_millis(1)); // exactly on a bound: le is inclusive
        h.observe(Duration::from_millis(200)); // ≤ 0.25
        h.observe(Duration::from_secs(120)); // +Inf only
        let s = validate(&m.render());
        assert_eq!(s["blockcache_bytes_served_total"], 15.0);
        assert_eq!(s["blockcache_upstream_bytes_total"], 7.0);
        assert_eq!(s["blockcache_misses_total"], 2.0);
        assert_eq!(s["blockcache_coalesced_requests_total"], 1.0);
        assert_eq!(s["blockcache_active_fills"], 2.0);
        let b = |le: &str| s[&format!("blockcache_chunk_fetch_seconds_bucket{{le=\"{le}\"}}")];
        assert_eq!(b("0.001"), 2.0);
        assert_eq!(b("0.1"), 2.0);
        assert_eq!(b("0.25"), 3.0);
        assert_eq!(b("60.0"), 3.0);
        assert_eq!(b("+Inf"), 4.0);
        assert_eq!(s["blockcache_chunk_fetch_seconds_count"], 4.0);
        assert!((s["blockcache_chunk_fetch_seconds_sum"] - 120.2015).abs() < 1e-9);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn concurrent_recording() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        m.bytes_served_total.add(2);
                        let _g = m.active_fills.track();
                        m.chunk_fetch_seconds.observe(Duration::from_micros(i));
                        if i % 1000 == 0 {
                            validate(&m.render());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.bytes_served_total.get(), 80_000);
        assert_eq!(m.active_fills.get(), 0);
        assert_eq!(m.chunk_fetch_seconds.count(), 40_000);
    }
}
