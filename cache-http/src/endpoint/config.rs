//! What an endpoint is configured with: its mirrors, limits and log
//! format. Plain data, read by the [`server`](super::server) when it binds
//! and by the shared state (`App`) the handlers use; it
//! depends on no other endpoint module but the shared tier's trait.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{FetchOptions, FillPolicy, Source, SourceError};
use url::Url;

/// Builds the upstream [`Source`] of a mirrored object from its absolute
/// URL. The CLI passes one that builds an HTTP source; tests pass in-memory
/// sources. The server itself does not depend on any source type.
pub type MirrorSourceFactory =
    Arc<dyn Fn(&str) -> Result<Arc<dyn Source>, SourceError> + Send + Sync>;

/// The default port of the CLI's `serve` command.
pub const DEFAULT_PORT: u16 = 8472;

/// One pull-through mirror: `/m/{name}/{path}` maps onto `base/path`.
#[derive(Clone)]
pub struct MirrorConfig {
    /// The name in `/m/{name}/`.
    pub name: String,
    /// The origin's base URL (http or https, no query).
    pub base: Url,
    /// `Eager` (default): a GET starts the whole fill, demanded chunks
    /// first. `Lazy`: only the chunks readers demand, plus read-ahead.
    pub fill: FillPolicy,
    /// Pass the client's query string on to the origin (off by default:
    /// the object is then named by the full URL, query included).
    pub pass_query: bool,
    /// Re-probe interval of this mirror's URLs; `None` takes
    /// [`EndpointConfig::revalidate`].
    pub revalidate: Option<Duration>,
    /// This mirror's own source factory (its headers, CA); `None` takes
    /// [`EndpointConfig::source_factory`].
    pub source_factory: Option<MirrorSourceFactory>,
}

impl MirrorConfig {
    /// A mirror with the defaults: eager fill, no query, the endpoint's
    /// revalidation interval and source factory.
    pub fn new(name: impl Into<String>, base: Url) -> MirrorConfig {
        MirrorConfig {
            name: name.into(),
            base,
            fill: FillPolicy::Eager,
            pass_query: false,
            revalidate: None,
            source_factory: None,
        }
    }
}

impl From<(String, Url)> for MirrorConfig {
    fn from((name, base): (String, Url)) -> MirrorConfig {
        MirrorConfig::new(name, base)
    }
}

impl std::fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("fill", &self.fill)
            .field("pass_query", &self.pass_query)
            .field("revalidate", &self.revalidate)
            .finish_non_exhaustive()
    }
}

/// Configuration of an [`Endpoint`](super::server::Endpoint).
#[derive(Clone)]
pub struct EndpointConfig {
    /// Address [`Endpoint::bind`](super::server::Endpoint::bind) listens on. Default `127.0.0.1:0`
    /// (loopback only; the CLI uses [`DEFAULT_PORT`]). Ignored by
    /// [`Endpoint::with_listeners`](super::server::Endpoint::with_listeners).
    pub listen: SocketAddr,
    /// Pull-through mirrors. Nothing else is ever fetched (no open proxy).
    pub mirrors: Vec<MirrorConfig>,
    /// Makes the upstream source of a mirrored URL. Without one, mirrors
    /// serve only what the store already has.
    pub source_factory: Option<MirrorSourceFactory>,
    /// A mirrored URL is re-probed at the origin at most this often; within
    /// the window the known object is served without asking the origin.
    pub revalidate: Duration,
    /// A connection must deliver a request's complete header within this
    /// time, or it is closed (slowloris defence). hyper starts the clock
    /// when it has *written* the previous response on a keep-alive
    /// connection, and a slow reader may still be draining socket buffers
    /// (MBs on a fast link) then: 1000 clients reading 4 MiB ranges at
    /// ~1 MB/s lost 3 % of their connections to a 10 s limit
    /// (BENCHMARKS.md, "Many readers"). Default 60 s, nginx's
    /// `client_header_timeout`.
    pub header_read_timeout: Duration,
    /// Threads that serve connections, each with a single-threaded runtime
    /// of its own: a connection stays on one thread from accept to close,
    /// so no worker wakes another for it (one per core is what nginx does
    /// with worker processes; BENCHMARKS.md "Serving": ~5 µs of CPU less
    /// per 64 KiB range request). Default 0: connections run on the
    /// runtime that calls `serve`. With threads, point
    /// `cache_core::StoreOptions::runtime` at the main runtime, or each
    /// download runs on the thread of the request that started it.
    pub connection_threads: usize,
    /// Connections served at once; more wait in the listen backlog. Each
    /// takes a file descriptor (mind `RLIMIT_NOFILE`). Default 1024: a
    /// thousand readers of one image are served together.
    pub max_connections: usize,
    /// Upper bound of a request head in bytes (at least 8 KiB, hyper's
    /// minimum buffer).
    pub max_header_bytes: usize,
    /// Ranges served in one multipart response; more get the full body.
    pub max_ranges: usize,
    /// How mirrored objects are fetched (chunk size, fill options).
    pub fetch: FetchOptions,
    /// On shutdown, responses in progress get this long to finish before
    /// their connections are cut (the CLI's `--drain-timeout`).
    pub shutdown_grace: Duration,
    /// Keep the store's objects under this many disk bytes: least recently
    /// used complete objects nobody reads or fills are evicted, and a new
    /// fill that cannot fit is refused with 507.
    pub max_size: Option<u64>,
    /// Format of the access log lines (target [`TARGET`](super::access::TARGET)).
    pub access_log: AccessLogFormat,
    /// How often the store's size and object counts are refreshed (and the
    /// size limit enforced) in the background.
    pub housekeeping_interval: Duration,
    /// Parent blockcache endpoints, asked in order (by origin URL, through
    /// their `/u` route) before the origin when a mirrored object is
    /// fetched; see [`crate::ParentSource`].
    pub parents: Vec<String>,
    /// A shared tier asked after the parents and before the origin, and
    /// published to once a mirror fill's root is verified (see
    /// [`super::shared_tier`]).
    pub shared: Option<Arc<dyn super::shared_tier::ServeTier>>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            mirrors: Vec::new(),
            source_factory: None,
            revalidate: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(60),
            connection_threads: 0,
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            max_ranges: super::range::DEFAULT_MAX_RANGES,
            fetch: FetchOptions::default(),
            shutdown_grace: Duration::from_secs(10),
            max_size: None,
            access_log: AccessLogFormat::Combined,
            housekeeping_interval: Duration::from_secs(5),
            parents: Vec::new(),
            shared: None,
        }
    }
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("mirrors", &self.mirrors)
            .field("revalidate", &self.revalidate)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("connection_threads", &self.connection_threads)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_ranges", &self.max_ranges)
            .field("max_size", &self.max_size)
            .field("parents", &self.parents)
            .field("shared", &self.shared.as_ref().map(|t| t.describe()))
            .finish_non_exhaustive()
    }
}

/// How access log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// The combined log format plus `range=`, `duration=`, `ttfb=`,
    /// `cache=` and `mirror=` fields.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}
