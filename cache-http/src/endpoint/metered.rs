//! A [`Source`] wrapper that records upstream traffic in [`Metrics`]:
//! bytes received and the time each chunk-sized piece of a body took.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use cache_core::{RangeBody, Source, SourceError, SourceInfo};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::metrics::Metrics;
use super::server::MirrorSourceFactory;

struct Metered {
    inner: Arc<dyn Source>,
    metrics: Arc<Metrics>,
    chunk_size: u64,
}

/// Wraps every source `factory` makes so that its bodies are metered.
pub(crate) fn metered_factory(
    factory: MirrorSourceFactory,
    metrics: Arc<Metrics>,
    chunk_size: u32,
) -> MirrorSourceFactory {
    Arc::new(move |url: &str| {
        let inner = factory(url)?;
        Ok(Arc::new(Metered {
            inner,
            metrics: metrics.clone(),
            chunk_size: u64::from(chunk_size.max(1)),
        }) as Arc<dyn Source>)
    })
}

impl Source for Metered {
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
            let started = Instant::now();
            let body = self.inner.read_range(range, expect).await?;
            let metrics = self.metrics.clone();
            let cs = self.chunk_size;
            // (bytes so far, start of the current chunk-sized piece)
            let mut state = (0u64, started);
            let stream = body.stream.inspect(move |piece| {
                if let Ok(b) = piece {
                    let n = b.len() as u64;
                    metrics.upstream_bytes_total.add(n);
                    let before = state.0 / cs;
                    state.0 += n;
                    let crossed = state.0 / cs - before;
                    if crossed > 0 {
                        let now = Instant::now();
                        let per = now.duration_since(state.1) / crossed as u32;
                        for _ in 0..crossed.min(64) {
                            metrics.chunk_fetch_seconds.observe(per);
                        }
                        state.1 = now;
                    }
                }
            });
            Ok(RangeBody {
                range: body.range,
                stream: Box::pin(stream),
            })
        })
    }
}
