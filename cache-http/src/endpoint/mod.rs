//! Protocol-pure building blocks of the local HTTP endpoint.
//!
//! Everything here is synchronous, allocation-bounded and free of I/O so it
//! can be unit-tested, property-tested and fuzzed without a server. The hyper
//! server composes these pieces:
//!
//! - [`range`]: `Range` / `If-Range` evaluation (RFC 9110 §14, §13.1.5).
//! - [`multipart`]: `multipart/byteranges` framing with an exact
//!   `Content-Length` known before the first byte is sent.
//! - [`mirror_path`]: joining a request path onto a mirror base URL without
//!   ever escaping the base path.
//! - [`etag`]: ETag generation and `If-None-Match` evaluation.
//! - [`metrics`]: the Prometheus metrics (`prometheus-client`).
//! - [`access`]: the access log (one line per request, `tracing` target
//!   `blockcache::access`).
//!
//! and the server itself:
//!
//! - [`config`]: [`EndpointConfig`], [`MirrorConfig`]: plain data.
//! - [`server`]: [`Endpoint`], binding, the accept loop, hardening and
//!   graceful shutdown.
//! - `app`: the state every handler shares (store, mirrors, metrics, live
//!   hub, per-URL probe state); it depends on no handler.
//! - `routes` (the dispatch), `mirror` (the pull-through logic of `/m/`
//!   and `/u`), `serve_object` (range serving of partial objects),
//!   `manifest`, `housekeeping` (store gauges, size limit).
//! - `fast_path`: `/blobs/` single-range requests of complete objects
//!   answered without hyper (Linux), byte for byte as hyper would.
//! - `hot` (names resolved in the last seconds) and `meta` (an object's
//!   validators and header values, made once per entry).
//! - [`shared_tier`]: the hook of a shared tier (`serve --shared`):
//!   [`ServeTier`], joined to mirror fills, published to in the background.
//! - [`live`]: the status page `/`, its event stream `/events` and
//!   `/status` (schema in its docs).
//!
//! Dependencies go one way (no cycles):
//!
//! ```text
//! server → routes → mirror → serve_object → app → config, metrics, live, status
//!            │         └──→ housekeeping ──↗         (leaves: range, multipart,
//!            └──→ manifest, access ─────────↗          etag, mirror_path, response,
//!                                                       shared_tier, hot → meta → etag, range)
//! ```

pub mod access;
pub mod config;
pub mod etag;
pub mod manifest;
pub mod metrics;
pub mod mirror_path;
pub mod multipart;
pub mod range;
pub mod server;
pub mod shared_tier;

mod app;
mod conn_threads;
#[cfg(target_os = "linux")]
mod fast_path;
mod hot;
mod housekeeping;
pub mod live;
mod meta;
mod metered;
mod mirror;
mod response;
mod routes;
mod sendfile;
mod serve_object;
mod status;

pub use access::AccessLogFormat;
pub use response::{Body, BodyError};
pub use server::{
    BoundEndpoint, Endpoint, EndpointConfig, EndpointError, Listener, MirrorConfig, MirrorReloader,
    MirrorSourceFactory,
};
pub use shared_tier::{ServeTier, TierFill};
