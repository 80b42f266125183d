//! The hyper 1.x server of the local endpoint: configuration, binding
//! (TCP and Unix sockets, or listeners handed over by systemd), the accept
//! loop with its hardening (connection limit, header read time-out, header
//! size limit), the access log, mirror reloads and the graceful drain.
//!
//! ```no_run
//! # async fn demo(store: cache_core::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use cache_http::endpoint::server::{Endpoint, EndpointConfig, MirrorConfig};
//! let mut config = EndpointConfig::default();
//! config.mirrors.push(MirrorConfig::new("debian", url::Url::parse("https://deb.example/debian/")?));
//! let bound = Endpoint::bind(store, config).await?;
//! println!("listening on {}", bound.local_addr());
//! bound.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Routes: `GET|HEAD /blobs/{blake3-hex}`, `GET|HEAD /m/{mirror}/{path}`
//! (pull-through mirror), `GET|HEAD /blobs/{blake3-hex}/manifest`,
//! `GET|HEAD /u?url=` (parent route for child caches), `GET /` (live status
//! page), `GET /events` (its server-sent events), `GET /status` (JSON),
//! `GET /metrics` (Prometheus).
//!
//! On Linux a TCP connection starts on the fast path (`fast_path`): a
//! single-range GET of a complete `/blobs/` object is answered there,
//! without hyper; the first request of any other kind hands the connection
//! to hyper for good, with the bytes already read.
//!
//! Drain: when the shutdown future completes the listeners are closed at
//! once (new connections are refused), idle keep-alive connections are
//! closed, and responses in progress run to their end for at most
//! [`EndpointConfig::shutdown_grace`]. Fills keep every chunk that arrived:
//! cache-core makes chunks durable as they come.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::Store;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::access;
use super::app::App;
pub use super::config::{EndpointConfig, MirrorConfig, MirrorSourceFactory, DEFAULT_PORT};
use super::conn_threads::{ConnFuture, ConnJob, ConnThreads};
use super::mirror_path::{join_mirror_path, split_mirror_name, PathError};
#[cfg(target_os = "linux")]
use super::sendfile::SendfileTcp;
use super::sendfile::{ConnSpans, Spans};

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A mirror is misconfigured.
    #[error("mirror {name:?} ({base}): {cause}")]
    Mirror {
        /// Mirror name.
        name: String,
        /// Base URL.
        base: String,
        /// What is wrong.
        cause: PathError,
    },
    /// Two mirrors have the same name.
    #[error("mirror {0:?} is configured twice")]
    DuplicateMirror(String),
    /// A limit is zero.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

/// A listening socket for [`Endpoint::with_listeners`]: bound by the
/// caller, or handed over by systemd socket activation.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A Unix stream socket.
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// How the socket is reached: `http://ADDR/` or `unix:PATH`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}/"),
                Err(_) => "tcp:?".to_owned(),
            },
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:(unnamed)".to_owned(),
                },
                Err(_) => "unix:?".to_owned(),
            },
        }
    }
}

/// The local HTTP endpoint (see the module docs).
#[derive(Debug)]
pub struct Endpoint;

/// The byte stream of one accepted connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A bound, not yet serving endpoint.
pub struct BoundEndpoint {
    listeners: Vec<Bound>,
    addresses: Vec<String>,
    local_addr: Option<SocketAddr>,
    app: Arc<App>,
    config: EndpointConfig,
}

impl std::fmt::Debug for BoundEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundEndpoint")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Checks names and base URLs of `mirrors`.
pub(crate) fn check_mirrors(mirrors: &[MirrorConfig]) -> Result<(), EndpointError> {
    let mut names = std::collections::HashSet::new();
    for m in mirrors {
        let bad = |cause| EndpointError::Mirror {
            name: m.name.clone(),
            base: m.base.to_string(),
            cause,
        };
        match split_mirror_name(&format!("{}/x", m.name)) {
            Ok((n, _)) if n == m.name => {}
            _ => return Err(bad(PathError::BadMirrorName)),
        }
        // A probe join checks the base (http(s), host, no query).
        if let Err(PathError::BadBase) = join_mirror_path(&m.base, "x") {
            return Err(bad(PathError::BadBase));
        }
        if !names.insert(m.name.clone()) {
            return Err(EndpointError::DuplicateMirror(m.name.clone()));
        }
    }
    Ok(())
}

impl Endpoint {
    /// Validates `config` and binds its listen address.
    pub async fn bind(
        store: Store,
        config: EndpointConfig,
    ) -> Result<BoundEndpoint, EndpointError> {
        let bind_err = |cause| EndpointError::Bind {
            addr: config.listen.to_string(),
            cause,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_err)?;
        Self::with_listeners(store, config, vec![Listener::Tcp(listener)])
    }

    /// Validates `config` and serves on `listeners` (bound by the caller,
    /// or inherited from systemd). Must be called inside a Tokio runtime.
    pub fn with_listeners(
        store: Store,
        config: EndpointConfig,
        listeners: Vec<Listener>,
    ) -> Result<BoundEndpoint, EndpointError> {
        if config.max_connections == 0 {
            return Err(EndpointError::Config("max_connections must be at least 1"));
        }
        if config.header_read_timeout.is_zero() {
            return Err(EndpointError::Config(
                "header_read_timeout must be positive",
            ));
        }
        if listeners.is_empty() {
            return Err(EndpointError::Config("no address to listen on"));
        }
        check_mirrors(&config.mirrors)?;
        let mut bound = Vec::with_capacity(listeners.len());
        let mut addresses = Vec::with_capacity(listeners.len());
        let mut local_addr = None;
        for l in listeners {
            let what = l.describe();
            let err = |cause| EndpointError::Bind {
                addr: what.clone(),
                cause,
            };
            match l {
                Listener::Tcp(l) => {
                    l.set_nonblocking(true).map_err(err)?;
                    local_addr = local_addr.or(l.local_addr().ok());
                    bound.push(Bound::Tcp(
                        tokio::net::TcpListener::from_std(l).map_err(err)?,
                    ));
                }
                Listener::Unix(l) => {
                    l.set_nonblocking(true).map_err(err)?;
                    bound.push(Bound::Unix(
                        tokio::net::UnixListener::from_std(l).map_err(err)?,
                    ));
                }
            }
            addresses.push(what);
        }
        let app = Arc::new(App::new(store, &config));
        Ok(BoundEndpoint {
            listeners: bound,
            addresses,
            local_addr,
            app,
            config,
        })
    }
}

/// Replaces the mirrors of a running endpoint (SIGHUP reload). Requests
/// already answered by a removed or changed mirror run on unchanged.
#[derive(Clone)]
pub struct MirrorReloader {
    app: Arc<App>,
}

impl std::fmt::Debug for MirrorReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorReloader").finish_non_exhaustive()
    }
}

impl MirrorReloader {
    /// Validates `mirrors` and makes them the endpoint's mirrors; on an
    /// error the old set stays.
    pub fn set_mirrors(&self, mirrors: Vec<MirrorConfig>) -> Result<(), EndpointError> {
        check_mirrors(&mirrors)?;
        self.app.set_mirrors(mirrors);
        Ok(())
    }
}

impl BoundEndpoint {
    /// The first TCP address the endpoint listens on (the real port when
    /// bound to 0); `0.0.0.0:0` when it listens on Unix sockets only.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// Every address, as `http://ADDR/` or `unix:PATH`.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The endpoint's metrics (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<super::metrics::Metrics> {
        self.app.metrics.clone()
    }

    /// A handle that replaces the mirrors while the endpoint serves.
    pub fn reloader(&self) -> MirrorReloader {
        MirrorReloader {
            app: self.app.clone(),
        }
    }

    /// Serves until `shutdown` completes, then drains (see the module
    /// docs) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let BoundEndpoint {
            listeners,
            app,
            config,
            ..
        } = self;
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // The fast path's drain signal (hyper's connections have `graceful`).
        let (draining, drain_seen) = tokio::sync::watch::channel(false);
        let mut conns = JoinSet::new();
        let mut threads = ConnThreads::start(config.connection_threads)?;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(true);
        // One accept task per listener; aborting them closes the sockets.
        let (tx, mut accepted) = mpsc::channel::<Accepted>(1);
        let mut acceptors = JoinSet::new();
        for l in listeners {
            acceptors.spawn(accept_loop(l, tx.clone()));
        }
        drop(tx);
        let housekeeper = tokio::spawn(super::housekeeping::run(
            app.clone(),
            config.housekeeping_interval,
        ));
        tokio::pin!(shutdown);
        loop {
            // Reap finished connection tasks so the set stays small.
            while conns.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                c = accepted.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            let conn = Conn {
                app: app.clone(),
                client: peer.into(),
                http: http.clone(),
                watcher: graceful.watcher(),
                header_read_timeout: config.header_read_timeout,
                draining: drain_seen.clone(),
            };
            // A Unix socket stays registered with this runtime's driver:
            // it is served here.
            let tcp = matches!(stream, AcceptedStream::Tcp(_));
            // Run where the connection lives: on a connection thread, or
            // here when there are none (or its thread is gone). Made in a
            // task of that thread's runtime: the socket is registered with
            // its driver.
            let job: ConnJob = Box::new(move || -> ConnFuture {
                Box::pin(async move {
                    conn.serve(stream).await;
                    drop(permit);
                })
            });
            let job = if tcp {
                threads.run(job).err()
            } else {
                Some(job)
            };
            if let Some(job) = job {
                conns.spawn(async move { job().await });
            }
        }
        acceptors.shutdown().await;
        drop(accepted);
        let _ = draining.send(true);
        housekeeper.abort();
        app.live.close(); // event streams never end by themselves
                          // Said once the listeners are closed: from here on a new
                          // connection is refused.
        tracing::warn!(
            // Each connection holds a permit, wherever it runs.
            connections = config.max_connections - permits.available_permits(),
            "draining: no new connections; responses in progress get up to {}s to end",
            config.shutdown_grace.as_secs()
        );
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("responses still running after the drain timeout; cutting them");
        }
        conns.shutdown().await;
        threads.shutdown().await;
        Ok(())
    }
}

/// What serving one accepted connection needs.
struct Conn {
    app: Arc<App>,
    client: Arc<str>,
    http: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    // The fast path's (Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    header_read_timeout: Duration,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Conn {
    /// Serves `stream` until it closes: a TCP connection on Linux first on
    /// the fast path (`fast_path`), then, or else, with hyper.
    async fn serve(self, stream: AcceptedStream) {
        let taken = match stream {
            AcceptedStream::Tcp(s) => self.take_up_tcp(s).await,
            AcceptedStream::Unix(s) => Some((s, None)),
        };
        if let Some((io, spans)) = taken {
            self.serve_with_hyper(io, spans).await;
        }
    }

    /// A TCP connection registered with the current runtime, for hyper:
    /// on Linux once the fast path hands it over (`None`: it closed
    /// there), with the bytes it read and where body frames register for
    /// `sendfile`.
    async fn take_up_tcp(&self, s: std::net::TcpStream) -> Option<TakenUp> {
        let s = match tokio::net::TcpStream::from_std(s) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot take up an accepted connection");
                return None;
            }
        };
        #[cfg(target_os = "linux")]
        {
            use super::fast_path::{Exit, FastPath, Rewind};
            let fast = FastPath {
                app: self.app.clone(),
                header_read_timeout: self.header_read_timeout,
                draining: self.draining.clone(),
            };
            match fast.serve(s, &self.client).await {
                Exit::Closed => None,
                Exit::HandOff(s, read) => {
                    let (s, spans) = SendfileTcp::new(s);
                    Some((Box::new(Rewind::new(read.freeze(), s)), Some(spans)))
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Some((Box::new(s), None))
    }

    /// Serves `io` with hyper until the connection ends.
    async fn serve_with_hyper(self, io: Box<dyn Io>, spans: Option<Arc<Spans>>) {
        let Conn {
            app,
            client,
            http,
            watcher,
            ..
        } = self;
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let client = client.clone();
            if let Some(spans) = &spans {
                req.extensions_mut().insert(ConnSpans(spans.clone()));
            }
            async move {
                let started = Instant::now();
                let request = access::RequestLine::of(&req, &client);
                let resp = app.clone().handle(req).await;
                Ok::<_, Infallible>(access::log_response(&app, request, started, resp))
            }
        });
        let conn = watcher.watch(http.serve_connection(TokioIo::new(io), service));
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// An accepted connection and the client's address.
type Accepted = (AcceptedStream, String);

/// A connection's stream on the runtime that serves it, and where its
/// body frames register for `sendfile` (TCP on Linux).
type TakenUp = (Box<dyn Io>, Option<Arc<Spans>>);

/// An accepted socket. TCP is detached from the accepting runtime's I/O
/// driver, so that the runtime that serves it (a connection thread's)
/// takes it up; a Unix socket stays with the accepting runtime.
enum AcceptedStream {
    Tcp(std::net::TcpStream),
    Unix(Box<dyn Io>),
}

/// Accepts connections on `l` and hands them to the serve loop with the
/// client's address.
async fn accept_loop(l: Bound, tx: mpsc::Sender<Accepted>) {
    loop {
        let accepted: std::io::Result<Accepted> = match &l {
            Bound::Tcp(l) => l.accept().await.and_then(|(s, peer)| {
                let _ = s.set_nodelay(true);
                Ok((AcceptedStream::Tcp(s.into_std()?), peer.ip().to_string()))
            }),
            Bound::Unix(l) => l.accept().await.map(|(s, _)| {
                (
                    AcceptedStream::Unix(Box::new(s) as Box<dyn Io>),
                    "unix".to_owned(),
                )
            }),
        };
        match accepted {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
