//! cache-http (being written).
//!
//! - [`endpoint`]: protocol-pure building blocks of the local HTTP endpoint
//!   (Range parsing, multipart/byteranges framing, safe mirror paths, ETags,
//!   Prometheus metrics). No I/O; the hyper server is assembled from them.

pub mod endpoint;
