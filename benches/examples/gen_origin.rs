//! A generating HTTP origin for big-object benchmarks (`benches/big_object.sh`):
//! it serves one object of any length whose bytes are computed from their
//! offset on the fly, never stored, so a 64 GiB object costs no disk on the
//! origin side.
//!
//! The object: 4 KiB blocks, block `b` is `mix(seed ^ b)` and `b` (8 bytes
//! each, little-endian) followed by zeros, cut at the object's length.
//! Every block differs (so misplaced bytes change the hash) and generating
//! is about a `memset`. BLAKE3 costs the same per byte whatever the bytes.
//!
//! ```text
//! gen_origin --size 45GiB [--seed N]           serve: prints `port N` on stdout,
//!                                              the stats on stderr at SIGTERM
//! gen_origin --size 45GiB --dump | b3sum       the object's bytes on stdout
//! gen_origin --size 45GiB --blake3             its BLAKE3 (in-process)
//! ```
//!
//! Served at every path: strong ETag, `Content-Length`, `Accept-Ranges`,
//! one range per request (`bytes=a-b`, `a-`, `-n`; 206 with
//! `Content-Range`; 416 with `bytes */len` when unsatisfiable; several
//! ranges get the whole body), `If-Range` (a different ETag gets the whole
//! body), HEAD. `GET /_stats` answers, one a line, `requests N` (object
//! requests), `body_bytes N` (body bytes handed to the connections),
//! `probes N` (`bytes=0-0` requests, not in body_bytes) and
//! `first_body_ms N` (Unix time in ms of the first counted body byte, 0:
//! none), all since start or the last `GET /_stats/reset` (which answers
//! the zeroed stats).

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Bytes per marker block.
const BLOCK: u64 = 4096;
/// Bytes per body frame.
const PIECE: u64 = 256 << 10;

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy)]
struct Image {
    len: u64,
    seed: u64,
}

impl Image {
    /// The 16 marker bytes at the start of block `b`.
    fn marker(&self, b: u64) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&mix(self.seed ^ b).to_le_bytes());
        m[8..].copy_from_slice(&b.to_le_bytes());
        m
    }

    /// Writes the bytes at `offset..offset + buf.len()` into `buf`.
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        let mut b = offset / BLOCK;
        loop {
            let start = b * BLOCK;
            if start >= end {
                break;
            }
            let m = self.marker(b);
            // The part of this block's marker inside offset..end.
            let lo = offset.max(start);
            let hi = end.min(start + m.len() as u64);
            if lo < hi {
                let (ml, mh) = ((lo - start) as usize, (hi - start) as usize);
                let (bl, bh) = ((lo - offset) as usize, (hi - offset) as usize);
                buf[bl..bh].copy_from_slice(&m[ml..mh]);
            }
            b += 1;
        }
    }

    fn etag(&self) -> String {
        format!("\"gen-{:x}-{:x}\"", self.seed, self.len)
    }

    /// Calls `f` with the whole object, 1 MiB at a time.
    fn each_piece(&self, mut f: impl FnMut(&[u8])) {
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < self.len {
            let n = (self.len - pos).min(buf.len() as u64) as usize;
            self.fill(pos, &mut buf[..n]);
            f(&buf[..n]);
            pos += n as u64;
        }
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    probes: AtomicU64,
    /// Unix time in ms of the first counted body byte (0: none yet).
    first_body_ms: AtomicU64,
}

impl Stats {
    fn text(&self) -> String {
        format!(
            "requests {}\nbody_bytes {}\nprobes {}\nfirst_body_ms {}\n",
            self.requests.load(Ordering::Relaxed),
            self.body_bytes.load(Ordering::Relaxed),
            self.probes.load(Ordering::Relaxed),
            self.first_body_ms.load(Ordering::Relaxed),
        )
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.body_bytes,
            &self.probes,
            &self.first_body_ms,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn count_body(&self, n: u64) {
        if self.body_bytes.fetch_add(n, Ordering::Relaxed) == 0 {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let _ =
                self.first_body_ms
                    .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A response body generated piece by piece.
struct GenBody {
    image: Image,
    pos: u64,
    end: u64,
    /// None: not counted (probes, stats).
    stats: Option<Arc<Stats>>,
    fixed: Option<Bytes>,
}

impl GenBody {
    fn empty() -> GenBody {
        GenBody::text(Bytes::new())
    }
    fn text(b: Bytes) -> GenBody {
        GenBody {
            image: Image { len: 0, seed: 0 },
            pos: 0,
            end: 0,
            stats: None,
            fixed: Some(b),
        }
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.fixed.take() {
            return Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))));
        }
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let n = (self.end - self.pos).min(PIECE);
        let mut v = vec![0u8; n as usize];
        self.image.fill(self.pos, &mut v);
        self.pos += n;
        if let Some(s) = &self.stats {
            s.count_body(n);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(v)))))
    }

    fn is_end_stream(&self) -> bool {
        self.fixed.is_none() && self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        match &self.fixed {
            Some(b) => SizeHint::with_exact(b.len() as u64),
            None => SizeHint::with_exact(self.end - self.pos),
        }
    }
}

/// One `bytes=` range against `len`, by the endpoint's own RFC 9110
/// parser: `Ok(None)` = the whole body (no, several or invalid ranges, or
/// not `bytes=`), `Err(())` = unsatisfiable.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    use cache_http::endpoint::range::{parse_range_header, RangeOutcome};
    match parse_range_header(value, len, 1) {
        RangeOutcome::Ranges(r) if r.len() == 1 => Ok(Some((r[0].start, r[0].end))),
        RangeOutcome::NotSatisfiable => Err(()),
        _ => Ok(None),
    }
}

fn respond(
    image: Image,
    stats: &Arc<Stats>,
    req: &Request<hyper::body::Incoming>,
) -> Response<GenBody> {
    if req.uri().path() == "/_stats/reset" {
        stats.reset();
    }
    if req.uri().path().starts_with("/_stats") {
        return Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .body(GenBody::text(Bytes::from(stats.text())))
            .expect("response");
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let etag = image.etag();
    let len = image.len;
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(GenBody::empty())
            .expect("response");
    }
    let if_range_ok = req
        .headers()
        .get(IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .filter(|_| if_range_ok)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let resp = Response::builder()
        .header(ETAG, &etag)
        .header(ACCEPT_RANGES, "bytes")
        .header(CONTENT_TYPE, "application/octet-stream");
    let (resp, start, end) = match range {
        Some(Err(())) => {
            return resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{len}"))
                .header(CONTENT_LENGTH, 0)
                .body(GenBody::empty())
                .expect("response");
        }
        Some(Ok(Some((s, e)))) => (
            resp.status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_RANGE, format!("bytes {s}-{}/{len}", e - 1)),
            s,
            e,
        ),
        None | Some(Ok(None)) => (resp.status(StatusCode::OK), 0, len),
    };
    let probe = (start, end) == (0, 1);
    if probe {
        stats.probes.fetch_add(1, Ordering::Relaxed);
    }
    let body = if head {
        GenBody::empty()
    } else {
        GenBody {
            image,
            pos: start,
            end,
            stats: (!probe).then(|| stats.clone()),
            fixed: None,
        }
    };
    resp.header(CONTENT_LENGTH, end - start)
        .body(body)
        .expect("response")
}

/// `123`, `64KiB`, `45GiB`, `1M` (binary units).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn usage() -> ! {
    eprintln!("usage: gen_origin --size SIZE [--seed N] [--dump | --blake3]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut size = None;
    let mut seed = 0x000b_160b_1ec7_u64;
    let (mut dump, mut hash) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => size = it.next().and_then(|v| parse_size(v)),
            "--seed" => {
                seed = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--dump" => dump = true,
            "--blake3" => hash = true,
            // `cargo bench`/`cargo test` may pass their own flags.
            "--bench" | "--nocapture" => {}
            _ => usage(),
        }
    }
    let Some(len) = size else { usage() };
    let image = Image { len, seed };
    if dump {
        let mut out = std::io::stdout().lock();
        image.each_piece(|b| {
            if out.write_all(b).is_err() {
                std::process::exit(1);
            }
        });
        let _ = out.flush();
        return;
    }
    if hash {
        let mut h = blake3::Hasher::new();
        image.each_piece(|b| {
            h.update(b);
        });
        println!("{}", h.finalize().to_hex());
        return;
    }
    serve(image);
}

/// Serves until SIGTERM/SIGINT; prints the stats then.
fn serve(image: Image) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        println!("port {port}");
        let _ = std::io::stdout().flush();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let r = respond(image, &st, &req);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        accept.abort();
        eprint!("{}", stats.text());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_matches_at_any_offset() {
        let img = Image {
            len: 3 * BLOCK + 100,
            seed: 7,
        };
        let whole = {
            let mut v = vec![0u8; img.len as usize];
            img.fill(0, &mut v);
            v
        };
        assert_eq!(&whole[..16], &img.marker(0));
        assert_eq!(
            &whole[BLOCK as usize + 8..BLOCK as usize + 16],
            &1u64.to_le_bytes()
        );
        for (s, e) in [
            (0, 1),
            (5, 20),
            (4090, 4200),
            (8191, 12300),
            (100, whole.len()),
        ] {
            let mut v = vec![0xffu8; e - s];
            img.fill(s as u64, &mut v);
            assert_eq!(v, whole[s..e], "{s}..{e}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Ok(Some((0, 1))));
        assert_eq!(parse_range("bytes=3-", 10), Ok(Some((3, 10))));
        assert_eq!(parse_range("bytes=-4", 10), Ok(Some((6, 10))));
        assert_eq!(parse_range("bytes=2-100", 10), Ok(Some((2, 10))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        // An invalid range is ignored (RFC 9110 §14.2): the whole body.
        assert_eq!(parse_range("bytes=5-3", 10), Ok(None));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(parse_size("45GiB"), Some(45 << 30));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1x"), None);
    }
}
