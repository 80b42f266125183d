//! cache-http: HTTP for blockcache.
//!
//! * [`source`]: [`HttpSource`], the upstream side — a strict HTTP Range
//!   client implementing [`cache_core::Source`] (TLS, HTTP/2, proxies,
//!   redirects, retries, validation of every response against the version
//!   the fill started with).
//!
//! The local endpoint (hyper server serving partial objects) lives beside it.

#![warn(missing_docs)]

pub mod source;

pub use source::{
    parse_content_range, ContentRange, ContentRangeError, HttpSource, HttpSourceConfig,
    HttpSourceError, ProxyConfig,
};
