//! A [`Source`] whose bytes flow only when the bench releases them.
//!
//! Every chunk of the object has the same content (one chunk of pattern
//! bytes, shared without copying), so a huge object costs no memory. Bodies
//! are cut at chunk boundaries, and the piece of chunk `k` is held back until
//! the bench calls [`GatedSource::release`] with a watermark past chunk `k`.
//! [`GatedSource::wait_requested`] tells the bench that the filler asked for
//! a chunk — with a lazy fill that happens only once a reader demands it,
//! i.e. once that reader is blocked waiting.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::{RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
use futures::future::BoxFuture;
use tokio::sync::watch;

/// See the module docs.
#[derive(Clone)]
pub struct GatedSource {
    inner: Arc<Inner>,
}

struct Inner {
    identity: String,
    chunk: Bytes,
    len: u64,
    /// Bytes released so far (a watermark from offset 0).
    released: watch::Sender<u64>,
    /// Highest end of any range requested so far.
    requested: watch::Sender<u64>,
}

impl GatedSource {
    /// An object of `chunks` chunks of `chunk_size` bytes, nothing released.
    pub fn new(identity: &str, chunk_size: u64, chunks: u64) -> GatedSource {
        GatedSource {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                chunk: Bytes::from(crate::pattern(chunk_size as usize, 11)),
                len: chunk_size * chunks,
                released: watch::Sender::new(0),
                requested: watch::Sender::new(0),
            }),
        }
    }

    /// Lets every byte below `upto` flow.
    pub fn release(&self, upto: u64) {
        self.inner.released.send_if_modified(|r| {
            let grow = upto > *r;
            if grow {
                *r = upto;
            }
            grow
        });
    }

    /// Waits until a range reaching `end` (or further) has been requested.
    pub async fn wait_requested(&self, end: u64) {
        let mut rx = self.inner.requested.subscribe();
        let _ = rx.wait_for(|e| *e >= end).await;
    }
}

impl Source for GatedSource {
    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            Ok(SourceInfo {
                len: self.inner.len,
                validator: "\"gated\"".to_owned(),
                ranges: true,
            })
        })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        _expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let inner = self.inner.clone();
            if range.start > range.end || range.end > inner.len {
                return Err(SourceError::new(
                    SourceErrorKind::Protocol,
                    format!("range {range:?} outside {} bytes", inner.len),
                ));
            }
            inner.requested.send_if_modified(|e| {
                let grow = range.end > *e;
                if grow {
                    *e = range.end;
                }
                grow
            });
            let rx = inner.released.subscribe();
            let state = (inner, rx, range.start, range.end);
            let stream = futures::stream::unfold(state, |(inner, mut rx, pos, end)| async move {
                if pos >= end {
                    return None;
                }
                let cs = inner.chunk.len() as u64;
                let piece_end = ((pos / cs + 1) * cs).min(end);
                if rx.wait_for(|r| *r >= piece_end).await.is_err() {
                    let e = SourceError::new(SourceErrorKind::Network, "gate dropped");
                    return Some((Err(e), (inner, rx, end, end)));
                }
                let at = (pos % cs) as usize;
                let piece = inner.chunk.slice(at..at + (piece_end - pos) as usize);
                Some((Ok(piece), (inner, rx, piece_end, end)))
            });
            Ok(RangeBody {
                range,
                stream: Box::pin(stream),
            })
        })
    }
}
