//! The hyper 1.x server of the local endpoint: configuration, binding,
//! the accept loop with its hardening (connection limit, header read
//! time-out, header size limit) and graceful shutdown.
//!
//! ```no_run
//! # async fn demo(store: cache_core::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use cache_http::endpoint::server::{Endpoint, EndpointConfig};
//! let mut config = EndpointConfig::default();
//! config.mirrors.push(("debian".into(), url::Url::parse("https://deb.example/debian/")?));
//! let bound = Endpoint::bind(store, config).await?;
//! println!("listening on {}", bound.local_addr());
//! bound.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Routes: `GET|HEAD /blobs/{blake3-hex}`, `GET|HEAD /m/{mirror}/{path}`
//! (pull-through mirror), `GET /` (live status page), `GET /events`
//! (its server-sent events), `GET /status` (JSON), `GET /metrics`
//! (Prometheus).

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{FetchOptions, Source, SourceError, Store};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use url::Url;

use super::mirror_path::{join_mirror_path, split_mirror_name, PathError};
use super::routes::App;

/// Builds the upstream [`Source`] of a mirrored object from its absolute
/// URL. The CLI passes one that builds an HTTP source; tests pass in-memory
/// sources. The server itself does not depend on any source type.
pub type MirrorSourceFactory =
    Arc<dyn Fn(&str) -> Result<Arc<dyn Source>, SourceError> + Send + Sync>;

/// The default port of the CLI's `serve` command.
pub const DEFAULT_PORT: u16 = 8472;

/// Configuration of an [`Endpoint`].
#[derive(Clone)]
pub struct EndpointConfig {
    /// Address to listen on. Default `127.0.0.1:0` (loopback only; the
    /// CLI uses [`DEFAULT_PORT`]).
    pub listen: SocketAddr,
    /// Pull-through mirrors: `(name, base URL)`; `/m/{name}/{path}` maps
    /// onto `base/path`. Nothing else is ever fetched (no open proxy).
    pub mirrors: Vec<(String, Url)>,
    /// Makes the upstream source of a mirrored URL. Without one, mirrors
    /// serve only what the store already has.
    pub source_factory: Option<MirrorSourceFactory>,
    /// A mirrored URL is re-probed at the origin at most this often; within
    /// the window the known object is served without asking the origin.
    pub revalidate: Duration,
    /// A connection must deliver a request's complete header within this
    /// time, or it is closed (slowloris defence).
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Upper bound of a request head in bytes (at least 8 KiB, hyper's
    /// minimum buffer).
    pub max_header_bytes: usize,
    /// Ranges served in one multipart response; more get the full body.
    pub max_ranges: usize,
    /// How mirrored objects are fetched (chunk size, fill options).
    pub fetch: FetchOptions,
    /// On shutdown, responses in progress get this long to finish before
    /// their connections are cut.
    pub shutdown_grace: Duration,
    /// Parent blockcache endpoints, asked in order (by origin URL, through
    /// their `/u` route) before the origin when a mirrored object is
    /// fetched; see [`crate::ParentSource`].
    pub parents: Vec<String>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            mirrors: Vec::new(),
            source_factory: None,
            revalidate: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_header_bytes: 64 << 10,
            max_ranges: super::range::DEFAULT_MAX_RANGES,
            fetch: FetchOptions::default(),
            shutdown_grace: Duration::from_secs(10),
            parents: Vec::new(),
        }
    }
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("parents", &self.parents)
            .field("mirrors", &self.mirrors)
            .field("revalidate", &self.revalidate)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_ranges", &self.max_ranges)
            .finish_non_exhaustive()
    }
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
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

/// The local HTTP endpoint (see the module docs).
#[derive(Debug)]
pub struct Endpoint;

/// A bound, not yet serving endpoint.
pub struct BoundEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: Arc<App>,
    config: EndpointConfig,
}

impl std::fmt::Debug for BoundEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundEndpoint")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Validates `config` and binds its listen address.
    pub async fn bind(
        store: Store,
        config: EndpointConfig,
    ) -> Result<BoundEndpoint, EndpointError> {
        if config.max_connections == 0 {
            return Err(EndpointError::Config("max_connections must be at least 1"));
        }
        if config.header_read_timeout.is_zero() {
            return Err(EndpointError::Config(
                "header_read_timeout must be positive",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (name, base) in &config.mirrors {
            let bad = |cause| EndpointError::Mirror {
                name: name.clone(),
                base: base.to_string(),
                cause,
            };
            match split_mirror_name(&format!("{name}/x")) {
                Ok((n, _)) if n == name => {}
                _ => return Err(bad(PathError::BadMirrorName)),
            }
            // A probe join checks the base (http(s), host, no query).
            if let Err(PathError::BadBase) = join_mirror_path(base, "x") {
                return Err(bad(PathError::BadBase));
            }
            if !names.insert(name.clone()) {
                return Err(EndpointError::DuplicateMirror(name.clone()));
            }
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|cause| EndpointError::Bind {
                    addr: config.listen,
                    cause,
                })?;
        let local_addr = listener.local_addr().map_err(|cause| EndpointError::Bind {
            addr: config.listen,
            cause,
        })?;
        let app = Arc::new(App::new(store, &config));
        Ok(BoundEndpoint {
            listener,
            local_addr,
            app,
            config,
        })
    }
}

impl BoundEndpoint {
    /// The address the endpoint listens on (the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint's metrics (also served at `/metrics`).
    pub fn metrics(&self) -> Arc<super::metrics::Metrics> {
        self.app.metrics.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the
    /// responses in progress end (at most
    /// [`EndpointConfig::shutdown_grace`]) and returns. Fills keep their
    /// progress: cache-core persists chunks as they arrive.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let BoundEndpoint {
            listener,
            app,
            config,
            ..
        } = self;
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut conns = JoinSet::new();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192))
            .keep_alive(true);
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
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            conns.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        tracing::info!("endpoint shutting down");
        app.live.close(); // event streams never end by themselves
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("responses still running after the shutdown grace; cutting them");
        }
        conns.shutdown().await;
        Ok(())
    }
}
