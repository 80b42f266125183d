//! A hyper origin that serves one object correctly by default and injects
//! faults nginx will not produce (resets, stalls, 200-for-range, wrong
//! Content-Range, short bodies, changing ETags, redirects), per request, as a
//! test script says. Optionally over TLS (HTTP/2 via ALPN).

#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the origin saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path (and query).
    pub path: String,
    /// The full request target (absolute-form when sent to a proxy).
    pub target: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub version: Version,
    /// Every request header (credentials tests look for what must not be
    /// there).
    pub headers: http::HeaderMap,
    /// The client's port: requests on one connection share it.
    pub peer_port: u16,
}

/// What to answer to one request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Correct behaviour: Range, If-Range, HEAD, 416.
    Serve,
    /// Correct behaviour, but as if the object had this ETag.
    ServeEtag(String),
    /// Correct 206 headers, but ignore `If-Range` (a sloppy origin).
    ServeEtagIgnoringIfRange(String),
    /// Bare status with headers and an empty body.
    Status(u16, Vec<(&'static str, String)>),
    /// Redirect with this status to this Location.
    Redirect(u16, String),
    /// 200 with the whole object, ignoring Range.
    Whole200,
    /// 206 with a Content-Range one byte off.
    WrongContentRange,
    /// Correct headers, `after` body bytes, then the connection breaks.
    Reset { after: usize },
    /// Correct headers, `after` body bytes, then nothing, forever.
    Stall { after: usize },
    /// 206 without Content-Length (chunked) that ends cleanly after `after`
    /// bytes.
    Short { after: usize },
}

type Script = dyn Fn(&Seen, usize) -> Action + Send + Sync;

struct State {
    data: Bytes,
    etag: String,
    script: Box<Script>,
    seen: Mutex<Vec<Seen>>,
}

/// A running origin; stops on drop.
pub struct FaultOrigin {
    state: Arc<State>,
    port: u16,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

impl FaultOrigin {
    /// Plain HTTP origin serving `data` with `etag` (quotes included).
    pub async fn start(
        data: Vec<u8>,
        etag: &str,
        script: impl Fn(&Seen, usize) -> Action + Send + Sync + 'static,
    ) -> FaultOrigin {
        Self::start_inner(data, etag, Box::new(script), None).await
    }

    /// TLS origin (ALPN h2 and http/1.1).
    pub async fn start_tls(
        data: Vec<u8>,
        etag: &str,
        tls: rustls::ServerConfig,
        script: impl Fn(&Seen, usize) -> Action + Send + Sync + 'static,
    ) -> FaultOrigin {
        Self::start_inner(data, etag, Box::new(script), Some(tls)).await
    }

    async fn start_inner(
        data: Vec<u8>,
        etag: &str,
        script: Box<Script>,
        tls: Option<rustls::ServerConfig>,
    ) -> FaultOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            data: Bytes::from(data),
            etag: etag.to_owned(),
            script,
            seen: Mutex::new(Vec::new()),
        });
        let is_tls = tls.is_some();
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req, peer.port())) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        FaultOrigin {
            state,
            port,
            tls: is_tls,
            task,
        }
    }

    /// URL of `path` (starting with `/`) on this origin.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle(st: &State, req: Request<Incoming>, peer_port: u16) -> Response<Body> {
    let h = req.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let seen = Seen {
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        target: req.uri().to_string(),
        range: get("range"),
        if_range: get("if-range"),
        version: req.version(),
        headers: req.headers().clone(),
        peer_port,
    };
    let n = {
        let mut s = st.seen.lock().unwrap();
        s.push(seen.clone());
        s.len() - 1
    };
    let action = (st.script)(&seen, n);
    respond(st, &seen, action)
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn resp(status: u16, headers: Vec<(&str, String)>, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// Parses `bytes=a-b` / `bytes=a-` against `len`: `Some(Ok(range))`,
/// `Some(Err(()))` when unsatisfiable, `None` when absent.
fn wanted(seen: &Seen, len: u64) -> Option<Result<(u64, u64), ()>> {
    let r = seen.range.as_ref()?.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        b.parse().ok()?
    };
    if a >= len || a > b {
        return Some(Err(()));
    }
    Some(Ok((a, b.min(len - 1))))
}

/// A body that sends `data` then ends with `tail`: `Err` (reset), pending
/// forever (stall), or a clean end.
fn faulty_body(data: Bytes, tail: &'static str) -> Body {
    let head = futures::stream::iter(
        data.chunks(16 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<Result<Frame<Bytes>, io::Error>>>(),
    );
    let tail: futures::stream::BoxStream<'static, Result<Frame<Bytes>, io::Error>> = match tail {
        "reset" => futures::stream::once(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        })
        .boxed(),
        "stall" => futures::stream::pending().boxed(),
        _ => futures::stream::empty().boxed(),
    };
    BodyExt::boxed_unsync(StreamBody::new(head.chain(tail)))
}

fn respond(st: &State, seen: &Seen, action: Action) -> Response<Body> {
    let len = st.data.len() as u64;
    let (etag, honour_if_range) = match &action {
        Action::ServeEtag(e) => (e.clone(), true),
        Action::ServeEtagIgnoringIfRange(e) => (e.clone(), false),
        _ => (st.etag.clone(), true),
    };
    let head = seen.method == Method::HEAD;
    let body_of = |b: Bytes| if head { full(Bytes::new()) } else { full(b) };
    match action {
        Action::Status(code, headers) => return resp(code, headers, full(Bytes::new())),
        Action::Redirect(code, loc) => {
            return resp(code, vec![("location", loc)], full(Bytes::new()))
        }
        Action::Whole200 => {
            return resp(
                200,
                vec![("etag", etag), ("content-length", len.to_string())],
                body_of(st.data.clone()),
            );
        }
        _ => {}
    }
    let range = match wanted(seen, len) {
        None => None,
        Some(Err(())) => {
            return resp(
                416,
                vec![("content-range", format!("bytes */{len}")), ("etag", etag)],
                full(Bytes::new()),
            );
        }
        Some(Ok(r)) => Some(r),
    };
    let if_range_ok = !honour_if_range || seen.if_range.as_ref().is_none_or(|v| *v == etag);
    let Some((a, b)) = range.filter(|_| if_range_ok) else {
        return resp(
            200,
            vec![("etag", etag), ("content-length", len.to_string())],
            body_of(st.data.clone()),
        );
    };
    let part = st.data.slice(a as usize..=b as usize);
    let mut cr = format!("bytes {a}-{b}/{len}");
    let mut headers = vec![("etag", etag)];
    let body = match action {
        Action::WrongContentRange => {
            cr = format!("bytes {}-{}/{len}", a + 1, b + 1);
            full(part)
        }
        Action::Reset { after } => faulty_body(part.slice(..after.min(part.len())), "reset"),
        Action::Stall { after } => faulty_body(part.slice(..after.min(part.len())), "stall"),
        Action::Short { after } => {
            // No Content-Length: the clean early end is only visible as a
            // body shorter than Content-Range says.
            return resp(
                206,
                vec![("content-range", cr), ("etag", st.etag.clone())],
                faulty_body(part.slice(..after.min(part.len())), "end"),
            );
        }
        _ => body_of(part.clone()),
    };
    headers.push(("content-range", cr));
    // Reset and stall bodies carry Content-Length too: to HTTP they are
    // truncated bodies, as with a real connection loss.
    headers.push(("content-length", (b - a + 1).to_string()));
    resp(206, headers, body)
}
