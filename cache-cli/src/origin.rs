//! The demo's built-in origin: an HTTP server for one generated image
//! (bytes computed from their offset on the fly, never stored), with
//! single-range requests, a strong ETag, `If-Range`, and a bandwidth limit
//! shared by all connections — a stand-in for a far server on a WAN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Bytes per body piece (and per throttle step).
const PIECE: u64 = 64 << 10;

/// The generated image: byte `p` is byte `p % 8` of `mix(seed ^ p / 8)`.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub len: u64,
    pub seed: u64,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Image {
    /// Fills `buf` with the bytes at `offset`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut i = 0;
        while i < buf.len() {
            let word = mix(self.seed ^ (pos / 8)).to_le_bytes();
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&word[skip..skip + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// The bytes of `start..end`.
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let mut v = vec![0u8; (end - start) as usize];
        self.fill(start, &mut v);
        v
    }

    /// BLAKE3 of the whole image, computed from the generator (blocking).
    pub fn blake3(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < self.len {
            let n = (self.len - pos).min(buf.len() as u64) as usize;
            self.fill(pos, &mut buf[..n]);
            h.update(&buf[..n]);
            pos += n as u64;
        }
        h.finalize()
    }

    fn etag(&self) -> String {
        format!("\"demo-{:x}-{:x}\"", self.seed, self.len)
    }
}

/// What the origin sent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Body bytes of every response except one-byte probes (`bytes=0-0`).
    pub body_bytes: AtomicU64,
    /// Requests for `bytes=0-0` (how clients learn size and ETag).
    pub probes: AtomicU64,
    /// All requests.
    pub requests: AtomicU64,
}

/// A bandwidth limit shared by all responses: each piece gets the next
/// slot of `len / rate` seconds (no burst credit builds up while idle).
struct Limiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl Limiter {
    async fn take(&self, n: u64) {
        let until = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            *next
        };
        tokio::time::sleep_until(until.into()).await;
    }
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl Origin {
    /// Serves `image` at any path on 127.0.0.1 (random port), at `rate`
    /// bytes per second in total.
    pub async fn start(image: Image, rate: u64) -> std::io::Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let limiter = Arc::new(Limiter {
            rate: rate.max(1),
            next: Mutex::new(Instant::now()),
        });
        let st = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, lim) = (st.clone(), limiter.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, lim) = (st.clone(), lim.clone());
                        async move { Ok::<_, Infallible>(respond(image, st, lim, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Origin { addr, stats, task })
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new().boxed()
}

/// Parses a single `bytes=` range against `len`: `Ok(None)` = whole body,
/// `Err(())` = unsatisfiable.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multi-range: answer with the whole body
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len)
        };
        (s, e)
    };
    if start >= len || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn respond(
    image: Image,
    stats: Arc<Stats>,
    limiter: Arc<Limiter>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let etag = image.etag();
    let base = |status| {
        Response::builder()
            .status(status)
            .header(header::ETAG, etag.as_str())
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return base(StatusCode::METHOD_NOT_ALLOWED)
            .body(empty())
            .unwrap_or_default();
    }
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if if_range_ok => parse_range(v, image.len),
        _ => Ok(None),
    };
    let (status, start, end) = match range {
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Ok(None) => (StatusCode::OK, 0, image.len),
        Err(()) => {
            return base(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", image.len))
                .body(empty())
                .unwrap_or_default();
        }
    };
    let mut resp = base(status).header(header::CONTENT_LENGTH, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end - 1, image.len),
        );
    }
    if req.method() == Method::HEAD {
        return resp.body(empty()).unwrap_or_default();
    }
    let probe = status == StatusCode::PARTIAL_CONTENT && start == 0 && end == 1;
    if probe {
        stats.probes.fetch_add(1, Ordering::Relaxed);
    }
    let stream = futures::stream::unfold(start, move |pos| {
        let (limiter, stats) = (limiter.clone(), stats.clone());
        async move {
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(PIECE - pos % PIECE);
            limiter.take(n).await;
            let mut buf = vec![0u8; n as usize];
            image.fill(pos, &mut buf);
            if !probe {
                stats.body_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(buf))), pos + n))
        }
    });
    resp.body(StreamBody::new(stream).boxed())
        .unwrap_or_default()
}
