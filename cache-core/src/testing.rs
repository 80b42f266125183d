//! An in-memory [`Source`] for tests, examples and benchmarks.
//!
//! It serves a byte vector with configurable piece size and pacing, logs
//! every request, and can be told to misbehave the ways real origins do
//! (change version, ignore ranges, fail after some bytes).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::manifest::Manifest;
use crate::source::{RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};

/// How a [`MemorySource`] treats range requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeMode {
    /// Serves exactly the requested range.
    Honour,
    /// Sends the whole object for any request (like a server without range
    /// support that answers 200).
    WholeBody,
}

/// An in-memory source (see the module docs).
#[derive(Clone)]
pub struct MemorySource {
    inner: Arc<Inner>,
}

struct Inner {
    identity: String,
    bytes: Bytes,
    validator: Mutex<String>,
    piece: usize,
    delay: Duration,
    mode: RangeMode,
    requests: Mutex<Vec<Range<u64>>>,
    delivered: AtomicU64,
    /// Fail a body with a network error once this many bytes were sent.
    fail_after: AtomicU64,
    /// What [`Source::manifest`] offers.
    manifest: Option<Manifest>,
    /// Bodies not yet ended or dropped, and the most there ever were.
    open: AtomicU64,
    max_open: AtomicU64,
}

/// One open body (dropped with its stream).
struct OpenBody(Arc<Inner>);

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemorySource {
    /// Serves `bytes` as `identity` with validator `"mem-<hash>"`.
    pub fn new(identity: &str, bytes: impl Into<Bytes>) -> MemorySource {
        let bytes = bytes.into();
        let validator = format!("\"mem-{}\"", &blake3::hash(&bytes).to_hex()[..16]);
        MemorySource {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                bytes,
                validator: Mutex::new(validator),
                piece: 256 << 10,
                delay: Duration::ZERO,
                mode: RangeMode::Honour,
                requests: Mutex::new(Vec::new()),
                delivered: AtomicU64::new(0),
                fail_after: AtomicU64::new(u64::MAX),
                manifest: None,
                open: AtomicU64::new(0),
                max_open: AtomicU64::new(0),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> MemorySource {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("configure a MemorySource before sharing it"));
        f(&mut inner);
        MemorySource {
            inner: Arc::new(inner),
        }
    }

    /// Bodies arrive in pieces of `n` bytes (default 256 KiB).
    pub fn with_piece_size(self, n: usize) -> MemorySource {
        self.with(|i| i.piece = n.max(1))
    }

    /// Each piece of each body is delayed by `ms` milliseconds (a slow
    /// connection; concurrent requests are slow independently).
    pub fn with_piece_delay_ms(self, ms: u64) -> MemorySource {
        self.with(|i| i.delay = Duration::from_millis(ms))
    }

    /// How range requests are treated.
    pub fn with_range_mode(self, mode: RangeMode) -> MemorySource {
        self.with(|i| i.mode = mode)
    }

    /// The source offers `manifest` (true or not: a lying parent cache).
    pub fn with_manifest(self, manifest: Manifest) -> MemorySource {
        self.with(|i| i.manifest = Some(manifest))
    }

    /// The manifest of `bytes` in chunks of `chunk_size`, as a cache that
    /// holds them complete would offer it.
    pub fn manifest_of(bytes: &[u8], chunk_size: u32) -> Manifest {
        let len = bytes.len() as u64;
        let cs = chunk_size as usize;
        let n = crate::hash::chunk_count(len, chunk_size).unwrap_or(1);
        let cvs = (0..n)
            .map(|i| {
                let s = (i as usize * cs).min(bytes.len());
                let e = (s + cs).min(bytes.len());
                crate::hash::chunk_cv(&bytes[s..e], i, chunk_size, len)
            })
            .collect();
        Manifest::new(len, chunk_size, cvs).expect("CVs of the bytes fit their length")
    }

    /// From now on the source claims a different version.
    pub fn change_validator(&self, validator: &str) {
        *self.inner.validator.lock() = validator.to_owned();
    }

    /// Bodies fail with a network error once `n` bytes in total were sent.
    pub fn fail_after_bytes(&self, n: u64) {
        self.inner.fail_after.store(n, Ordering::SeqCst);
    }

    /// Every range requested so far, in order.
    pub fn requests(&self) -> Vec<Range<u64>> {
        self.inner.requests.lock().clone()
    }

    /// The most bodies that were open (requested, not yet ended or
    /// dropped) at once.
    pub fn max_open_bodies(&self) -> u64 {
        self.inner.max_open.load(Ordering::SeqCst)
    }

    /// Body bytes sent so far (all requests).
    pub fn bytes_delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::SeqCst)
    }

    /// How many times each chunk of `chunk_size` was requested.
    pub fn chunk_request_counts(&self, chunk_size: u64) -> Vec<u32> {
        let len = self.inner.bytes.len() as u64;
        let n = len.div_ceil(chunk_size).max(1) as usize;
        let mut counts = vec![0u32; n];
        for r in self.requests() {
            if r.is_empty() {
                continue;
            }
            for c in r.start / chunk_size..=(r.end - 1) / chunk_size {
                counts[c as usize] += 1;
            }
        }
        counts
    }
}

impl Source for MemorySource {
    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            Ok(SourceInfo {
                len: self.inner.bytes.len() as u64,
                validator: self.inner.validator.lock().clone(),
                ranges: self.inner.mode == RangeMode::Honour,
            })
        })
    }

    fn manifest(&self) -> BoxFuture<'_, Result<Option<Manifest>, SourceError>> {
        Box::pin(async move { Ok(self.inner.manifest.clone()) })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let inner = self.inner.clone();
            let current = inner.validator.lock().clone();
            if current != expect.validator {
                return Err(SourceError::new(
                    SourceErrorKind::Changed,
                    format!(
                        "{}: validator is now {current}, was {}",
                        inner.identity, expect.validator
                    ),
                ));
            }
            let len = inner.bytes.len() as u64;
            let range = match inner.mode {
                RangeMode::Honour => range,
                RangeMode::WholeBody => 0..len,
            };
            if range.start > range.end || range.end > len {
                return Err(SourceError::new(
                    SourceErrorKind::Protocol,
                    format!("{}: range {range:?} outside {len} bytes", inner.identity),
                ));
            }
            inner.requests.lock().push(range.clone());
            let open = inner.open.fetch_add(1, Ordering::SeqCst) + 1;
            inner.max_open.fetch_max(open, Ordering::SeqCst);
            let guard = OpenBody(inner.clone());
            let state = (inner, range.start, range.end, guard);
            let stream = futures::stream::unfold(state, |(inner, pos, end, guard)| async move {
                if pos >= end {
                    return None;
                }
                if !inner.delay.is_zero() {
                    tokio::time::sleep(inner.delay).await;
                }
                let n = (end - pos).min(inner.piece as u64);
                let sent = inner.delivered.fetch_add(n, Ordering::SeqCst);
                if sent + n > inner.fail_after.load(Ordering::SeqCst) {
                    let e = SourceError::new(
                        SourceErrorKind::Network,
                        format!("{}: connection reset at byte {pos}", inner.identity),
                    );
                    // End the stream after the error.
                    return Some((Err(e), (inner, end, end, guard)));
                }
                let piece = inner.bytes.slice(pos as usize..(pos + n) as usize);
                Some((Ok(piece), (inner, pos + n, end, guard)))
            });
            Ok(RangeBody {
                range,
                stream: Box::pin(stream),
            })
        })
    }
}
