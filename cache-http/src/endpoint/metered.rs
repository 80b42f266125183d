//! A [`Source`] wrapper that records upstream traffic in [`Metrics`]:
//! every request with its outcome (by mirror) and the body bytes received.

use std::ops::Range;
use std::sync::Arc;

use cache_core::{RangeBody, Source, SourceError, SourceInfo};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::metrics::Metrics;

/// `source`, with its traffic counted under `mirror`.
pub(crate) fn metered(source: Arc<dyn Source>, metrics: Arc<Metrics>, mirror: &str) -> Metered {
    Metered {
        inner: source,
        metrics,
        mirror: mirror.to_owned(),
    }
}

pub(crate) struct Metered {
    inner: Arc<dyn Source>,
    metrics: Arc<Metrics>,
    mirror: String,
}

impl Metered {
    fn outcome<T>(&self, r: &Result<T, SourceError>) {
        let status = match r {
            Ok(_) => "2xx".to_owned(),
            Err(e) => format!("{:?}", e.kind).to_ascii_lowercase(),
        };
        self.metrics.upstream_request(&self.mirror, &status);
    }
}

impl Source for Metered {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            let r = self.inner.probe().await;
            self.outcome(&r);
            r
        })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let r = self.inner.read_range(range, expect).await;
            self.outcome(&r);
            let body = r?;
            let metrics = self.metrics.clone();
            let stream = body.stream.inspect(move |piece| {
                if let Ok(b) = piece {
                    metrics.upstream_bytes(b.len() as u64);
                }
            });
            Ok(RangeBody {
                range: body.range,
                stream: Box::pin(stream),
            })
        })
    }
}

/// A source whose probe was already made: `Store::fetch` probes again, and
/// this answers with the first probe's result instead of asking the origin
/// twice (the endpoint probes first to answer HEAD and to check the size
/// limit before a fill starts).
/// Only the first probe is answered from memory; later ones (a fill
/// restarted after a fault) ask the origin.
pub(crate) struct Probed {
    inner: Metered,
    info: parking_lot::Mutex<Option<SourceInfo>>,
}

impl Probed {
    pub(crate) fn new(inner: Metered, info: SourceInfo) -> Probed {
        Probed {
            inner,
            info: parking_lot::Mutex::new(Some(info)),
        }
    }
}

impl Source for Probed {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        match self.info.lock().take() {
            Some(info) => Box::pin(async move { Ok(info) }),
            None => self.inner.probe(),
        }
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        self.inner.read_range(range, expect)
    }
}
