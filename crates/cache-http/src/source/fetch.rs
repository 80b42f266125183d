//! Sending requests (redirects, status classification) and range reads with
//! a self-resuming, strictly validated body stream.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::{RangeBody, SourceError, SourceErrorKind, SourceInfo};
use http::header::{
    HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, IF_RANGE, LOCATION, PROXY_AUTHORIZATION, RANGE,
    USER_AGENT,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;

use super::retry::{retry_after, Backoff};
use super::validate::{
    content_length_of, content_range_of, is_strong_etag, validator_of, ContentRange,
};
use super::Inner;

/// How one attempt failed, which decides what happens next.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt after a backoff.
    Transient {
        kind: SourceErrorKind,
        cause: String,
        retry_after: Option<Duration>,
    },
    /// The URL used may be a stale redirect target: re-resolve from the
    /// original URL once, else final with this kind.
    Stale {
        kind: SourceErrorKind,
        cause: String,
    },
    /// No point retrying.
    Final {
        kind: SourceErrorKind,
        cause: String,
    },
}

impl Failure {
    pub(crate) fn transient(kind: SourceErrorKind, cause: impl Into<String>) -> Self {
        Failure::Transient {
            kind,
            cause: cause.into(),
            retry_after: None,
        }
    }
    pub(crate) fn fatal(kind: SourceErrorKind, cause: impl Into<String>) -> Self {
        Failure::Final {
            kind,
            cause: cause.into(),
        }
    }
}

/// Builds the error a caller sees: it names the URL(s), the method, the byte
/// range and the cause.
pub(crate) fn describe(
    inner: &Inner,
    method: &Method,
    used: &Uri,
    range: Option<&Range<u64>>,
    kind: SourceErrorKind,
    cause: &str,
    attempts: u32,
) -> SourceError {
    let mut msg = format!("{method} {}", inner.original_str);
    if *used != inner.original {
        msg.push_str(&format!(" (redirected to {used})"));
    }
    if let Some(r) = range {
        if r.is_empty() {
            msg.push_str(&format!(" bytes {}..{} (empty)", r.start, r.end));
        } else {
            msg.push_str(&format!(" bytes {}-{}", r.start, r.end - 1));
        }
    }
    msg.push_str(": ");
    msg.push_str(cause);
    if attempts > 0 {
        msg.push_str(&format!(" (after {attempts} retries)"));
    }
    SourceError::new(kind, msg)
}

/// Whether `status` is a redirect we follow.
fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Resolves a `Location` value against the URL it came from.
pub(crate) fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if let Ok(uri) = location.parse::<Uri>() {
        if uri.scheme().is_some() && uri.authority().is_some() {
            return Some(uri);
        }
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let abs = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        // Relative path: replace the last segment of the base path.
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    abs.parse().ok()
}

/// Sends `method` to `start`, following redirects. Returns the final
/// response and the URL that produced it.
pub(crate) async fn send_following(
    inner: &Inner,
    method: &Method,
    start: Uri,
    headers: &HeaderMap,
) -> Result<(Response<Incoming>, Uri), Failure> {
    let mut chain = vec![start.clone()];
    let mut uri = start;
    loop {
        let resp = send_once(inner, method, &uri, headers).await?;
        if !is_redirect(resp.status()) {
            return Ok((resp, uri));
        }
        let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
            return Ok((resp, uri));
        };
        let Some(next) = resolve_location(&uri, loc) else {
            return Err(Failure::fatal(
                SourceErrorKind::Protocol,
                format!("{} with unusable Location {loc:?}", resp.status()),
            ));
        };
        let show = |c: &[Uri], extra: &Uri| {
            let mut s: Vec<String> = c.iter().map(ToString::to_string).collect();
            s.push(extra.to_string());
            s.join(" -> ")
        };
        if chain.contains(&next) {
            return Err(Failure::fatal(
                SourceErrorKind::Protocol,
                format!("redirect loop: {}", show(&chain, &next)),
            ));
        }
        if chain.len() > inner.config.max_redirects {
            return Err(Failure::fatal(
                SourceErrorKind::Protocol,
                format!(
                    "more than {} redirects: {}",
                    inner.config.max_redirects,
                    show(&chain, &next)
                ),
            ));
        }
        // The redirect body is dropped unread; on HTTP/1 that closes the
        // connection, which is cheaper than draining an unknown body.
        drop(resp);
        chain.push(next.clone());
        uri = next;
    }
}

async fn send_once(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response<Incoming>, Failure> {
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    h.extend(headers.clone());
    if let Ok(ua) = HeaderValue::from_str(&inner.config.user_agent) {
        h.insert(USER_AGENT, ua);
    }
    // Compressed bodies would make byte ranges meaningless.
    h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if uri.scheme_str() == Some("http") {
        if let Some(auth) = inner
            .matcher
            .intercept(uri)
            .and_then(|i| i.basic_auth().cloned())
        {
            h.insert(PROXY_AUTHORIZATION, auth);
        }
    }
    let stall = inner.config.stall_timeout;
    match tokio::time::timeout(stall, inner.client.request(req)).await {
        Err(_) => Err(Failure::transient(
            SourceErrorKind::Network,
            format!("no response within {stall:?}"),
        )),
        Ok(Err(e)) => Err(Failure::transient(
            SourceErrorKind::Network,
            error_chain(&e),
        )),
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// `e` and its sources, joined: hyper's top-level messages alone ("client
/// error (Connect)") do not say what happened.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns a non-success status into a [`Failure`].
pub(crate) fn classify_status(resp: &Response<Incoming>) -> Failure {
    let status = resp.status();
    let cause = format!("HTTP {status}");
    match status.as_u16() {
        404 | 410 => Failure::Stale {
            kind: SourceErrorKind::NotFound,
            cause,
        },
        401 | 403 => Failure::Stale {
            kind: SourceErrorKind::Denied,
            cause,
        },
        429 | 503 => Failure::Transient {
            kind: SourceErrorKind::Network,
            cause,
            retry_after: retry_after(resp.headers()),
        },
        // "Not Implemented" / "Version Not Supported" will not heal.
        501 | 505 => Failure::fatal(SourceErrorKind::Protocol, format!("unexpected {cause}")),
        408 | 500..=599 => Failure::transient(SourceErrorKind::Network, cause),
        _ => Failure::fatal(SourceErrorKind::Protocol, format!("unexpected {cause}")),
    }
}

/// Rejects encoded bodies: their bytes are not the object's bytes.
fn check_encoding(resp: &Response<Incoming>) -> Result<(), Failure> {
    match resp.headers().get(CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None => Ok(()),
        Some(v) if v.eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(v) => Err(Failure::fatal(
            SourceErrorKind::Protocol,
            format!(
                "unexpected Content-Encoding {:?}",
                String::from_utf8_lossy(v)
            ),
        )),
    }
}

/// Fails with `Changed` unless the response carries the expected validator.
pub(crate) fn check_validator(
    resp: &Response<Incoming>,
    expect: &SourceInfo,
) -> Result<(), Failure> {
    if expect.validator.is_empty() {
        return Ok(());
    }
    let got = validator_of(resp.headers());
    if got != expect.validator {
        return Err(Failure::fatal(
            SourceErrorKind::Changed,
            format!(
                "validator changed from {:?} to {:?}",
                expect.validator,
                if got.is_empty() { "<none>" } else { &got }
            ),
        ));
    }
    Ok(())
}

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
        match failure {
            Failure::Final { kind, cause } => Err(self.error(kind, &cause)),
            Failure::Stale { kind, cause } => {
                if self.used != self.inner.original && !self.reresolved {
                    tracing::info!(url = %self.used, %cause, "redirect target failed; re-resolving");
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
                    tracing::debug!(url = %self.used, %cause, delay = ?d, "retrying");
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
        let mut headers = HeaderMap::new();
        let range = format!("bytes={}-{}", pos, end - 1);
        headers.insert(
            RANGE,
            HeaderValue::from_str(&range)
                .map_err(|e| Failure::fatal(SourceErrorKind::Other, e.to_string()))?,
        );
        if is_strong_etag(&self.expect.validator) {
            if let Ok(v) = HeaderValue::from_str(&self.expect.validator) {
                headers.insert(IF_RANGE, v);
            }
        }
        let start = self.inner.current();
        self.used = start.clone();
        let (resp, fin) = send_following(&self.inner, &Method::GET, start, &headers).await?;
        self.used = fin.clone();
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT {
            check_encoding(&resp)?;
            check_validator(&resp, &self.expect)?;
            let cr = match content_range_of(resp.headers()) {
                Some(Ok(cr)) => cr,
                Some(Err(e)) => {
                    return Err(Failure::transient(SourceErrorKind::Protocol, e.to_string()))
                }
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
