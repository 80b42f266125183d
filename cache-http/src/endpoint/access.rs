//! The access log: one line per request, written when its response body
//! has ended (or was cut), through `tracing` with the target [`TARGET`] so
//! `RUST_LOG` and any subscriber can route or silence it.
//!
//! Each line has the time, client, method, path, status, body bytes sent,
//! the `Range` asked for, the duration, the time to first byte and the
//! cache result:
//!
//! | result | meaning |
//! | --- | --- |
//! | `hit` | the object was complete |
//! | `partial` | served while the object fills (a fill this request did not start or join here: another process's, or a `/blobs/` read) |
//! | `miss` | this request started the fill |
//! | `coalesced` | joined a fill another request of this endpoint started |
//! | `error` | an error status, or a body cut short (failed fill, client gone) |
//! | `none` | a route that serves no object (`/status`, `/metrics`) |
//!
//! The default format is the combined log format with these extras:
//!
//! ```text
//! 127.0.0.1 - - [28/Nov/2026:13:05:01 +0000] "GET /m/img/disk.raw HTTP/1.1" 206 1048576 "-" "curl/8.5.0" range="bytes=0-1048575" duration=0.004 ttfb=0.002 cache=miss mirror=img
//! ```
//!
//! and JSON lines hold the same fields:
//!
//! ```text
//! {"time":"2026-11-28T13:05:01.123Z","client":"127.0.0.1","method":"GET","path":"/m/img/disk.raw","status":206,"bytes":1048576,"range":"bytes=0-1048575","duration":0.004,"ttfb":0.002,"cache":"miss","mirror":"img","user_agent":"curl/8.5.0","referer":null}
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::app::App;
pub use super::config::AccessLogFormat;
use super::response::{Body, BodyError};

/// The `tracing` target of access log lines.
pub const TARGET: &str = "blockcache::access";

/// The cache result of one request (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheResult {
    Hit,
    Partial,
    Miss,
    Coalesced,
}

impl CacheResult {
    fn name(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Partial => "partial",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
        }
    }
}

/// What a route tells the access log, as a response extension.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteInfo {
    pub(crate) mirror: Option<String>,
    pub(crate) result: Option<CacheResult>,
}

/// The request side of a log line, taken before the request is consumed.
/// Clones of the parsed request's parts: no copies (a header value is a
/// slice of the connection's read buffer).
pub(crate) struct RequestLine {
    client: Arc<str>,
    method: http::Method,
    uri: http::Uri,
    version: &'static str,
    range: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

impl RequestLine {
    pub(crate) fn of<B>(req: &Request<B>, client: &Arc<str>) -> RequestLine {
        let h = |name| req.headers().get(name).cloned();
        RequestLine {
            client: client.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: match req.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            range: h(header::RANGE),
            user_agent: h(header::USER_AGENT),
            referer: h(header::REFERER),
        }
    }

    /// The request target as sent (path and query).
    fn target(&self) -> &str {
        self.uri
            .path_and_query()
            .map_or_else(|| self.uri.path(), |p| p.as_str())
    }
}

/// A header's text, if it is visible ASCII (what `HeaderValue::to_str`
/// accepts; anything else is logged as absent).
fn text_of(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// Wraps `resp`'s body so that the log line (and the request metrics) are
/// written when the body ends or is dropped.
pub(crate) fn log_response(
    app: &Arc<App>,
    request: RequestLine,
    started: Instant,
    resp: Response<Body>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let route = parts.extensions.remove::<RouteInfo>().unwrap_or_default();
    // hyper stops polling a body once it has sent `Content-Length` bytes,
    // so the end of a streamed body is known from its length.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or(body.size_hint().exact());
    let entry = Entry {
        length,
        app: app.clone(),
        request,
        route,
        status: parts.status.as_u16(),
        started,
        first_byte: None,
        bytes: 0,
        // hyper never polls a body that is empty from the start (HEAD, 304).
        ended: body.is_end_stream(),
        failed: false,
    };
    let body = LoggedBody { inner: body, entry }.boxed_unsync();
    Response::from_parts(parts, body)
}

struct Entry {
    /// The body's announced length, when it has one.
    length: Option<u64>,
    app: Arc<App>,
    request: RequestLine,
    route: RouteInfo,
    status: u16,
    started: Instant,
    first_byte: Option<Duration>,
    bytes: u64,
    ended: bool,
    failed: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let ttfb = self.first_byte.unwrap_or(duration);
        let complete = self.ended || self.length.is_some_and(|n| self.bytes >= n);
        let result = if self.status >= 400 || self.failed || !complete {
            "error"
        } else {
            self.route.result.map_or("none", CacheResult::name)
        };
        let r = &self.request;
        record(
            &self.app,
            &Line {
                client: &r.client,
                method: r.method.as_str(),
                target: r.target(),
                version: r.version,
                status: self.status,
                bytes: self.bytes,
                referer: text_of(&r.referer),
                user_agent: text_of(&r.user_agent),
                range: text_of(&r.range),
                duration,
                ttfb,
                result,
                mirror: self.route.mirror.as_deref(),
            },
        );
    }
}

/// The fields of one access log line, borrowed from whoever served the
/// request (hyper's routes, or the fast path).
pub(crate) struct Line<'a> {
    pub(crate) client: &'a str,
    pub(crate) method: &'a str,
    /// The request target as sent (path and query).
    pub(crate) target: &'a str,
    pub(crate) version: &'a str,
    pub(crate) status: u16,
    /// Body bytes sent.
    pub(crate) bytes: u64,
    pub(crate) referer: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) range: Option<&'a str>,
    pub(crate) duration: Duration,
    pub(crate) ttfb: Duration,
    /// The cache result's name (see the module docs).
    pub(crate) result: &'static str,
    pub(crate) mirror: Option<&'a str>,
}

/// Counts `line` in the request metrics and writes it to the access log.
pub(crate) fn record(app: &App, line: &Line<'_>) {
    let m = &app.metrics;
    m.request(
        line.mirror.unwrap_or(""),
        line.status,
        line.result,
        line.bytes,
    );
    m.latency(line.duration, line.ttfb);
    match app.access_log {
        // Formatted straight into the subscriber's buffer: no line
        // String of its own (BENCHMARKS.md "Serving": the access log
        // was a fifth of the endpoint's CPU under wrk).
        AccessLogFormat::Combined => tracing::info!(target: TARGET, "{}", Combined(line)),
        AccessLogFormat::Json => tracing::info!(target: TARGET, "{}", line.json()),
    }
}

/// A combined-format line (see the module docs), written as it is
/// formatted.
struct Combined<'a, 'b>(&'a Line<'b>);

impl std::fmt::Display for Combined<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.0;
        write!(
            f,
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" range=\"{}\" duration={} ttfb={} cache={} mirror={}",
            l.client,
            ClfNow,
            l.method,
            Replaced(l.target, b"\" "),
            l.version,
            l.status,
            l.bytes,
            quoted(l.referer),
            quoted(l.user_agent),
            quoted(l.range),
            Seconds(l.duration),
            Seconds(l.ttfb),
            l.result,
            l.mirror.unwrap_or("-"),
        )
    }
}

/// A quoted field of a combined line: `-` when absent.
fn quoted(v: Option<&str>) -> Replaced<'_> {
    Replaced(v.unwrap_or("-"), b"\"\\")
}

/// A duration as seconds with six decimals (`0.004211`), in integers.
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// `.0` with each byte of `.1` (ASCII) written as `_` (a field of a log
/// line that must not end its quotes or its space-separated field).
struct Replaced<'a>(&'a str, &'a [u8]);

impl std::fmt::Display for Replaced<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        // Bytes, not chars: an ASCII byte never occurs inside a multi-byte
        // character, so `i` is a character boundary.
        while let Some(i) = rest.bytes().position(|b| self.1.contains(&b)) {
            f.write_str(&rest[..i])?;
            f.write_str("_")?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// The combined log format's time of now, formatted once per second per
/// thread.
struct ClfNow;

impl std::fmt::Display for ClfNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        thread_local! {
            static LAST: SecondCache = const { SecondCache::new((u64::MAX, String::new())) };
        }
        per_second(&LAST, clf_time, |text| f.write_str(text))
    }
}

/// One thread's text of the current second (see [`per_second`]).
pub(crate) type SecondCache = std::cell::RefCell<(u64, String)>;

/// Calls `with` on `format(now)`, formatted at most once per second in
/// each thread: `cache` is a `thread_local!` [`SecondCache`] of the caller.
pub(crate) fn per_second<R>(
    cache: &'static std::thread::LocalKey<SecondCache>,
    format: fn(SystemTime) -> String,
    with: impl FnOnce(&str) -> R,
) -> R {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    cache.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = format(now);
        }
        with(text)
    })
}

impl Line<'_> {
    fn json(&self) -> String {
        serde_json::json!({
            "time": rfc3339(SystemTime::now()),
            "client": self.client,
            "method": self.method,
            "path": self.target,
            "status": self.status,
            "bytes": self.bytes,
            "range": self.range,
            "duration": self.duration.as_secs_f64(),
            "ttfb": self.ttfb.as_secs_f64(),
            "cache": self.result,
            "mirror": self.mirror,
            "user_agent": self.user_agent,
            "referer": self.referer,
        })
        .to_string()
    }
}

/// Civil date (UTC) of a Unix time: (year, month, day, secs of day).
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs % 86_400, d.subsec_millis())
}

/// `28/Nov/2026:13:05:01 +0000`, the combined log format's time.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, s, _) = civil(t);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-28T13:05:01.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, s, ms) = civil(t);
    format!(
        "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A response body that counts what it sends and logs when it goes.
struct LoggedBody {
    inner: Body,
    entry: Entry,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.entry.first_byte.is_none() && !data.is_empty() {
                        this.entry.first_byte = Some(this.entry.started.elapsed());
                    }
                    this.entry.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.entry.ended = true;
                }
            }
            Poll::Ready(Some(Err(_))) => this.entry.failed = true,
            Poll::Ready(None) => this.entry.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Tells the access log which mirror and cache result `resp` is about.
pub(crate) fn tag(
    mut resp: Response<Body>,
    mirror: Option<String>,
    result: Option<CacheResult>,
) -> Response<Body> {
    let info = resp.extensions_mut().get_or_insert_with(RouteInfo::default);
    if mirror.is_some() {
        info.mirror = mirror;
    }
    if result.is_some() {
        info.result = result;
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_871_101_123);
        assert_eq!(clf_time(t), "28/Nov/2026:13:05:01 +0000");
        assert_eq!(rfc3339(t), "2026-11-28T13:05:01.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn durations_have_six_decimals() {
        let s = |d: Duration| Seconds(d).to_string();
        assert_eq!(s(Duration::ZERO), "0.000000");
        assert_eq!(s(Duration::from_nanos(4_211_999)), "0.004211");
        assert_eq!(s(Duration::from_micros(12_000_001)), "12.000001");
    }

    #[test]
    fn quoted_fields_cannot_end_their_quotes() {
        let q = |s: &str| quoted(Some(s)).to_string();
        assert_eq!(q(r#"a "b" c\d"#), "a _b_ c_d");
        assert_eq!(q(""), "");
        assert_eq!(quoted(None).to_string(), "-");
        assert_eq!(q("\"\""), "__");
        assert_eq!(q("ünï\"cødé"), "ünï_cødé");
        assert_eq!(Replaced("/a b\"c", b"\" ").to_string(), "/a_b_c");
    }
}
