//! [`cache_core::Source::probe`]: `GET` with `Range: bytes=0-0`, `HEAD` as
//! the fallback for origins that answer the ranged GET oddly.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{SourceError, SourceErrorKind, SourceInfo};
use http::header::{HeaderValue, ACCEPT_RANGES, RANGE};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::request::{classify_status, describe, send_following, Failure};
use super::retry::Backoff;
use super::validate::{content_length_of, content_range_of, validator_of, ContentRange};
use super::Inner;

/// Outcome of the ranged GET.
enum Step {
    Done(SourceInfo),
    /// The GET answer says nothing usable: ask with HEAD.
    TryHead(String),
}

pub(crate) async fn probe(inner: Arc<Inner>) -> Result<SourceInfo, SourceError> {
    let mut backoff = Backoff::new(
        inner.config.max_retries,
        inner.config.retry_base,
        inner.config.retry_cap,
        inner.config.max_retry_after,
    );
    let mut method = Method::GET;
    let mut head_reason = String::new();
    loop {
        // A probe always starts at the original URL: it is the moment a
        // (possibly expired) redirect target is chosen afresh.
        let start = inner.original.clone();
        let attempt = if method == Method::GET {
            get_once(&inner, start.clone()).await
        } else {
            head_once(&inner, start.clone()).await.map(Step::Done)
        };
        let failure = match attempt {
            Ok(Step::Done(info)) => return Ok(info),
            Ok(Step::TryHead(reason)) => {
                tracing::debug!(url = %inner.shown_original(), %reason, "ranged GET probe odd; trying HEAD");
                head_reason = reason;
                method = Method::HEAD;
                continue;
            }
            Err(f) => backoff.settle(f),
        };
        let attempts = backoff.attempts();
        let err = |kind, cause: &str| {
            let cause = if head_reason.is_empty() {
                cause.to_owned()
            } else {
                format!("{cause} (HEAD fallback after: {head_reason})")
            };
            Err(describe(
                &inner,
                &method,
                &start,
                Some(&(0..1)),
                kind,
                &cause,
                attempts,
            ))
        };
        match failure {
            Failure::Final { kind, cause } | Failure::Stale { kind, cause } => {
                return err(kind, &cause)
            }
            Failure::Unreachable { cause } => return err(SourceErrorKind::Network, &cause),
            Failure::Transient {
                kind,
                cause,
                retry_after,
            } => match backoff.next_delay(retry_after) {
                Some(d) => tokio::time::sleep(d).await,
                None => return err(kind, &cause),
            },
        }
    }
}

async fn get_once(inner: &Inner, start: Uri) -> Result<Step, Failure> {
    let mut headers = HeaderMap::new();
    headers.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
    let (resp, fin) = send_following(inner, &Method::GET, start, &headers).await?;
    let status = resp.status();
    let validator = validator_of(resp.headers());
    match status {
        StatusCode::PARTIAL_CONTENT => match content_range_of(resp.headers()) {
            Some(Ok(ContentRange::Bytes {
                first: 0,
                last: 0,
                complete: Some(len),
            })) => {
                inner.set_resolved(Some(fin));
                // Read the one byte so an HTTP/1 connection returns to the pool.
                drain_small(resp.into_body(), inner.config.stall_timeout).await;
                Ok(Step::Done(SourceInfo {
                    len,
                    validator,
                    ranges: true,
                }))
            }
            Some(Ok(cr)) => Ok(Step::TryHead(format!("206 with Content-Range {cr:?}"))),
            Some(Err(e)) => Ok(Step::TryHead(format!("206 with {e}"))),
            None => Ok(Step::TryHead("206 without Content-Range".into())),
        },
        StatusCode::OK => match content_length_of(resp.headers()) {
            Some(len) => {
                inner.set_resolved(Some(fin));
                // Dropping the body unread closes the connection: cheaper
                // than downloading a whole image just to learn its length.
                drop(resp);
                Ok(Step::Done(SourceInfo {
                    len,
                    validator,
                    ranges: false,
                }))
            }
            None => Ok(Step::TryHead("200 without Content-Length".into())),
        },
        StatusCode::RANGE_NOT_SATISFIABLE => match content_range_of(resp.headers()) {
            // `bytes=0-0` is unsatisfiable only for an empty object.
            Some(Ok(ContentRange::Unsatisfied { complete: 0 })) => {
                inner.set_resolved(Some(fin));
                Ok(Step::Done(SourceInfo {
                    len: 0,
                    validator,
                    ranges: true,
                }))
            }
            _ => Ok(Step::TryHead(
                "416 without `Content-Range: bytes */0`".into(),
            )),
        },
        _ => match classify_status(&resp) {
            // Origins that reject ranged GETs (400, 405, 501...) may still
            // answer HEAD; real errors (404, 5xx...) are reported as such.
            Failure::Final { cause, .. } => Ok(Step::TryHead(cause)),
            other => Err(other),
        },
    }
}

async fn head_once(inner: &Inner, start: Uri) -> Result<SourceInfo, Failure> {
    let (resp, fin) = send_following(inner, &Method::HEAD, start, &HeaderMap::new()).await?;
    if resp.status() != StatusCode::OK {
        return Err(match classify_status(&resp) {
            Failure::Stale { kind, cause } => Failure::Final { kind, cause },
            other => other,
        });
    }
    let Some(len) = content_length_of(resp.headers()) else {
        return Err(Failure::fatal(
            SourceErrorKind::Protocol,
            "cannot learn the length: HEAD without Content-Length",
        ));
    };
    let ranges = resp
        .headers()
        .get(ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|u| u.trim().eq_ignore_ascii_case("bytes")));
    inner.set_resolved(Some(fin));
    Ok(SourceInfo {
        len,
        validator: validator_of(resp.headers()),
        ranges,
    })
}

/// Reads a tiny body to its end (bounded by `timeout`), ignoring errors.
async fn drain_small(mut body: Incoming, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}
