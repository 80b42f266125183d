//! The endpoint's hottest request without hyper: `GET /blobs/<blake3>`
//! with one `Range` of a complete object, the request VM tools and
//! benchmarks send by the ten thousand on a keep-alive connection.
//!
//! Profiled under wrk (random 64 KiB ranges, BENCHMARKS.md "Serving"), the
//! endpoint's system calls per request equal nginx's, and what it spends
//! beyond nginx is user space: hyper's request and response types (the
//! `HeaderMap`s, the boxed body and service futures, parse and encode),
//! the access log's wrapper body and the allocations around them. Here
//! such a request is parsed in place (`httparse`, as hyper does), its head
//! written from the object's prepared header values and its body sent with
//! `sendfile`: the same system calls, none of that machinery.
//!
//! # Which requests
//!
//! A request whose head is complete in the buffer and is all of:
//!
//! * `GET` over HTTP/1.1 of `/blobs/` and 64 lower-case hex digits;
//! * no header but `Host`, `User-Agent`, `Accept`, `Accept-Encoding`,
//!   `Referer`, one `Range` and `Connection` (`keep-alive` or `close`),
//!   each value visible ASCII;
//! * a `Range` that [`parse_range_header`] reads as one satisfiable range;
//! * an object that is complete, its bytes in its data file.
//!
//! Anything else (other routes, HEAD, conditionals, several ranges, an
//! object still filling, a malformed head) goes to hyper with the bytes
//! read so far ([`Exit::HandOff`]), and the connection stays with hyper
//! from then on. The answer is what hyper writes for the same request,
//! byte for byte bar the `Date` (the tests compare the two), with the
//! same access log line and metrics.
//!
//! Time-outs and the drain are hyper's: a head must be complete within the
//! header read time-out of the end of the previous response (or of the
//! accept), and a drain closes the connection between responses.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use cache_core::{Algo, Digest};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::access::{per_second, record, Line, SecondCache};
use super::app::App;
use super::meta::CONTENT_TYPE;
use super::range::{content_range, parse_range_header, RangeOutcome};
use super::sendfile::{writev, MIN_SENDFILE};

/// Header fields a fast request may have at most (more: hyper's).
const MAX_HEADERS: usize = 16;

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 4096;

/// How a connection left the fast path.
pub(crate) enum Exit {
    /// It is closed: the client went away or asked to close, a time-out,
    /// the drain, an I/O error.
    Closed,
    /// hyper takes it over: the socket and the bytes read from it that no
    /// response answered yet.
    HandOff(TcpStream, BytesMut),
}

/// What the fast path of one endpoint needs (see the module docs).
pub(crate) struct FastPath {
    pub(crate) app: Arc<App>,
    pub(crate) header_read_timeout: Duration,
    /// Turns true when the endpoint drains.
    pub(crate) draining: watch::Receiver<bool>,
}

/// A fast request's head, as positions in the read buffer (the object is
/// looked up before it is answered, and the buffer stays as it is).
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head.
    len: usize,
    target: Range<usize>,
    range: Range<usize>,
    user_agent: Option<Range<usize>>,
    referer: Option<Range<usize>>,
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    Fast(Head),
    /// hyper's to answer.
    Other,
}

/// Reads the head at the start of `buf` (see the module docs).
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Parsed::Other;
    }
    let Some(target) = req.path else {
        return Parsed::Other;
    };
    let is_name = target.strip_prefix("/blobs/").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !is_name {
        return Parsed::Other;
    }
    // Positions in `buf` of slices httparse took from it.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let (mut range, mut user_agent, mut referer, mut close) = (None, None, None, false);
    for h in req.headers.iter() {
        if !h
            .value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Parsed::Other;
        }
        let name = h.name;
        let once = |slot: &mut Option<Range<usize>>| {
            let first = slot.is_none();
            *slot = Some(at(h.value));
            first
        };
        let fine = if name.eq_ignore_ascii_case("range") {
            once(&mut range)
        } else if name.eq_ignore_ascii_case("user-agent") {
            once(&mut user_agent)
        } else if name.eq_ignore_ascii_case("referer") {
            once(&mut referer)
        } else if name.eq_ignore_ascii_case("connection") {
            close |= h.value.eq_ignore_ascii_case(b"close");
            close || h.value.eq_ignore_ascii_case(b"keep-alive")
        } else {
            ["host", "accept", "accept-encoding"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        };
        if !fine {
            return Parsed::Other;
        }
    }
    let Some(range) = range else {
        return Parsed::Other;
    };
    Parsed::Fast(Head {
        len,
        target: at(target.as_bytes()),
        range,
        user_agent,
        referer,
        close,
    })
}

impl FastPath {
    /// Serves `stream`'s requests while they take the fast path.
    pub(crate) async fn serve(mut self, stream: TcpStream, client: &str) -> Exit {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut out = Vec::with_capacity(512);
        loop {
            let deadline = tokio::time::Instant::now() + self.header_read_timeout;
            let head = loop {
                match parse(&buf) {
                    // hyper answers a head over the limit (431).
                    Parsed::Fast(head) if head.len > self.app.max_header_bytes => {
                        return Exit::HandOff(stream, buf)
                    }
                    Parsed::Fast(head) => break head,
                    Parsed::Other => return Exit::HandOff(stream, buf),
                    Parsed::Partial if buf.len() >= self.app.max_header_bytes => {
                        return Exit::HandOff(stream, buf)
                    }
                    Parsed::Partial => {}
                }
                if *self.draining.borrow() {
                    return Exit::Closed;
                }
                tokio::select! {
                    ready = stream.readable() => if ready.is_err() {
                        return Exit::Closed;
                    },
                    // An error: the endpoint is gone without a drain.
                    changed = self.draining.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return Exit::Closed,
                    },
                    () = tokio::time::sleep_until(deadline) => return Exit::Closed,
                }
                buf.reserve(READ_SIZE);
                match stream.try_read_buf(&mut buf) {
                    Ok(0) => return Exit::Closed,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Exit::Closed,
                }
            };
            let started = Instant::now();
            let Some(mut answer) = self.answer(&buf, &head, &mut out).await else {
                return Exit::HandOff(stream, buf);
            };
            let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("");
            let sent = answer.send(&stream, &mut out, started).await;
            let bytes = match sent {
                Ok(n) | Err((n, _)) => n,
            };
            let ttfb = answer.head_sent.unwrap_or_else(|| started.elapsed());
            self.app.metrics.fast_path_request();
            record(
                &self.app,
                &Line {
                    client,
                    method: "GET",
                    target: text(&head.target),
                    version: "HTTP/1.1",
                    status: 206,
                    bytes,
                    referer: head.referer.as_ref().map(text),
                    user_agent: head.user_agent.as_ref().map(text),
                    range: Some(text(&head.range)),
                    duration: started.elapsed(),
                    ttfb,
                    result: if sent.is_ok() { "hit" } else { "error" },
                    mirror: None,
                },
            );
            if sent.is_err() {
                return Exit::Closed;
            }
            buf.advance(head.len);
            if head.close || *self.draining.borrow() {
                let mut stream = stream;
                let _ = stream.shutdown().await;
                return Exit::Closed;
            }
        }
    }

    /// The answer to `head`, when the object is there for the fast path;
    /// its head (bar `Date` and the blank line) goes into `out`.
    async fn answer(&self, buf: &[u8], head: &Head, out: &mut Vec<u8>) -> Option<Answer> {
        let hex = std::str::from_utf8(&buf[head.target.clone()])
            .ok()?
            .strip_prefix("/blobs/")?;
        let digest = Digest::from_hex(Algo::Blake3, hex).ok()?;
        let hot = self.app.hot_blob(&digest).await.ok()??;
        if !hot.is_complete() {
            return None;
        }
        let object = &hot.object;
        let len = object.len();
        let range = std::str::from_utf8(&buf[head.range.clone()]).ok()?;
        let r = match parse_range_header(range, len, self.app.max_ranges) {
            RangeOutcome::Ranges(ranges) if ranges.len() == 1 => ranges[0].clone(),
            _ => return None,
        };
        let body = object.try_read_at(r.start, r.end - r.start).ok()?;
        let file = object.file_span(&body)?;
        self.app.track(object);
        let h = out;
        h.clear();
        h.extend_from_slice(b"HTTP/1.1 206 Partial Content\r\n");
        for (name, value) in hot.meta.fields() {
            field(h, name.as_str(), value.as_bytes());
        }
        field(h, "content-type", CONTENT_TYPE.as_bytes());
        field(h, "content-range", content_range(&r, len).as_bytes());
        field(
            h,
            "content-length",
            (r.end - r.start).to_string().as_bytes(),
        );
        if head.close {
            field(h, "connection", b"close");
        }
        Some(Answer {
            body,
            file: Some(file),
            head_sent: None,
            _reading: object.reader(),
        })
    }
}

fn field(h: &mut Vec<u8>, name: &str, value: &[u8]) {
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(b": ");
    h.extend_from_slice(value);
    h.extend_from_slice(b"\r\n");
}

/// A response ready to go (its head is in the connection's `out`): its
/// body, from memory or from the data file.
struct Answer {
    body: Bytes,
    file: Option<cache_core::FileSpan>,
    /// When the head went out, from the request's start (its first byte
    /// with the head, as hyper's log has it).
    head_sent: Option<Duration>,
    /// Counts as a reader of the object while the answer lives, as
    /// hyper's body stream does (the status page's readers; an object
    /// being read is not let go of).
    _reading: cache_core::ObjectReader,
}

impl Answer {
    /// Writes the response, its head from `out` (`Date` appended here);
    /// the body bytes sent, and with an error the bytes sent before it.
    async fn send(
        &mut self,
        stream: &TcpStream,
        out: &mut Vec<u8>,
        started: Instant,
    ) -> Result<u64, (u64, io::Error)> {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n\r\n");
        let n = self.body.len() as u64;
        let file = self.file.take().filter(|_| n >= MIN_SENDFILE);
        match file {
            // Small: head and body in one `writev` from memory (see
            // `MIN_SENDFILE`).
            None => {
                write_all(stream, &mut [IoSlice::new(out), IoSlice::new(&self.body)])
                    .await
                    .map_err(|(sent, e)| (sent.saturating_sub(out.len() as u64), e))?;
                self.head_sent = Some(started.elapsed());
                Ok(n)
            }
            Some(file) => {
                write_all(stream, &mut [IoSlice::new(out)])
                    .await
                    .map_err(|(_, e)| (0, e))?;
                self.head_sent = Some(started.elapsed());
                send_file(stream, file.as_fd(), file.offset(), n).await
            }
        }
    }
}

/// Writes all of `bufs` (advancing them); with an error, the bytes
/// written before it.
async fn write_all(
    stream: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
) -> Result<u64, (u64, io::Error)> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0;
    while done < total {
        let fd = stream.as_raw_fd();
        match stream.try_io(Interest::WRITABLE, || writev(fd, bufs)) {
            Ok(0) => return Err((done as u64, io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                done += n;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = stream.writable().await {
                    return Err((done as u64, e));
                }
            }
            Err(e) => return Err((done as u64, e)),
        }
    }
    Ok(done as u64)
}

/// `sendfile` of `n` bytes of `file` from `offset` to the socket.
async fn send_file(
    stream: &TcpStream,
    file: BorrowedFd<'_>,
    offset: u64,
    n: u64,
) -> Result<u64, (u64, io::Error)> {
    let (sock, file) = (stream.as_raw_fd(), file.as_raw_fd());
    let mut sent = 0u64;
    while sent < n {
        let result = stream.try_io(Interest::WRITABLE, || {
            let mut at = (offset + sent) as libc::off_t;
            let left = (n - sent).min(1 << 30) as usize;
            // SAFETY: two open descriptors and a valid offset pointer;
            // sendfile reads the file, not our memory.
            let r = unsafe { libc::sendfile(sock, file, &mut at, left) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as u64)
            }
        });
        match result {
            // The file ended early: a store's data file never does.
            Ok(0) => return Err((sent, io::ErrorKind::UnexpectedEof.into())),
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = stream.writable().await {
                    return Err((sent, e));
                }
            }
            Err(e) => return Err((sent, e)),
        }
    }
    Ok(sent)
}

/// Appends the `Date` value of now (IMF-fixdate, as hyper writes it),
/// formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static LAST: SecondCache = const { SecondCache::new((u64::MAX, String::new())) };
    }
    per_second(&LAST, httpdate::fmt_http_date, |text| {
        out.extend_from_slice(text.as_bytes())
    });
}

/// A stream that first yields bytes already read from it: how a
/// connection the fast path read from goes to hyper.
pub(crate) struct Rewind<T> {
    read: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(read: Bytes, inner: T) -> Rewind<T> {
        Rewind { read, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "/blobs/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn req(lines: &[&str]) -> String {
        let mut s = format!("GET {NAME} HTTP/1.1\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    fn fast(text: &str) -> Head {
        match parse(text.as_bytes()) {
            Parsed::Fast(h) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_range_request_is_fast_with_its_fields_found() {
        let text = req(&[
            "Host: x",
            "User-Agent: wrk",
            "Range: bytes=0-65535",
            "Accept: */*",
        ]);
        let h = fast(&text);
        assert_eq!(h.len, text.len());
        assert_eq!(&text[h.target.clone()], NAME);
        assert_eq!(&text[h.range.clone()], "bytes=0-65535");
        assert_eq!(&text[h.user_agent.clone().unwrap()], "wrk");
        assert_eq!(h.referer, None);
        assert!(!h.close);
        assert!(fast(&req(&["Range: bytes=1-2", "Connection: Close"])).close);
        assert!(!fast(&req(&["Range: bytes=1-2", "connection: keep-alive"])).close);
        // A pipelined second request is left in the buffer.
        let two = format!("{text}{text}");
        assert_eq!(fast(&two).len, text.len());
    }

    #[test]
    fn anything_else_is_hypers() {
        let other = |text: &str| assert_eq!(parse(text.as_bytes()), Parsed::Other, "{text:?}");
        other(&req(&["Host: x"])); // no Range: a whole-object 200
        other(&req(&["Range: bytes=0-1", "Range: bytes=2-3"]));
        other(&req(&["Range: bytes=0-1", "If-Range: \"x\""]));
        other(&req(&["Range: bytes=0-1", "If-None-Match: *"]));
        other(&req(&["Range: bytes=0-1", "Connection: upgrade"]));
        other(&req(&["Range: bytes=0-1", "Transfer-Encoding: chunked"]));
        other(&req(&["Range: bytes=0-1", "Content-Length: 5"]));
        other(&req(&["Range: bytes=0-1", "User-Agent: caf\u{e9}"]));
        other(&format!("HEAD {NAME} HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n"));
        other(&format!("GET {NAME} HTTP/1.0\r\nRange: bytes=0-1\r\n\r\n"));
        other("GET /blobs/00 HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n");
        other(&format!(
            "GET {NAME}/manifest HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n"
        ));
        other(&format!(
            "GET {} HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            NAME.to_uppercase().replace("/BLOBS/", "/blobs/")
        ));
        other(&format!(
            "GET {NAME}?x HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n"
        ));
        other("GET /status HTTP/1.1\r\n\r\n");
        other("\u{1}\u{2}garbage\r\n\r\n");
        let many: Vec<String> = (0..MAX_HEADERS + 1)
            .map(|i| format!("Accept: {i}"))
            .collect();
        let mut lines: Vec<&str> = many.iter().map(String::as_str).collect();
        lines.push("Range: bytes=0-1");
        other(&req(&lines));
    }

    proptest::proptest! {
        /// Whatever arrives, `parse` never panics, and a fast head's
        /// positions lie inside it and hold what they name.
        #[test]
        fn any_bytes_parse_to_positions_inside_the_head(
            prefix in proptest::prop_oneof![
                proptest::strategy::Just(Vec::new()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            ],
            extra in proptest::collection::vec(
                "(Host|User-Agent|Referer|Accept|Connection|X-[a-z]{1,4}|[ -~]{0,8}): [ -~]{0,12}",
                0..4,
            ),
            range in "[ -~]{0,20}",
            cut in 0usize..400,
        ) {
            let mut lines: Vec<String> = extra;
            lines.push(format!("Range: {range}"));
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut bytes = prefix;
            bytes.extend_from_slice(req(&refs).as_bytes());
            let bytes = &bytes[..cut.min(bytes.len())];
            if let Parsed::Fast(h) = parse(bytes) {
                FAST_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                proptest::prop_assert!(h.len <= bytes.len());
                for r in [Some(&h.target), Some(&h.range), h.user_agent.as_ref(), h.referer.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    proptest::prop_assert!(r.start <= r.end && r.end <= h.len);
                }
                proptest::prop_assert!(bytes[h.target.clone()].starts_with(b"/blobs/"));
            }
        }
    }

    /// Fast heads the property above met (it must meet some to mean
    /// anything; checked below).
    static FAST_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn the_property_meets_fast_heads() {
        any_bytes_parse_to_positions_inside_the_head();
        assert!(FAST_SEEN.load(std::sync::atomic::Ordering::Relaxed) > 10);
    }

    #[test]
    fn a_head_cut_anywhere_waits_for_more() {
        let text = req(&["Host: x", "Range: bytes=0-1"]);
        for cut in 0..text.len() {
            assert_eq!(
                parse(&text.as_bytes()[..cut]),
                Parsed::Partial,
                "cut at {cut}"
            );
        }
    }
}
