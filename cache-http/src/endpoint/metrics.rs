//! The endpoint's Prometheus metrics, kept with the `prometheus-client`
//! crate (OpenMetrics text exposition at `/metrics`).
//!
//! Every value is kept live in memory: recording is an atomic add on the
//! hot path, and a scrape only encodes what is there. Store-wide values
//! (`blockcache_store_bytes`, `blockcache_store_objects`) are set by the
//! endpoint's housekeeping pass, never computed per scrape, so `/metrics`
//! costs the same with ten objects or ten thousand.
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `blockcache_http_requests_total` | counter | `mirror`, `status`, `result` |
//! | `blockcache_http_response_bytes_total` | counter | `mirror` |
//! | `blockcache_http_fast_path_requests_total` | counter | |
//! | `blockcache_http_request_duration_seconds` | histogram | |
//! | `blockcache_http_time_to_first_byte_seconds` | histogram | |
//! | `blockcache_upstream_requests_total` | counter | `mirror`, `status` |
//! | `blockcache_upstream_bytes_total` | counter | |
//! | `blockcache_upstream_retries_total` | counter | |
//! | `blockcache_fills_in_progress` | gauge | |
//! | `blockcache_store_bytes` | gauge | |
//! | `blockcache_store_objects` | gauge | `state` |
//! | `blockcache_evictions_total` | counter | |
//! | `blockcache_chunk_verify_failures_total` | counter | |
//! | `blockcache_shared_read_bytes_total` | counter | |
//! | `blockcache_shared_errors_total` | counter | |
//! | `blockcache_shared_publishes_total` | counter | |
//!
//! The `shared` counters are about the shared tier (`serve --shared`, see
//! [`shared_tier`](super::shared_tier)): verified object bytes read from
//! it, its errors (each one fell back to the next source), and objects
//! published to it. They stay 0 without a tier.
//!
//! `mirror` is the mirror's name (empty for `/blobs/` and the other
//! routes); `result` is the cache result of the access log (`hit`,
//! `partial`, `miss`, `coalesced`, `error`, or `none` for routes that serve
//! no object); the upstream `status` is `2xx` for an answered request, else
//! the kind of failure (`not_found`, `network`, `changed`, ...).
//!
//! ```
//! use cache_http::endpoint::metrics::Metrics;
//!
//! let m = Metrics::new();
//! m.request("images", 200, "miss", 4096);
//! let text = m.render();
//! assert!(text.contains(
//!     "blockcache_http_requests_total{mirror=\"images\",status=\"200\",result=\"miss\"} 1\n"
//! ));
//! assert!(text.contains("blockcache_http_response_bytes_total{mirror=\"images\"} 4096\n"));
//! ```

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::shared_tier::ServeTier;

/// The `Content-Type` to serve [`Metrics::render`] with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms: from a loopback hit
/// (~1 ms) to a multi-GiB download (an hour).
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
    3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mirror: Label,
    status: u16,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabel {
    mirror: Label,
}

/// A mirror name as a label: borrowed for `/blobs/` requests (no mirror),
/// so counting one allocates nothing (BENCHMARKS.md "Serving").
type Label = std::borrow::Cow<'static, str>;

fn mirror_label(mirror: &str) -> Label {
    if mirror.is_empty() {
        Label::Borrowed("")
    } else {
        Label::Owned(mirror.to_owned())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    mirror: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// All metrics of a serving process. Share it as `Arc<Metrics>`: every
/// method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    response_bytes: Family<MirrorLabel, Counter>,
    fast_path_requests: Counter,
    request_duration: Histogram,
    time_to_first_byte: Histogram,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_bytes: Counter,
    upstream_retries: Counter,
    fills_in_progress: Gauge,
    store_bytes: Gauge,
    store_objects: Family<StateLabel, Gauge>,
    evictions: Counter,
    chunk_verify_failures: Counter,
    shared_read_bytes: Counter,
    shared_errors: Counter,
    shared_publishes: Counter,
    /// Where the shared tier's own counters are read from.
    shared: SharedCounters,
}

/// The shared tier whose counters a scrape brings up to date.
#[derive(Default)]
struct SharedCounters(std::sync::OnceLock<Arc<dyn ServeTier>>);

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(t) => f.write_str(&t.describe()),
            None => f.write_str("none"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let response_bytes = Family::<MirrorLabel, Counter>::default();
        let fast_path_requests = Counter::default();
        let request_duration = Histogram::new(LATENCY_BUCKETS);
        let time_to_first_byte = Histogram::new(LATENCY_BUCKETS);
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        let upstream_bytes = Counter::default();
        let upstream_retries = Counter::default();
        let fills_in_progress = Gauge::default();
        let store_bytes = Gauge::default();
        let store_objects = Family::<StateLabel, Gauge>::default();
        let evictions = Counter::default();
        let chunk_verify_failures = Counter::default();
        let shared_read_bytes = Counter::default();
        let shared_errors = Counter::default();
        let shared_publishes = Counter::default();
        // Counters get their `_total` suffix from the crate.
        let r = &mut registry;
        r.register(
            "blockcache_http_requests",
            "Requests answered, by mirror, HTTP status and cache result",
            requests.clone(),
        );
        r.register(
            "blockcache_http_response_bytes",
            "Response body bytes sent to clients, by mirror",
            response_bytes.clone(),
        );
        r.register(
            "blockcache_http_fast_path_requests",
            "Requests answered without hyper (one range of a complete object by its /blobs/ name); also counted in blockcache_http_requests",
            fast_path_requests.clone(),
        );
        r.register(
            "blockcache_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            request_duration.clone(),
        );
        r.register(
            "blockcache_http_time_to_first_byte_seconds",
            "Time from a request's arrival to the first byte of its response body",
            time_to_first_byte.clone(),
        );
        r.register(
            "blockcache_upstream_requests",
            "Requests sent to origins (probes and range reads), by mirror and outcome",
            upstream_requests.clone(),
        );
        r.register(
            "blockcache_upstream_bytes",
            "Body bytes received from origins",
            upstream_bytes.clone(),
        );
        r.register(
            "blockcache_upstream_retries",
            "Upstream requests retried after a transient fault",
            upstream_retries.clone(),
        );
        r.register(
            "blockcache_fills_in_progress",
            "Object fills this process runs now",
            fills_in_progress.clone(),
        );
        r.register(
            "blockcache_store_bytes",
            "Disk bytes of the store's objects (as of the last housekeeping pass)",
            store_bytes.clone(),
        );
        r.register(
            "blockcache_store_objects",
            "Objects in the store by state (as of the last housekeeping pass)",
            store_objects.clone(),
        );
        r.register(
            "blockcache_evictions",
            "Objects evicted to keep the store under its size limit",
            evictions.clone(),
        );
        r.register(
            "blockcache_chunk_verify_failures",
            "Chunks refused because they did not match the trusted manifest (fetched again elsewhere)",
            chunk_verify_failures.clone(),
        );
        r.register(
            "blockcache_shared_read_bytes",
            "Verified object bytes read from the shared tier",
            shared_read_bytes.clone(),
        );
        r.register(
            "blockcache_shared_errors",
            "Shared tier errors (failed requests, refused records or chunks); each fell back to the next source",
            shared_errors.clone(),
        );
        r.register(
            "blockcache_shared_publishes",
            "Objects published to the shared tier after their root was verified here",
            shared_publishes.clone(),
        );
        Metrics {
            registry,
            requests,
            response_bytes,
            fast_path_requests,
            request_duration,
            time_to_first_byte,
            upstream_requests,
            upstream_bytes,
            upstream_retries,
            fills_in_progress,
            store_bytes,
            store_objects,
            evictions,
            chunk_verify_failures,
            shared_read_bytes,
            shared_errors,
            shared_publishes,
            shared: SharedCounters::default(),
        }
    }

    /// Reads the `shared` counters from `tier` on every scrape (the first
    /// tier attached stays).
    pub fn attach_shared(&self, tier: Arc<dyn ServeTier>) {
        let _ = self.shared.0.set(tier);
    }

    /// Counts one object published to the shared tier.
    pub fn shared_published(&self) {
        self.shared_publishes.inc();
    }

    /// Counts one request the fast path answered.
    pub fn fast_path_request(&self) {
        self.fast_path_requests.inc();
    }

    /// Records one answered request and the body bytes it sent.
    pub fn request(&self, mirror: &str, status: u16, result: &'static str, bytes: u64) {
        self.requests
            .get_or_create(&RequestLabels {
                mirror: mirror_label(mirror),
                status,
                result,
            })
            .inc();
        self.response_bytes
            .get_or_create(&MirrorLabel {
                mirror: mirror_label(mirror),
            })
            .inc_by(bytes);
    }

    /// Records a request's total time and its time to first byte.
    pub fn latency(&self, total: Duration, first_byte: Duration) {
        self.request_duration.observe(total.as_secs_f64());
        self.time_to_first_byte.observe(first_byte.as_secs_f64());
    }

    /// Records one upstream request of `mirror` with its outcome.
    pub fn upstream_request(&self, mirror: &str, status: &str) {
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                mirror: mirror.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// Adds body bytes received from an origin.
    pub fn upstream_bytes(&self, n: u64) {
        self.upstream_bytes.inc_by(n);
    }

    /// Sets the fills running now.
    pub fn set_fills_in_progress(&self, n: usize) {
        self.fills_in_progress
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the store's size and object counts by state.
    pub fn set_store(&self, bytes: u64, objects: &[(&'static str, usize)]) {
        self.store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        for (state, n) in objects {
            self.store_objects
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Counts evicted objects.
    pub fn evicted(&self, n: u64) {
        self.evictions.inc_by(n);
    }

    /// Brings the counters kept outside the endpoint up to date: retries
    /// of this process's HTTP sources ([`crate::source::retries_total`])
    /// and chunks the core's filler refused
    /// ([`cache_core::chunk_verify_failures`]); both count where the event
    /// happens, which knows nothing of the endpoint.
    fn sync_process_counters(&self) {
        let (read, errors) = self
            .shared
            .0
            .get()
            .map_or((0, 0), |t| (t.read_bytes(), t.errors()));
        for (counter, total) in [
            (&self.shared_read_bytes, read),
            (&self.shared_errors, errors),
            (&self.upstream_retries, crate::source::retries_total()),
            (
                &self.chunk_verify_failures,
                cache_core::chunk_verify_failures(),
            ),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// Encodes every metric in the OpenMetrics text format (serve with
    /// [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.sync_process_counters();
        let mut out = String::with_capacity(4096);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_move() {
        let m = Metrics::new();
        m.request("", 200, "hit", 10);
        m.request("", 200, "hit", 5);
        m.latency(Duration::from_millis(200), Duration::from_micros(500));
        m.upstream_request("img", "2xx");
        m.upstream_bytes(7);
        m.set_store(1000, &[("complete", 2), ("partial", 1)]);
        m.evicted(3);
        let s = m.render();
        for line in [
            "blockcache_http_requests_total{mirror=\"\",status=\"200\",result=\"hit\"} 2",
            "blockcache_http_response_bytes_total{mirror=\"\"} 15",
            "blockcache_http_request_duration_seconds_count 1",
            "blockcache_http_time_to_first_byte_seconds_bucket{le=\"0.001\"} 1",
            "blockcache_upstream_requests_total{mirror=\"img\",status=\"2xx\"} 1",
            "blockcache_upstream_bytes_total 7",
            "blockcache_store_bytes 1000",
            "blockcache_store_objects{state=\"partial\"} 1",
            "blockcache_evictions_total 3",
            "blockcache_fills_in_progress 0",
            "blockcache_shared_read_bytes_total 0",
            "blockcache_shared_publishes_total 0",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} missing in\n{s}");
        }
        assert!(s.ends_with("# EOF\n"));
    }

    /// A tier whose counters are fixed: what the scrape must show.
    struct FixedTier;

    impl ServeTier for FixedTier {
        fn describe(&self) -> String {
            "s3://fixed".into()
        }
        fn join<'a>(
            &'a self,
            chain: cache_core::SourceChain,
            _: &'a str,
            _: &'a cache_core::SourceInfo,
            _: bool,
        ) -> futures::future::BoxFuture<
            'a,
            (cache_core::SourceChain, Box<dyn super::super::TierFill>),
        > {
            unreachable!("not joined by a scrape: {chain:?}")
        }
        fn read_bytes(&self) -> u64 {
            4096
        }
        fn errors(&self) -> u64 {
            3
        }
    }

    #[test]
    fn shared_counters_come_from_the_attached_tier() {
        let m = Metrics::new();
        m.attach_shared(Arc::new(FixedTier));
        m.shared_published();
        let s = m.render();
        for line in [
            "blockcache_shared_read_bytes_total 4096",
            "blockcache_shared_errors_total 3",
            "blockcache_shared_publishes_total 1",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} missing in\n{s}");
        }
        // A second scrape does not add the tier's totals again.
        assert!(m
            .render()
            .lines()
            .any(|l| l == "blockcache_shared_errors_total 3"));
    }
}
