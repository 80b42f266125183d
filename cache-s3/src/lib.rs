//! cache-s3: the shared S3 tier of blockcache.
//!
//! A fleet (CI runners, a lab, an office behind one slow link) shares one
//! S3-compatible bucket (AWS S3, R2, Ceph RGW, MinIO, SeaweedFS, Garage):
//! the first node that misses an image downloads it from the origin and
//! publishes it; the others read it from the bucket. Nothing in the bucket
//! is trusted: every chunk read from it is checked against the object's
//! [`Manifest`](cache_core::Manifest), whose chunk values must merge to the
//! object's BLAKE3 name, before it reaches the store (design invariant 1).
//!
//! A separate crate because the S3 client (`object_store` with its AWS
//! support, reqwest and XML) is big: `cache-core` and `cache-http` build
//! and test without it, and only the command (`cache-cli`) links it.
//!
//! ## Bucket layout
//!
//! Under `s3://BUCKET/PREFIX/` (the prefix may be empty):
//!
//! | key | content | written |
//! | --- | --- | --- |
//! | `b3/<hex>` | the object, its BLAKE3 root in lower-case hex | multipart upload, after the root was verified locally |
//! | `b3/<hex>.manifest` | its [manifest](cache_core::manifest) (chunk CVs) | after the object |
//! | `src/<id>` | [pointer](Pointer): JSON `{"format":1,"blake3":…,"len":…,"validator":…}` | last: its presence means the two above are complete |
//! | `lease/<id>`, `lease/<id>.<n>` | [lease]: JSON `{"holder":…,"expires_unix_ms":…}` | create-only (`If-None-Match: *`), renewed by its holder, deleted after publishing |
//!
//! `<id>` is the lower-case hex SHA-256 of the source identity: the URL as
//! the fetch names it (no `user:password@`; no query with
//! `--ignore-query`), a newline, and the origin's validator (strong ETag or
//! Last-Modified with length). So a pointer names exactly one version of
//! one URL, and a URL whose content changed gets a new pointer. An origin
//! without a validator gets neither pointer nor lease (nothing would tie
//! the bucket's object to the version the origin serves).
//!
//! Lease keys `lease/<id>.<n>` are the *n*-th takeover: when the holder of
//! `lease/<id>` stops renewing it (killed), the waiting nodes race to
//! create `lease/<id>.1` (create-only: one wins), and so on.
//!
//! ## Trust
//!
//! * With `--blake3 H` the caller names the object: `b3/<H>`'s manifest
//!   must merge to `H`, and every chunk is checked against it.
//! * Without it, the pointer for (URL, validator) names the root. The
//!   manifest must still merge to that root and every chunk is checked, so
//!   a damaged or tampered object is caught at its chunk; but a pointer
//!   written by a node that lies (names another image) is trusted as far
//!   as the bucket's write permissions go — like a parent cache asked by
//!   URL. Pass `--blake3` (or a SHA-256 the publisher signed) where that
//!   matters.
//!
//! ## Failure
//!
//! Every S3 error (down, 403, 404 after a lifecycle deletion, truncated
//! body, a chunk that does not match) makes the fill fall back to the next
//! source (the origin at the end); it is logged and counted
//! ([`shared_errors`]), never fatal to a fetch.
//!
//! Down is not the only way a bucket fails: one that accepts connections
//! and never answers would hold each request for the client's
//! whole-request time-out (minutes). So every request outside the object's
//! bytes has its own bound, [`SharedOptions::answer_timeout`] (20 s, plus a
//! second per MB it carries); the object's bytes have the fill's stall
//! bound.

#![deny(missing_docs)]

mod fill;
mod layout;
pub mod lease;
mod publish;
mod source;
mod tier;

pub use fill::{Lease, SharedFill};
pub use layout::{source_id, Pointer};
pub use lease::{Claim, LeaseGuard, WaitOutcome};
pub use publish::Published;
pub use source::S3Source;
pub use tier::{
    shared_errors, shared_read_bytes, SharedError, SharedOptions, SharedTier,
    DEFAULT_ANSWER_TIMEOUT,
};
