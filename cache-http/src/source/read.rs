//! Range reads: one single-range GET, strictly validated, and a body stream
//! that resumes itself from the last byte received when the body breaks
//! (reset, stall, short), with the same validation on every resumption.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::{RangeBody, SourceError, SourceErrorKind, SourceInfo};
use http::header::{HeaderValue, IF_RANGE, RANGE};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::request::{
    check_encoding, check_validator, classify_status, describe, error_chain, send_following,
    Failure,
};
use super::retry::Backoff;
use super::validate::{content_length_of, content_range_of, is_strong_etag, ContentRange};
use super::Inner;

/// A range read in progress: the stream state of [`read_range`].
struct Reader {
    inner: Arc<Inner>,
    expect: SourceInfo,
    /// The range as asked for (for messages).
    asked: Range<u64>,
    /// Next object offset to hand out.
    pos: u64,
    /// End (exclusive) of what this read delivers.
    end: u64,
    /// Object offset of the next byte of `body` (< `pos` while skipping the
    /// head of a 200 response received when resuming).
    body_pos: u64,
    body: Option<Incoming>,
    /// The URL the current body came from (for messages).
    used: Uri,
    backoff: Backoff,
    reresolved: bool,
    done: bool,
}

/// What a successful open produced.
enum Opened {
    /// 206 for exactly `pos..end`.
    Partial,
    /// 200 with the whole object.
    Whole,
}

impl Reader {
    fn error(&self, kind: SourceErrorKind, cause: &str) -> SourceError {
        describe(
            &self.inner,
            &Method::GET,
            &self.used,
            Some(&self.asked),
            kind,
            cause,
            self.backoff.attempts(),
        )
    }

    /// Opens `pos..end`, retrying transient failures.
    async fn open(&mut self, first: bool) -> Result<Opened, SourceError> {
        loop {
            let failure = match self.open_once(first).await {
                Ok(o) => return Ok(o),
                Err(f) => f,
            };
            self.wait_or_fail(failure).await?;
        }
    }

    /// Handles a failed attempt: sleeps before the next one, or returns the
    /// final error.
    async fn wait_or_fail(&mut self, failure: Failure) -> Result<(), SourceError> {
        match self.backoff.settle(failure) {
            Failure::Unreachable { cause } => Err(self.error(SourceErrorKind::Network, &cause)),
            Failure::Final { kind, cause } => Err(self.error(kind, &cause)),
            Failure::Stale { kind, cause } => {
                if self.used != self.inner.original && !self.reresolved {
                    tracing::info!(url = %self.inner.shown(&self.used), %cause, "redirect target failed; re-resolving");
                    self.reresolved = true;
                    self.inner.set_resolved(None);
                    Ok(())
                } else {
                    Err(self.error(kind, &cause))
                }
            }
            Failure::Transient {
                kind,
                cause,
                retry_after,
            } => match self.backoff.next_delay(retry_after) {
                Some(d) => {
                    tracing::debug!(url = %self.inner.shown(&self.used), %cause, delay = ?d, "retrying");
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                None => Err(self.error(kind, &cause)),
            },
        }
    }

    async fn open_once(&mut self, first: bool) -> Result<Opened, Failure> {
        self.body = None;
        let (pos, end, len) = (self.pos, self.end, self.expect.len);
        let headers = range_headers(pos..end, &self.expect)
            .map_err(|e| Failure::fatal(SourceErrorKind::Other, e.to_string()))?;
        let start = self.inner.current();
        self.used = start.clone();
        let (resp, fin) = send_following(&self.inner, &Method::GET, start, &headers).await?;
        self.used = fin.clone();
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT {
            check_partial(&resp, pos..end, &self.expect)?;
            self.inner.set_resolved(Some(fin));
            self.body_pos = pos;
            self.body = Some(resp.into_body());
            return Ok(Opened::Partial);
        }
        if status == StatusCode::OK {
            check_encoding(&resp)?;
            check_validator(&resp, &self.expect)?;
            if let Some(cl) = content_length_of(resp.headers()) {
                if cl != len {
                    return Err(Failure::fatal(
                        SourceErrorKind::Changed,
                        format!("length changed from {len} to {cl} (200 response)"),
                    ));
                }
            }
            if first && self.asked.start != 0 {
                return Err(Failure::fatal(
                    SourceErrorKind::RangesUnsupported,
                    "server answered a range request with 200 (whole object)",
                ));
            }
            self.inner.set_resolved(Some(fin));
            if first {
                // The caller gets the whole object (see `RangeBody::range`).
                self.end = len;
            }
            // When resuming, the head of the body up to `pos` is skipped.
            self.body_pos = 0;
            self.body = Some(resp.into_body());
            return Ok(Opened::Whole);
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            if let Some(Ok(ContentRange::Unsatisfied { complete })) =
                content_range_of(resp.headers())
            {
                if complete != len {
                    return Err(Failure::fatal(
                        SourceErrorKind::Changed,
                        format!("length changed from {len} to {complete} (416 response)"),
                    ));
                }
            }
            return Err(Failure::transient(
                SourceErrorKind::Protocol,
                format!("HTTP {status}"),
            ));
        }
        Err(classify_status(&resp))
    }

    /// The next piece of the body; resumes broken bodies.
    async fn next(&mut self) -> Option<Result<Bytes, SourceError>> {
        let stall = self.inner.config.stall_timeout;
        loop {
            if self.done || self.pos >= self.end {
                self.body = None;
                return None;
            }
            if self.body.is_none() {
                if let Err(e) = self.open(false).await {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let body = self.body.as_mut()?;
            let failure = match tokio::time::timeout(stall, body.frame()).await {
                Err(_) => Failure::transient(
                    SourceErrorKind::Network,
                    format!("stalled: no body bytes for {stall:?} at byte {}", self.pos),
                ),
                Ok(None) => Failure::transient(
                    SourceErrorKind::Protocol,
                    format!("short body: ended at byte {} of {}", self.pos, self.end),
                ),
                Ok(Some(Err(e))) => Failure::transient(
                    SourceErrorKind::Network,
                    format!("body error at byte {}: {}", self.pos, error_chain(&e)),
                ),
                Ok(Some(Ok(frame))) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(l) = &self.inner.limiter {
                        l.consume(data.len()).await;
                    }
                    // Skip what was already delivered (200 while resuming).
                    if self.body_pos < self.pos {
                        let skip = (self.pos - self.body_pos).min(data.len() as u64);
                        let _ = data.split_to(skip as usize);
                        self.body_pos += skip;
                        if data.is_empty() {
                            continue;
                        }
                    }
                    let left = self.end - self.pos;
                    if data.len() as u64 > left {
                        // hyper enforces Content-Length, so this is a body
                        // without one running past the validated range.
                        self.done = true;
                        return Some(Err(self.error(
                            SourceErrorKind::Protocol,
                            &format!("body longer than the range (past byte {})", self.end),
                        )));
                    }
                    self.pos += data.len() as u64;
                    self.body_pos += data.len() as u64;
                    self.backoff.reset();
                    return Some(Ok(data));
                }
            };
            self.body = None;
            if let Err(e) = self.wait_or_fail(failure).await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// The headers that ask for `range` of the version `expect`: `Range`, and
/// `If-Range` with its validator when that is a strong ETag (a changed
/// object then answers 200, never bytes of another version).
pub(crate) fn range_headers(
    range: Range<u64>,
    expect: &SourceInfo,
) -> Result<HeaderMap, http::header::InvalidHeaderValue> {
    let mut headers = HeaderMap::new();
    let spec = format!("bytes={}-{}", range.start, range.end - 1);
    headers.insert(RANGE, HeaderValue::from_str(&spec)?);
    if is_strong_etag(&expect.validator) {
        if let Ok(v) = HeaderValue::from_str(&expect.validator) {
            headers.insert(IF_RANGE, v);
        }
    }
    Ok(headers)
}

/// Checks a 206 answer to a request for `range` of the version `expect`:
/// identity encoding, the same validator, a Content-Range of exactly that
/// range of an object of the same length, a Content-Length (if any) of the
/// range's.
pub(crate) fn check_partial<B>(
    resp: &http::Response<B>,
    range: Range<u64>,
    expect: &SourceInfo,
) -> Result<(), Failure> {
    let (pos, end, len) = (range.start, range.end, expect.len);
    check_encoding(resp)?;
    check_validator(resp, expect)?;
    let cr = match content_range_of(resp.headers()) {
        Some(Ok(cr)) => cr,
        Some(Err(e)) => return Err(Failure::transient(SourceErrorKind::Protocol, e.to_string())),
        None => {
            return Err(Failure::transient(
                SourceErrorKind::Protocol,
                "206 without Content-Range",
            ))
        }
    };
    let want = ContentRange::Bytes {
        first: pos,
        last: end - 1,
        complete: Some(len),
    };
    if cr != want {
        if let ContentRange::Bytes {
            complete: Some(n), ..
        } = cr
        {
            if n != len {
                return Err(Failure::fatal(
                    SourceErrorKind::Changed,
                    format!("length changed from {len} to {n}"),
                ));
            }
        }
        return Err(Failure::transient(
            SourceErrorKind::Protocol,
            format!(
                "Content-Range {cr:?} does not match requested bytes {pos}-{}/{len}",
                end - 1
            ),
        ));
    }
    if let Some(cl) = content_length_of(resp.headers()) {
        if cl != end - pos {
            return Err(Failure::transient(
                SourceErrorKind::Protocol,
                format!(
                    "Content-Length {cl} does not match range length {}",
                    end - pos
                ),
            ));
        }
    }
    Ok(())
}

/// [`cache_core::Source::read_range`] for [`super::HttpSource`].
pub(crate) async fn read_range(
    inner: Arc<Inner>,
    range: Range<u64>,
    expect: SourceInfo,
) -> Result<RangeBody, SourceError> {
    let used = inner.current();
    let backoff = Backoff::new(
        inner.config.max_retries,
        inner.config.retry_base,
        inner.config.retry_cap,
        inner.config.max_retry_after,
    );
    let mut r = Reader {
        inner,
        asked: range.clone(),
        pos: range.start,
        end: range.end,
        body_pos: range.start,
        body: None,
        used,
        backoff,
        reresolved: false,
        done: false,
        expect,
    };
    if range.start > range.end || range.end > r.expect.len {
        return Err(r.error(
            SourceErrorKind::Other,
            &format!("range outside the object of {} bytes", r.expect.len),
        ));
    }
    if range.is_empty() {
        return Ok(RangeBody {
            range,
            stream: Box::pin(futures::stream::empty()),
        });
    }
    let body_range = match r.open(true).await? {
        Opened::Partial => range,
        Opened::Whole => 0..r.expect.len,
    };
    let stream = futures::stream::unfold(r, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    });
    Ok(RangeBody {
        range: body_range,
        stream: Box::pin(stream),
    })
}
