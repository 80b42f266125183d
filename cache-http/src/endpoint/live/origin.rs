//! Counting the bytes the origin sent per object (by source identity), so
//! the page can show "downloaded once": origin bytes equal to the size.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cache_core::{RangeBody, Source, SourceError, SourceInfo};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::Live;

struct Counting {
    inner: Arc<dyn Source>,
    bytes: Arc<AtomicU64>,
}

/// `inner`, with its body bytes counted in `live` under the source's
/// identity.
pub(crate) fn counting(live: &Live, inner: Arc<dyn Source>) -> Arc<dyn Source> {
    let bytes = live.origin_counter(&inner.identity());
    Arc::new(Counting { inner, bytes })
}

impl Source for Counting {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        self.inner.probe()
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let body = self.inner.read_range(range, expect).await?;
            let bytes = self.bytes.clone();
            let stream = body.stream.inspect(move |piece| {
                if let Ok(b) = piece {
                    bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            });
            Ok(RangeBody {
                range: body.range,
                stream: Box::pin(stream),
            })
        })
    }
}
