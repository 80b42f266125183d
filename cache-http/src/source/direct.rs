//! Range bodies that move into the data file in the kernel: Linux `splice`
//! from the socket through a pipe into the file
//! ([`cache_core::DirectBody`]).
//!
//! Why: a fill that copies every byte through user space (hyper's buffer,
//! then `pwrite`) is bound by the CPU on two cores; `splice` saves that
//! copy and the buffers (BENCHMARKS.md, fill at the disk's speed).
//!
//! Only where nothing of hyper is needed: a plain `http://` URL (the one
//! range reads go to, after redirects), no proxy, no rate limit. The
//! request is the one [`super::read`] sends (same headers, credentials and
//! `If-Range`). The answer must be a 206 for exactly the range, with a
//! Content-Length and no transfer coding, and passes the checks of
//! [`check_partial`]. Anything else declines (`None`): another status, a
//! redirect, a failed connection. The fill then asks `read_range`, which
//! retries, follows redirects and reports errors as always. A body that
//! breaks later is taken up the same way from its first chunk not
//! committed. Connections are kept alive between requests: a few idle ones
//! per source, tried before a new one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use cache_core::{DirectBody, MoveError, SourceError, SourceErrorKind, SourceInfo};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Uri};
use parking_lot::Mutex;

use super::read::{check_partial, range_headers};
use super::request::request_headers;
use super::Inner;

/// Idle connections kept per source...
const MAX_IDLE: usize = 16;
/// ... and for how long: servers close idle connections after a while
/// (nginx: 75 s), and a closed one would otherwise hold its descriptor
/// until the source goes away.
const IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Pipe capacity asked for: one chunk of the default size per `splice`
/// pair (the kernel's limit for unprivileged pipes; smaller if refused).
const PIPE_SIZE: usize = 1 << 20;

/// [`cache_core::DirectRanges`] for [`super::HttpSource`].
#[derive(Debug)]
pub(crate) struct DirectRanges {
    inner: Arc<Inner>,
    /// Idle keep-alive connections.
    idle: Arc<Mutex<Vec<Idle>>>,
    /// Set when a file refused `splice` (a file system without it): from
    /// then on every body goes through hyper.
    refused: Arc<std::sync::atomic::AtomicBool>,
}

/// A keep-alive connection waiting for the next request.
#[derive(Debug)]
struct Idle {
    /// The `host:port` it goes to.
    authority: String,
    sock: TcpStream,
    since: std::time::Instant,
}

/// Drops connections idle for longer than [`IDLE_FOR`].
fn prune(idle: &mut Vec<Idle>) {
    idle.retain(|i| i.since.elapsed() < IDLE_FOR);
}

impl DirectRanges {
    pub(crate) fn new(inner: Arc<Inner>) -> DirectRanges {
        DirectRanges {
            inner,
            idle: Arc::default(),
            refused: Arc::default(),
        }
    }

    fn take_idle(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock();
        prune(&mut idle);
        let at = idle.iter().rposition(|i| i.authority == authority)?;
        Some(idle.swap_remove(at).sock)
    }
}

/// How one request on one connection went.
enum Exchange {
    /// A response head, the connection, and body bytes read with the head.
    Answer(TcpStream, http::Response<()>, Vec<u8>),
    /// The connection closed before any byte of an answer (an idle
    /// connection the server had closed).
    Closed,
    Failed,
}

impl cache_core::DirectRanges for DirectRanges {
    fn open(&self, range: Range<u64>, expect: &SourceInfo) -> Option<Box<dyn DirectBody>> {
        let inner = &self.inner;
        if inner.limiter.is_some()
            || range.is_empty()
            || self.refused.load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let uri = inner.current();
        if uri.scheme_str() != Some("http") || inner.matcher.intercept(&uri).is_some() {
            return None;
        }
        let authority = host_port(&uri)?;
        let asked = range_headers(range.clone(), expect).ok()?;
        let head = request_head(&uri, &authority, &request_headers(inner, &uri, &asked));
        let stall = inner.config.stall_timeout;
        for fresh in [false, true] {
            let sock = if fresh {
                connect(&uri, &authority, inner.config.connect_timeout)?
            } else {
                match self.take_idle(&authority) {
                    Some(sock) => sock,
                    None => continue,
                }
            };
            sock.set_read_timeout(Some(stall)).ok()?;
            sock.set_write_timeout(Some(stall)).ok()?;
            match exchange(sock, &head) {
                Exchange::Answer(sock, resp, leftover) => {
                    inner
                        .answered
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Body::start(sock, &resp, leftover, range, expect, authority, self)
                        .map(|b| Box::new(b) as Box<dyn DirectBody>);
                }
                Exchange::Closed if !fresh => continue,
                Exchange::Closed | Exchange::Failed => return None,
            }
        }
        None
    }
}

/// `host:port` of `uri` (the port made explicit), for `Host` and the pool.
fn host_port(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

/// The request head of a GET of `uri` with `headers`.
fn request_head(uri: &Uri, authority: &str, headers: &HeaderMap) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    if !headers.contains_key(HOST) {
        // The default port is left out, as clients do.
        let host = authority.strip_suffix(":80").unwrap_or(authority);
        head.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A new connection to `uri`'s host, each of its addresses in turn.
fn connect(uri: &Uri, authority: &str, timeout: std::time::Duration) -> Option<TcpStream> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Some(sock);
            }
            Err(e) => tracing::debug!(%authority, %addr, "direct connect failed: {e}"),
        }
    }
    None
}

/// Sends `head` and reads the response head.
fn exchange(mut sock: TcpStream, head: &[u8]) -> Exchange {
    if sock.write_all(head).is_err() {
        return Exchange::Closed;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    loop {
        if have == buf.len() {
            if buf.len() >= MAX_HEAD {
                return Exchange::Failed;
            }
            buf.resize(buf.len() * 2, 0);
        }
        match sock.read(&mut buf[have..]) {
            Ok(0) if have == 0 => return Exchange::Closed,
            Ok(0) => return Exchange::Failed,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if have == 0 && e.kind() == io::ErrorKind::ConnectionReset => {
                return Exchange::Closed
            }
            Err(_) => return Exchange::Failed,
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf[..have]) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Exchange::Failed,
            Ok(httparse::Status::Complete(len)) => {
                if parsed.version != Some(1) {
                    return Exchange::Failed;
                }
                let mut resp = http::Response::builder().status(parsed.code.unwrap_or(0));
                for h in parsed.headers.iter() {
                    resp = resp.header(h.name, h.value);
                }
                return match resp.body(()) {
                    Ok(resp) => Exchange::Answer(sock, resp, buf[len..have].to_vec()),
                    Err(_) => Exchange::Failed,
                };
            }
        }
    }
}

/// A body being moved: what is left of it, and where its connection goes
/// once it is all read.
struct Body {
    sock: Option<TcpStream>,
    /// Read and write ends of the pipe between socket and file.
    pipe: (OwnedFd, OwnedFd),
    /// Body bytes that came with the response head, written first.
    leftover: Vec<u8>,
    /// Bytes of the body not moved yet.
    left: u64,
    /// Where the body stands in the object (for messages).
    at: u64,
    keep_alive: bool,
    broken: bool,
    authority: String,
    idle: Arc<Mutex<Vec<Idle>>>,
    refused: Arc<std::sync::atomic::AtomicBool>,
    stall: std::time::Duration,
}

impl Body {
    /// The body of `resp` to a request for `range`, when it is one this
    /// module moves (see the module docs).
    fn start(
        sock: TcpStream,
        resp: &http::Response<()>,
        leftover: Vec<u8>,
        range: Range<u64>,
        expect: &SourceInfo,
        authority: String,
        ranges: &DirectRanges,
    ) -> Option<Body> {
        let h = resp.headers();
        if resp.status() != StatusCode::PARTIAL_CONTENT
            || h.contains_key(TRANSFER_ENCODING)
            || !h.contains_key(CONTENT_LENGTH)
            || check_partial(resp, range.clone(), expect).is_err()
            || leftover.len() as u64 > range.end - range.start
        {
            return None;
        }
        let keep_alive = !h
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors were just created and are owned here.
        let pipe = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A refusal leaves the default size: more calls, same bytes.
        // SAFETY: fcntl on a descriptor owned here.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        Some(Body {
            sock: Some(sock),
            pipe,
            leftover,
            left: range.end - range.start,
            at: range.start,
            keep_alive,
            broken: false,
            authority,
            idle: ranges.idle.clone(),
            refused: ranges.refused.clone(),
            stall: ranges.inner.config.stall_timeout,
        })
    }

    /// The body is over (broken): its connection closes, and nothing
    /// more is moved.
    fn end(&mut self) {
        self.broken = true;
        self.sock = None;
    }

    fn broken(&mut self, kind: SourceErrorKind, cause: String) -> MoveError {
        self.end();
        MoveError::Source(SourceError::new(kind, cause))
    }
}

impl DirectBody for Body {
    fn move_into(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> Result<(), MoveError> {
        if self.broken || len as u64 > self.left {
            return Err(self.broken(
                SourceErrorKind::Other,
                format!(
                    "asked for {len} bytes at byte {} of a body with {} left",
                    self.at, self.left
                ),
            ));
        }
        let Some(sock) = self.sock.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(self.broken(SourceErrorKind::Other, "body already ended".into()));
        };
        let mut off = offset as libc::loff_t;
        let mut need = len;
        if !self.leftover.is_empty() {
            let n = need.min(self.leftover.len());
            std::os::unix::fs::FileExt::write_all_at(file, &self.leftover[..n], offset)
                .map_err(MoveError::Write)?;
            self.leftover.drain(..n);
            off += n as libc::loff_t;
            need -= n;
        }
        while need > 0 {
            // SAFETY: splice between descriptors this body owns (the
            // socket, the pipe's write end); null offsets for both.
            let got = unsafe {
                libc::splice(
                    sock,
                    std::ptr::null_mut(),
                    self.pipe.1.as_raw_fd(),
                    std::ptr::null_mut(),
                    need.min(PIPE_SIZE),
                    libc::SPLICE_F_MOVE,
                )
            };
            if got == 0 {
                let at = self.at + (len - need) as u64;
                return Err(self.broken(
                    SourceErrorKind::Protocol,
                    format!("short body: the connection closed at byte {at}"),
                ));
            }
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        let cause = format!("stalled: no body bytes for {:?}", self.stall);
                        return Err(self.broken(SourceErrorKind::Network, cause));
                    }
                    _ => {
                        return Err(
                            self.broken(SourceErrorKind::Network, format!("body error: {e}"))
                        )
                    }
                }
            }
            let mut in_pipe = got as usize;
            while in_pipe > 0 {
                // SAFETY: splice from the pipe's read end into the file at
                // `off`, which the kernel advances.
                let put = unsafe {
                    libc::splice(
                        self.pipe.0.as_raw_fd(),
                        std::ptr::null_mut(),
                        file.as_raw_fd(),
                        &mut off,
                        in_pipe,
                        libc::SPLICE_F_MOVE,
                    )
                };
                if put <= 0 {
                    let e = io::Error::last_os_error();
                    if put < 0 && e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // What is left in the pipe is lost: the body is over.
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
                    ) && put < 0
                    {
                        // The file cannot take splice (its file system, or
                        // how it was opened): not a write error. The rest
                        // of this body, and every later one, goes through
                        // hyper.
                        if !self
                            .refused
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            tracing::info!("the data file refuses splice ({e}); bodies go through the HTTP client");
                        }
                        return Err(self.broken(
                            SourceErrorKind::Other,
                            format!("the data file refuses splice: {e}"),
                        ));
                    }
                    self.end();
                    return Err(MoveError::Write(if put == 0 {
                        io::ErrorKind::WriteZero.into()
                    } else {
                        e
                    }));
                }
                in_pipe -= put as usize;
                need -= put as usize;
            }
        }
        self.left -= len as u64;
        self.at += len as u64;
        if self.left == 0 {
            // The whole body was read: the connection may serve another.
            if let Some(sock) = self.sock.take().filter(|_| self.keep_alive) {
                let mut idle = self.idle.lock();
                prune(&mut idle);
                if idle.len() < MAX_IDLE {
                    idle.push(Idle {
                        authority: std::mem::take(&mut self.authority),
                        sock,
                        since: std::time::Instant::now(),
                    });
                }
            }
        }
        Ok(())
    }
}
