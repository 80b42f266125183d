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
//! - [`server`]: [`Endpoint`], [`EndpointConfig`], binding, the accept loop,
//!   hardening and graceful shutdown.
//! - `routes`, `serve_object`: the routes (see [`server`]'s docs for the
//!   list), range serving of partial objects.
//! - [`shared_tier`]: the hook of a shared tier (`serve --shared`):
//!   [`ServeTier`], joined to mirror fills, published to in the background.
//! - [`live`]: the status page `/`, its event stream `/events` and
//!   `/status` (schema in its docs).

pub mod access;
pub mod etag;
pub mod manifest;
pub mod metrics;
pub mod mirror_path;
pub mod multipart;
pub mod range;
pub mod server;
pub mod shared_tier;

mod housekeeping;
pub mod live;
mod metered;
mod routes;
mod serve_object;
mod status;

pub use access::AccessLogFormat;
pub use serve_object::{Body, BodyError};
pub use server::{
    BoundEndpoint, Endpoint, EndpointConfig, EndpointError, Listener, MirrorConfig, MirrorReloader,
    MirrorSourceFactory,
};
pub use shared_tier::{ServeTier, TierFill};
