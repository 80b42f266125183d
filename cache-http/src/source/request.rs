//! Sending one logical request: redirects (followed by hand so the final
//! URL can be remembered and loops reported), status classification and the
//! response checks shared by probe and range reads.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use cache_core::{SourceError, SourceErrorKind, SourceInfo};
use http::header::{
    HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, LOCATION, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;

use super::credentials::add_origin_headers;
use super::diagnose::{classify_send_error, status_hint};
use super::retry::retry_after;
use super::validate::validator_of;
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
    /// The origin cannot be reached yet: its port refused the connection,
    /// or (before it ever answered) the resolver could not resolve its
    /// name. Retried once quickly, then final (see `diagnose`).
    Unreachable { cause: String },
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
    let mut msg = format!("{method} {}", inner.shown_original());
    if *used != inner.original {
        msg.push_str(&format!(" (redirected to {})", inner.shown(used)));
    }
    if let Some(r) = range {
        if r.is_empty() {
            msg.push_str(&format!(" bytes {}..{} (empty)", r.start, r.end));
        } else {
            msg.push_str(&format!(" bytes {}-{}", r.start, r.end - 1));
        }
    }
    // The hint (see `diagnose`) stays last.
    let (cause, hint) = match cause.split_once("; hint: ") {
        Some((c, h)) => (c, Some(h)),
        None => (cause, None),
    };
    msg.push_str(": ");
    msg.push_str(cause);
    if attempts > 0 {
        msg.push_str(&format!(" (after {attempts} retries)"));
    }
    if let Some(h) = hint {
        msg.push_str("; hint: ");
        msg.push_str(h);
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
            let mut s: Vec<String> = c.iter().map(|u| inner.shown(u)).collect();
            s.push(inner.shown(extra));
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

/// The headers of a request to `uri`: ours, the user's and the
/// credentials for its origin, then `headers` (which replace them).
pub(crate) fn request_headers(inner: &Inner, uri: &Uri, headers: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(ua) = HeaderValue::from_str(&inner.config.user_agent) {
        h.insert(USER_AGENT, ua);
    }
    // User headers and credentials; a user `User-Agent` replaces ours.
    add_origin_headers(&mut h, &inner.origin_headers, &inner.original, uri);
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    // Compressed bodies would make byte ranges meaningless.
    h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    h
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
    *h = request_headers(inner, uri, headers);
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
        Ok(Err(e)) => Err(classify_send_error(
            &e,
            uri,
            inner.answered.load(Ordering::Relaxed),
        )),
        Ok(Ok(resp)) => {
            inner.answered.store(true, Ordering::Relaxed);
            Ok(resp)
        }
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
    let cause = match status_hint(status) {
        Some(hint) => format!("HTTP {status}; hint: {hint}"),
        None => format!("HTTP {status}"),
    };
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
pub(crate) fn check_encoding<B>(resp: &Response<B>) -> Result<(), Failure> {
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
pub(crate) fn check_validator<B>(resp: &Response<B>, expect: &SourceInfo) -> Result<(), Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve() {
        let base: Uri = "http://h:8/a/b/c?q=1".parse().unwrap();
        let cases = [
            ("https://x/y", "https://x/y"),
            ("//other/p", "http://other/p"),
            ("/abs", "http://h:8/abs"),
            ("rel?x", "http://h:8/a/b/rel?x"),
            ("?z=2", "http://h:8/a/b/c?z=2"),
        ];
        for (loc, want) in cases {
            assert_eq!(
                resolve_location(&base, loc).unwrap().to_string(),
                want,
                "{loc}"
            );
        }
    }
}
