//! cache-http: HTTP for blockcache.
//!
//! * [`source`]: [`HttpSource`], the upstream side — a strict HTTP Range
//!   client implementing [`cache_core::Source`] (TLS, HTTP/2, proxies,
//!   redirects, retries, validation of every response against the version
//!   the fill started with).
//! * [`endpoint`]: the local side — the hyper server
//!   ([`endpoint::Endpoint`]) that serves objects by BLAKE3 hash and as
//!   pull-through mirrors, partial ones included, plus its building blocks
//!   (Range parsing, multipart/byteranges framing, safe mirror paths,
//!   ETags, Prometheus metrics).

#![deny(missing_docs)]

pub mod endpoint;
pub mod source;

pub use source::credentials::{BasicAuth, Netrc, NetrcError};
pub use source::{
    parse_content_range, source_factory, ContentRange, ContentRangeError, HttpSource,
    HttpSourceConfig, HttpSourceError, ParentSource, ProxyConfig,
};
