//! What a fill is asked to do: the options a caller sets
//! ([`FillOptions`], [`FillPolicy`]) and the plan an object keeps once a
//! fill is wanted (`FillPlan`: where from, which version, how), so that a
//! take-over or a reader's demand can start the fill again. Plain data: the
//! object keeps it, the filler runs it; neither module owns the other.

use std::sync::Arc;

use crate::source::{Source, SourceInfo};

/// How much of an object a fill downloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FillPolicy {
    /// Everything, demanded chunks first (the default).
    #[default]
    Eager,
    /// Only the chunks readers demand, plus read-ahead after each.
    Lazy,
}

/// Default number of concurrent range requests of one fill.
///
/// 8, from `benches/wan.sh` (RTT 40 ms, 20 MB/s per connection, 100 MB/s
/// link; BENCHMARKS.md): 4 connections cap a fill at 4 x the per-connection
/// rate (~75 MB/s there), 8 reach 0.91 x the link (as aria2c -x16 does),
/// 16 add 1.5-3 % for twice the origin's connections. A fill opens them
/// all only once the origin shows it is not fast
/// ([`FillOptions::fast_origin_connections`]).
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Default [`FillOptions::fast_origin_rate`]: 100 MB/s per connection,
/// far above what a connection through a WAN gets (20-60 MB/s in
/// `benches/wan.sh` and typical CDNs), far below what one from this host
/// or a fast LAN gets (~440 MB/s each of two from a loopback nginx).
pub const DEFAULT_FAST_ORIGIN_RATE: u64 = 100_000_000;

/// Default [`FillOptions::fast_origin_connections`]: one per CPU core, at
/// least 2, at most [`DEFAULT_CONNECTIONS`].
pub fn default_fast_origin_connections() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, DEFAULT_CONNECTIONS)
}
/// Default upper bound of one merged range request.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 << 20;
/// Default number of chunks fetched after a demanded one.
pub const DEFAULT_READAHEAD_CHUNKS: u32 = 4;

/// How a fill runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillOptions {
    /// Range requests kept in flight (a demanded chunk may use one more).
    /// With 2 or more, a request in its last stretch lets its successor
    /// start on another connection, so that the successor's first byte
    /// follows the end of its body without a round trip between: up to
    /// twice this many connections are open for a moment. 1 means one
    /// request at a time.
    pub connections: usize,
    /// Adjacent missing chunks are merged into one request up to this size.
    pub max_request_bytes: u64,
    /// Chunks requested after each demanded chunk, in the same request.
    pub readahead_chunks: u32,
    /// Eager (everything, demand first) or lazy (demand only).
    pub policy: FillPolicy,
    /// Range requests kept in flight (at most `connections`) while the
    /// origin is fast: while every window of the fill (50 ms) brings at
    /// least [`FillOptions::fast_origin_rate`] per request in flight. From
    /// the first window that does not, the fill keeps `connections`.
    ///
    /// A fast origin (this host, a fast LAN) makes a fill CPU-bound, and
    /// requests beyond the cores only take turns on them: from a loopback
    /// nginx on 2 vCPUs, 1 GiB fetched and synced ran at 879 MB/s with 2
    /// requests, 825 with 4 and 813 with 8 (7 rounds, BENCHMARKS.md).
    /// A far origin shows itself in the first window (its first byte
    /// takes a round trip or more), which costs a fill through a WAN
    /// 50 ms of fewer connections.
    pub fast_origin_connections: usize,
    /// Bytes per second per request in flight that count as a fast
    /// origin (see [`FillOptions::fast_origin_connections`]); 0 keeps
    /// `fast_origin_connections` for the whole fill.
    pub fast_origin_rate: u64,
}

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            connections: DEFAULT_CONNECTIONS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            readahead_chunks: DEFAULT_READAHEAD_CHUNKS,
            policy: FillPolicy::Eager,
            fast_origin_connections: default_fast_origin_connections(),
            fast_origin_rate: DEFAULT_FAST_ORIGIN_RATE,
        }
    }
}

/// Everything a fill needs to start: where from, which version, how.
#[derive(Clone)]
pub(crate) struct FillPlan {
    /// The origin: names the object, asked last.
    pub(crate) source: Arc<dyn Source>,
    /// Asked before the origin, in order (a [`crate::SourceChain`]'s).
    pub(crate) alternates: Vec<Arc<dyn Source>>,
    /// Stall bound of an alternate.
    pub(crate) stall: std::time::Duration,
    pub(crate) info: SourceInfo,
    pub(crate) options: FillOptions,
    /// Sequential digests computed over the completed prefix as it grows
    /// (SHA-256 always; SHA-512 when a request expects it).
    pub(crate) digests: Vec<crate::digest::Algo>,
    /// The BLAKE3 root the request that started the fill expects: a
    /// manifest that proves it lets every chunk be checked before commit.
    /// An expectation, not a name: a wrong one only finds no manifest.
    pub(crate) expected_root: Option<blake3::Hash>,
}
