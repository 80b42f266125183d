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
/// 16 add 1.5-3 % for twice the origin's connections. On loopback 8 cost
/// ~10 % against 4 (CPU), a price paid for the downloads this is for: far
/// origins with per-connection limits.
pub const DEFAULT_CONNECTIONS: usize = 8;
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
}

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            connections: DEFAULT_CONNECTIONS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            readahead_chunks: DEFAULT_READAHEAD_CHUNKS,
            policy: FillPolicy::Eager,
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
