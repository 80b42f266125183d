//! An in-process loopback HTTP origin (hyper 1.x, HTTP/1.1) serving one
//! in-memory body with single-range support, and a minimal [`Source`] over
//! it ([`LoopbackSource`]) — a stand-in for the real HTTP source without
//! retries, redirects or TLS.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::{RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The ETag every response of the origin carries.
pub const ETAG_VALUE: &str = "\"loopback-1\"";

/// A running loopback origin; stops accepting when dropped.
pub struct Origin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Serves `body` at every path on 127.0.0.1 (an ephemeral port). Call
    /// inside a tokio runtime.
    pub async fn start(body: Bytes) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let body = body.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&req, &body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Origin { addr, task }
    }

    /// `http://127.0.0.1:PORT/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses `bytes=a-b` / `bytes=a-` / `bytes=-n` (one range only).
fn parse_range(value: &str, len: u64) -> Option<Range<u64>> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(len)
        };
        (start, end)
    };
    (start < end).then_some(start..end)
}

fn respond(req: &Request<Incoming>, body: &Bytes) -> Response<Full<Bytes>> {
    let len = body.len() as u64;
    let head = req.method() == Method::HEAD;
    let if_range_ok = req
        .headers()
        .get(IF_RANGE)
        .is_none_or(|v| v.as_bytes() == ETAG_VALUE.as_bytes());
    let range = req
        .headers()
        .get(RANGE)
        .filter(|_| if_range_ok)
        .and_then(|v| v.to_str().ok());
    let mut resp = Response::builder()
        .header(ETAG, ETAG_VALUE)
        .header(ACCEPT_RANGES, "bytes");
    let (status, slice) = match range {
        None => (StatusCode::OK, 0..len),
        Some(v) => match parse_range(v, len) {
            Some(r) => {
                resp = resp.header(
                    CONTENT_RANGE,
                    format!("bytes {}-{}/{len}", r.start, r.end - 1),
                );
                (StatusCode::PARTIAL_CONTENT, r)
            }
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Full::new(Bytes::new()))
                    .expect("response");
            }
        },
    };
    let n = slice.end - slice.start;
    let payload = if head {
        Bytes::new()
    } else {
        body.slice(slice.start as usize..slice.end as usize)
    };
    resp.status(status)
        .header(CONTENT_LENGTH, n)
        .body(Full::new(payload))
        .expect("response")
}

/// A minimal HTTP range source: one pooled hyper client, `Range` GETs,
/// ETag and Content-Range checks, no retries.
pub struct LoopbackSource {
    url: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl LoopbackSource {
    pub fn new(url: &str) -> LoopbackSource {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        LoopbackSource {
            url: url.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn get(&self, range: &str) -> Result<Response<Incoming>, SourceError> {
        let req = Request::get(&self.url)
            .header(RANGE, range)
            .body(Empty::new())
            .map_err(|e| net(&self.url, e))?;
        self.client
            .request(req)
            .await
            .map_err(|e| net(&self.url, e))
    }
}

fn net(url: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::new(SourceErrorKind::Network, format!("{url}: {e}"))
}

fn protocol(url: &str, what: String) -> SourceError {
    SourceError::new(SourceErrorKind::Protocol, format!("{url}: {what}"))
}

/// (start, end exclusive, total) of a `Content-Range: bytes a-b/len`.
fn content_range(v: Option<&HeaderValue>) -> Option<(u64, u64, u64)> {
    let s = v?.to_str().ok()?.strip_prefix("bytes ")?;
    let (r, total) = s.split_once('/')?;
    let (a, b) = r.split_once('-')?;
    Some((
        a.parse().ok()?,
        b.parse::<u64>().ok()? + 1,
        total.parse().ok()?,
    ))
}

fn etag(resp: &Response<Incoming>) -> String {
    resp.headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl Source for LoopbackSource {
    fn identity(&self) -> String {
        self.url.clone()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            let resp = self.get("bytes=0-0").await?;
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(protocol(&self.url, format!("probe: {}", resp.status())));
            }
            let (_, _, len) = content_range(resp.headers().get(CONTENT_RANGE))
                .ok_or_else(|| protocol(&self.url, "probe: bad Content-Range".into()))?;
            let validator = etag(&resp);
            // Drain the one byte so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok(SourceInfo {
                len,
                validator,
                ranges: true,
            })
        })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let resp = self
                .get(&format!("bytes={}-{}", range.start, range.end - 1))
                .await?;
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(protocol(&self.url, format!("range: {}", resp.status())));
            }
            if etag(&resp) != expect.validator {
                return Err(SourceError::new(
                    SourceErrorKind::Changed,
                    format!("{}: ETag changed", self.url),
                ));
            }
            let got = content_range(resp.headers().get(CONTENT_RANGE));
            if got != Some((range.start, range.end, expect.len)) {
                return Err(protocol(&self.url, format!("Content-Range {got:?}")));
            }
            let url = Arc::new(self.url.clone());
            let stream = resp
                .into_body()
                .into_data_stream()
                .map_err(move |e| net(&url, e));
            Ok(RangeBody {
                range,
                stream: Box::pin(stream),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Some(0..1));
        assert_eq!(parse_range("bytes=3-", 10), Some(3..10));
        assert_eq!(parse_range("bytes=-4", 10), Some(6..10));
        assert_eq!(parse_range("bytes=2-100", 10), Some(2..10));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
    }
}
