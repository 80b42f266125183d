//! Where bytes come from: the [`Source`] trait.
//!
//! cache-core knows nothing of HTTP. A fill asks its source two things:
//! [`Source::probe`] (how long is the object, which version is it, can it
//! serve ranges) and [`Source::read_range`] (a stream of the bytes of one
//! range). `cache-http` implements it over HTTP; tests implement it in memory.
//!
//! A source must guarantee invariant 2 of the design: every body it returns
//! belongs to the version described by the `expect` [`SourceInfo`] it was
//! given, or it fails with [`SourceErrorKind::Changed`].
//!
//! A source may also offer [`Source::direct`]: range bodies that move
//! themselves into the object's data file without passing through user
//! space ([`DirectBody`]; `cache-http` uses Linux `splice` for plain-HTTP
//! origins). On two cores a fill that copies every byte through a buffer
//! is bound by the CPU, not the disk (BENCHMARKS.md, fill at the disk's
//! speed). The fill then hashes each chunk from the file, so invariant 1
//! holds as before: a chunk is visible only once its bytes are in the
//! file and its chaining value was computed from them.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::manifest::Manifest;

/// What a source says about an object before any byte is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Total length of the object in bytes.
    pub len: u64,
    /// Opaque version tag of the upstream object: a strong ETag, or a
    /// Last-Modified date combined with the length. Two responses belong to
    /// the same version exactly when their validators are equal. Empty when
    /// the source has none (such objects cannot be resumed safely across
    /// runs and are refetched from scratch).
    pub validator: String,
    /// Whether the source can serve byte ranges. When false the fill uses a
    /// single stream from offset 0.
    pub ranges: bool,
}

/// The body of one range read.
pub struct RangeBody {
    /// The bytes of the object this body covers. Usually the range that was
    /// asked for; a source that ignored a range request and sent the whole
    /// object reports `0..len` here, and the filler then commits every chunk
    /// the body passes.
    pub range: Range<u64>,
    /// The bytes, in order, exactly `range.end - range.start` of them.
    pub stream: BoxStream<'static, Result<Bytes, SourceError>>,
}

impl fmt::Debug for RangeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeBody")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Range bodies that move into a file in the kernel (see the module docs).
pub trait DirectRanges: Send + Sync {
    /// Asks for `range` of the version `expect` (blocking: the fill calls
    /// it on a blocking thread). `None` when the answer is anything but
    /// exactly that range, or the request fails: the fill then asks
    /// [`Source::read_range`], which retries, follows redirects and reports
    /// errors. The body must hold exactly the bytes of `range`.
    fn open(&self, range: Range<u64>, expect: &SourceInfo) -> Option<Box<dyn DirectBody>>;
}

/// One body of [`DirectRanges::open`], in order.
pub trait DirectBody: Send {
    /// Moves the next `len` bytes of the body into `file` at `offset`
    /// (blocking).
    fn move_into(&mut self, file: &std::fs::File, offset: u64, len: usize)
        -> Result<(), MoveError>;
}

/// Why [`DirectBody::move_into`] stopped.
#[derive(Debug)]
pub enum MoveError {
    /// The body broke (closed early, stalled, reset): the fill asks
    /// [`Source::read_range`] for the rest.
    Source(SourceError),
    /// Writing the file failed (a full disk): the fill fails, as with any
    /// write of the data file.
    Write(std::io::Error),
}

/// A place bytes of an object come from (an HTTP URL, a file, a test double).
pub trait Source: Send + Sync + 'static {
    /// Stable identity of the upstream object, e.g. its URL. Together with
    /// the validator and the length it forms the key of the object while its
    /// BLAKE3 hash is unknown.
    fn identity(&self) -> String;

    /// Learns length, validator and range support.
    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>>;

    /// Reads `range` of the version described by `expect`.
    ///
    /// The source validates every response against `expect` (same validator,
    /// same length) and fails with [`SourceErrorKind::Changed`] otherwise.
    /// Retrying transient faults (resets, time-outs) is the source's job; an
    /// error returned here or yielded by the stream ends the request.
    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>>;

    /// The object's [`Manifest`], when this source has one (a parent cache
    /// with the complete object, a shared bucket). Not trusted as such: the
    /// fill uses it only when its chunk values merge to the BLAKE3 root the
    /// caller expects. Default: none (an origin has no manifest).
    fn manifest(&self) -> BoxFuture<'_, Result<Option<Manifest>, SourceError>> {
        Box::pin(async { Ok(None) })
    }

    /// Range bodies that move into the data file in the kernel, when this
    /// source has them (see the module docs). Asked for origins only.
    /// Default: none.
    fn direct(&self) -> Option<&dyn DirectRanges> {
        None
    }
}

/// What went wrong at the source, in terms a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The upstream object is not the version this fill started with.
    Changed,
    /// The upstream object does not exist (e.g. HTTP 404/410).
    NotFound,
    /// The source refused us (e.g. HTTP 401/403 after re-resolving).
    Denied,
    /// The source cannot serve this range (e.g. answered a range request at
    /// a non-zero offset with the whole body). The filler falls back to one
    /// full stream from offset 0.
    RangesUnsupported,
    /// The source broke the protocol (wrong Content-Range, short body...)
    /// and retries did not help.
    Protocol,
    /// Network failure (connect, reset, time-out) that retries did not cure.
    Network,
    /// Anything else.
    Other,
}

/// An error from a [`Source`]; the message names the URL, the cause and
/// the byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// What kind of failure: decides retrying, falling back, exit codes.
    pub kind: SourceErrorKind,
    /// One line for people: the URL, the cause, the byte range.
    pub message: String,
}

impl SourceError {
    /// An error of `kind` with `message`.
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SourceErrorKind::Changed => write!(f, "source changed: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SourceError {}
