//! Object bytes go to TCP clients with `sendfile(2)` from the data file
//! instead of being copied out of its memory map. A leaf: it depends on no
//! other endpoint module.
//!
//! Body frames are [`Bytes`] slices of the data file's map (cache-core
//! hands out no copies) and hyper writes them with `writev`: the kernel
//! copies every byte from the map into socket buffers. Profiled under wrk
//! (random 64 KiB ranges, BENCHMARKS.md "Serving"), that copy was a third
//! of the endpoint's CPU, and each page copied counts in the process's RSS
//! as long as it stays mapped (1000 readers of a 1 GiB object: an RSS of
//! the whole object). `sendfile` hands the page cache pages to the socket
//! without either.
//!
//! hyper owns the connection and knows only `Bytes`, so the two meet by
//! address: when the body yields a frame that is a slice of a data file's
//! map, it registers the slice's address range with its [`FileSpan`] in
//! the connection's [`Spans`]; the connection's stream, [`SendfileTcp`],
//! looks up every `IoSlice` hyper asks it to write, and sends one that
//! lies in a registered range with `sendfile` from the file at the
//! matching offset (the bytes before it, the response head, with `writev`
//! first: see [`MIN_SENDFILE`] for why not `MSG_MORE`). A registered
//! range keeps its `Bytes` (so the map, and with it the address range,
//! stays) and its `FileSpan` (so the file stays open); the file's bytes
//! at that offset are the slice's bytes (done chunks are never written
//! again). Anything else is written as before.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::FileSpan;
use parking_lot::Mutex;
#[cfg(target_os = "linux")]
use {
    std::io::{self, IoSlice},
    std::os::fd::{AsFd, AsRawFd},
    std::pin::Pin,
    std::task::{ready, Context, Poll},
    tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    tokio::net::TcpStream,
};

/// Responses with fewer body bytes than this are written from memory:
/// below it the copy costs less than `sendfile`'s per-page work. Measured
/// under wrk on loopback (kernel 6.18, BENCHMARKS.md "Serving"), CPU per
/// request, copy against sendfile: 4 KiB ranges 24.6 against 24.9 us,
/// 16 KiB 25.3 against 22.6 us, 64 KiB 33 against 25 us.
///
/// The head goes out with a plain `writev` before the body's `sendfile`,
/// not corked with `MSG_MORE`: corked, the same 64 KiB ranges cost 46 us
/// per request (the kernel's TCP transmit path, not our code), which is
/// what once made `sendfile` look slower than the copy for them.
///
/// Decided per response, not per frame: the first and last frames of a
/// large range are partial chunks, and written from the map they would
/// map (and count in the RSS) a quarter of what 1000 readers of 4 MiB
/// ranges read.
pub(crate) const MIN_SENDFILE: u64 = 16 << 10;

/// Registered ranges a connection keeps at most (a response registers one
/// per body frame and they are written in order; the bound only matters
/// if a body's frames were never written).
const MAX_SPANS: usize = 64;

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Span {
    start: usize,
    len: usize,
    file: FileSpan,
    /// Keeps the map, and with it this address range, alive.
    _bytes: Bytes,
}

/// The file-backed body frames of one connection not yet written (see the
/// module docs).
#[derive(Default)]
pub(crate) struct Spans {
    list: Mutex<VecDeque<Span>>,
}

impl Spans {
    /// Registers `frame`, whose bytes lie in `file` (from
    /// `Object::file_span` of the same bytes), so that writing it sends
    /// from the file.
    pub(crate) fn register(&self, frame: &Bytes, file: FileSpan) {
        if frame.is_empty() {
            return;
        }
        let mut list = self.list.lock();
        if list.len() >= MAX_SPANS {
            list.pop_front();
        }
        list.push_back(Span {
            start: frame.as_ptr() as usize,
            len: frame.len(),
            file,
            _bytes: frame.clone(),
        });
    }
}

/// The [`Spans`] of the connection a request came on (TCP only), as a
/// request extension for the handlers.
#[derive(Clone)]
pub(crate) struct ConnSpans(pub(crate) Arc<Spans>);

/// Index of the span `slice` lies in.
#[cfg(target_os = "linux")]
fn find(list: &VecDeque<Span>, slice: &[u8]) -> Option<usize> {
    if slice.is_empty() {
        return None;
    }
    let at = slice.as_ptr() as usize;
    list.iter()
        .position(|s| at >= s.start && at + slice.len() <= s.start + s.len)
}

/// A TCP connection of the endpoint whose writes send registered body
/// frames with `sendfile` (see the module docs). Linux only; elsewhere
/// connections are plain `TcpStream`s and nothing registers.
#[cfg(target_os = "linux")]
pub(crate) struct SendfileTcp {
    inner: TcpStream,
    spans: Arc<Spans>,
}

#[cfg(target_os = "linux")]
impl SendfileTcp {
    pub(crate) fn new(inner: TcpStream) -> (SendfileTcp, Arc<Spans>) {
        let spans = Arc::new(Spans::default());
        (
            SendfileTcp {
                inner,
                spans: spans.clone(),
            },
            spans,
        )
    }

    /// One non-blocking write of `bufs`: the memory slices before the
    /// first registered one with `writev`, then that registered slice with
    /// `sendfile`. Returns the bytes written; `WouldBlock` only when it
    /// wrote nothing.
    fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.inner.as_raw_fd();
        let mut list = self.spans.list.lock();
        let first_file = bufs.iter().position(|b| find(&list, b).is_some());
        let Some(k) = first_file else {
            drop(list);
            return writev(fd, bufs);
        };
        let mut total = 0;
        if k > 0 {
            let want: usize = bufs[..k].iter().map(|b| b.len()).sum();
            let n = writev(fd, &bufs[..k])?;
            total += n;
            if n < want {
                return Ok(total);
            }
        }
        let slice = &bufs[k];
        let Some(i) = find(&list, slice) else {
            return Ok(total);
        };
        let span = &list[i];
        let from = slice.as_ptr() as usize - span.start;
        let mut offset = (span.file.offset() + from as u64) as libc::off_t;
        // SAFETY: sendfile with two open descriptors and a valid offset
        // pointer; it reads the file, not our memory.
        let n =
            unsafe { libc::sendfile(fd, span.file.as_fd().as_raw_fd(), &mut offset, slice.len()) };
        let n = if n > 0 {
            n as usize
        } else {
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
                return if total > 0 { Ok(total) } else { Err(e) };
            }
            // Anything else (an error, or 0: the file ended early, which
            // a store's data file never does): the same bytes from memory.
            tracing::debug!(error = %e, n, "sendfile failed; writing from the map");
            match writev(fd, std::slice::from_ref(slice)) {
                Ok(n) => n,
                Err(e) => return if total > 0 { Ok(total) } else { Err(e) },
            }
        };
        if from + n >= span.len {
            list.remove(i);
        }
        Ok(total + n)
    }
}

/// `writev` of `bufs`, as `sendmsg` with `MSG_NOSIGNAL`: a peer that went
/// away is an `EPIPE` error even in a program that did not ignore SIGPIPE.
#[cfg(target_os = "linux")]
pub(crate) fn writev(fd: std::os::fd::RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let iovcnt = bufs.len().min(1024);
    // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive
    // the call, and sendmsg only reads them.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iovcnt as _;
        libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(target_os = "linux")]
impl AsyncRead for SendfileTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(target_os = "linux")]
impl AsyncWrite for SendfileTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.inner.poll_write_ready(cx))?;
            // try_io clears the readiness when the write would block.
            match this
                .inner
                .try_io(Interest::WRITABLE, || this.write_now(bufs))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
