//! [`HttpSource`]: the HTTP(S) implementation of [`cache_core::Source`].
//!
//! # Model
//!
//! One `HttpSource` stands for one upstream URL. It owns a pooled hyper
//! client (HTTP/1.1 and HTTP/2 via ALPN, rustls, proxies from the
//! environment) shared by all its requests, so the filler's parallel range
//! reads reuse connections.
//!
//! * [`Source::probe`] sends `GET` with `Range: bytes=0-0` (falls back to
//!   `HEAD` when the origin answers oddly) and learns length, validator and
//!   range support.
//! * [`Source::read_range`] sends one single-range `GET` (never multi-range)
//!   with `If-Range` when the validator is a strong ETag, validates the
//!   response strictly (status, `Content-Range` exactly equal to the request,
//!   validator, length), and returns a body stream. A broken body (reset,
//!   stall, short) is resumed transparently from the last byte received by a
//!   new request that is validated the same way.
//! * [`Source::direct`] (Linux, plain `http://`, no proxy, no rate limit):
//!   the same request over a plain socket, and a 206 of exactly the range
//!   moves into the data file with `splice`, without a copy through the
//!   process (`direct`; [`HttpSourceConfig::direct_bodies`]). Any other
//!   answer is left to `read_range`.
//! * Redirects are followed by hand (at most `max_redirects`, loops are
//!   detected); the final URL is remembered and used by later range reads.
//!   When it stops working (401/403/404/410 — typically an expired signed
//!   URL) the source re-resolves once from the original URL.
//! * Transient faults (connect errors, resets, time-outs, 5xx, 429, short
//!   bodies, inconsistent `Content-Range`) are retried with bounded,
//!   jittered exponential backoff; `Retry-After` is honoured.
//!
//! * Private origins: user headers, Basic auth and netrc credentials go
//!   with every request to the URL's origin and lose `Authorization` and
//!   `Cookie` on the way to another one (see [`credentials`]). Failures that
//!   cannot heal (certificate errors, 4xx, no such host, a refused
//!   connection twice, a name the resolver cannot resolve twice before the
//!   origin ever answered) end at once with a hint (see `diagnose`).
//! * Signed URLs: with [`HttpSourceConfig::ignore_query`] the source's
//!   identity (the store's key for the object) is the URL without its query,
//!   so a re-signed URL resumes the same object; requests still use the
//!   whole URL, and messages show the query as `?…`.
//!
//! Invariant 2 of the design (no mixing of versions) is enforced here: every
//! response's validator and total length must equal the `expect` given by
//! the caller, else the read fails with [`cache_core::SourceErrorKind::Changed`].

mod client;
pub mod credentials;
mod diagnose;
#[cfg(target_os = "linux")]
mod direct;
mod factory;
mod parent;
mod probe;
mod read;
mod request;
mod retry;
mod validate;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{RangeBody, Source, SourceError, SourceInfo};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use credentials::{BasicAuth, Netrc};

pub use factory::source_factory;
pub use parent::{parent_config, ParentSource};
pub use retry::retries_total;
pub use validate::{
    is_strong_etag, parse_content_range, validator_of, ContentRange, ContentRangeError,
};

/// Where proxies come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyConfig {
    /// `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` / `NO_PROXY` (and their
    /// lower-case forms), like curl.
    #[default]
    Env,
    /// Always connect directly.
    None,
    /// Explicit proxy URLs (same syntax as the environment variables).
    Explicit {
        /// Proxy for `http://` URLs.
        http: Option<String>,
        /// Proxy for `https://` URLs (tunnelled with CONNECT).
        https: Option<String>,
        /// Comma-separated hosts/domains/CIDRs that bypass the proxy.
        no_proxy: Option<String>,
    },
}

/// Settings of an [`HttpSource`]. `Default` gives production values.
#[derive(Clone)]
pub struct HttpSourceConfig {
    /// Extra trusted CA certificate(s), PEM, added to webpki and system roots.
    pub extra_ca: Option<PathBuf>,
    /// Proxy selection.
    pub proxy: ProxyConfig,
    /// Retries per logical request after the first attempt (default 8). The
    /// count resets whenever body bytes arrive, so a long transfer survives
    /// many spaced-out resets.
    pub max_retries: u32,
    /// First backoff step (default 200 ms); doubles per retry, with jitter.
    pub retry_base: Duration,
    /// Largest computed backoff step (default 30 s).
    pub retry_cap: Duration,
    /// Upper bound on a server's `Retry-After` (default 120 s).
    pub max_retry_after: Duration,
    /// Abort and retry (from the last byte received) when no response
    /// header or body byte arrives for this long (default 30 s).
    pub stall_timeout: Duration,
    /// TCP connect time-out (default 30 s).
    pub connect_timeout: Duration,
    /// Maximum number of redirects followed per request (default 10).
    pub max_redirects: usize,
    /// Bandwidth limit in bytes/s shared by all requests of this source.
    pub limit_rate: Option<u64>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Headers sent with every request to the URL's origin (`--header`,
    /// and per mirror), after the built-in ones: a user `Authorization`
    /// replaces the one of `basic_auth`/`netrc`; repeated names are all sent.
    /// Values are marked sensitive (never printed by `Debug`); `Authorization`
    /// and `Cookie` are not sent to another origin after a redirect.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// HTTP Basic credentials (`--user`); win over `netrc`.
    pub basic_auth: Option<BasicAuth>,
    /// A parsed netrc file (`--netrc`, `--netrc-file`): its entry for the
    /// URL's host (else its `default`) gives Basic credentials.
    pub netrc: Option<Arc<Netrc>>,
    /// The object's identity is the URL without its query string, so a
    /// re-signed (presigned) URL resumes the same object (`--ignore-query`).
    pub ignore_query: bool,
    /// Range bodies from a plain-HTTP URL (no proxy, no rate limit) move
    /// into the data file in the kernel (Linux `splice`) instead of
    /// through hyper's buffers (default true; elsewhere it does nothing).
    /// Off: every body goes through hyper, as over TLS.
    pub direct_bodies: bool,
}

/// Shows header names only: a caller may not have marked a value
/// sensitive, and `Debug` output ends up in logs.
impl std::fmt::Debug for HttpSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpSourceConfig")
            .field("extra_ca", &self.extra_ca)
            .field("proxy", &self.proxy)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("retry_cap", &self.retry_cap)
            .field("max_retry_after", &self.max_retry_after)
            .field("stall_timeout", &self.stall_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_redirects", &self.max_redirects)
            .field("limit_rate", &self.limit_rate)
            .field("user_agent", &self.user_agent)
            .field("headers", &header_names)
            .field("basic_auth", &self.basic_auth)
            .field("netrc", &self.netrc)
            .field("ignore_query", &self.ignore_query)
            .field("direct_bodies", &self.direct_bodies)
            .finish()
    }
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        HttpSourceConfig {
            extra_ca: None,
            proxy: ProxyConfig::Env,
            max_retries: 8,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            max_redirects: 10,
            limit_rate: None,
            user_agent: concat!("blockcache/", env!("CARGO_PKG_VERSION")).to_owned(),
            headers: Vec::new(),
            basic_auth: None,
            netrc: None,
            ignore_query: false,
            direct_bodies: true,
        }
    }
}

/// Why an [`HttpSource`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    /// The URL does not parse or is not absolute http(s).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The extra CA file could not be read or holds no usable certificate.
    #[error("extra CA {path:?}: {reason}")]
    ExtraCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// TLS set-up failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// An HTTP(S) URL as a [`Source`]. Cheap to share: clone the `Arc` you keep
/// it in; all clones of the inner state share one connection pool.
#[derive(Debug)]
pub struct HttpSource {
    inner: Arc<Inner>,
    /// Bodies moved in the kernel (see `direct`), when configured.
    #[cfg(target_os = "linux")]
    direct: Option<direct::DirectRanges>,
}

/// State shared by the source and the body streams it hands out (the
/// streams are `'static`, so they hold an `Arc` of this).
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) original: Uri,
    /// [`Source::identity`]: the URL as given, without its query when
    /// `config.ignore_query`.
    pub(crate) identity: String,
    /// User headers and credentials for the original origin, sensitive.
    pub(crate) origin_headers: HeaderMap,
    pub(crate) client: client::HttpClient,
    pub(crate) matcher: Arc<hyper_util::client::proxy::matcher::Matcher>,
    pub(crate) config: HttpSourceConfig,
    /// Final URL after redirects, reused by range reads; `None` = original.
    pub(crate) resolved: Mutex<Option<Uri>>,
    /// Some request of this source got an HTTP response: from then on a
    /// resolver failure is a network blip worth the whole retry budget,
    /// not a sign that the origin is out of reach (see `diagnose`).
    pub(crate) answered: AtomicBool,
    pub(crate) limiter: Option<retry::RateLimiter>,
}

impl HttpSource {
    /// Creates a source for `url` (absolute `http://` or `https://`).
    pub fn new(url: &str, config: HttpSourceConfig) -> Result<HttpSource, HttpSourceError> {
        let (client, matcher) = client::build(&config)?;
        HttpSource::with_client(url, config, client, matcher)
    }

    /// A source on an already built client: sources made by one
    /// [`source_factory`] share its connection pool and TLS roots.
    fn with_client(
        url: &str,
        config: HttpSourceConfig,
        client: client::HttpClient,
        matcher: Arc<hyper_util::client::proxy::matcher::Matcher>,
    ) -> Result<HttpSource, HttpSourceError> {
        // `user:password@` in the URL is a credential like `--user` (which
        // wins): it is sent as Basic auth, never keyed, stored or shown.
        let (url, url_auth) = credentials::split_userinfo(url);
        let url = url.as_str();
        let invalid = |reason: &str| HttpSourceError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let original: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match original.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(invalid("scheme must be http or https")),
        }
        if original.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        let limiter = config.limit_rate.map(retry::RateLimiter::new);
        let origin_headers = credentials::origin_headers(
            &original,
            &config.headers,
            config.basic_auth.as_ref().or(url_auth.as_ref()),
            config.netrc.as_deref(),
        );
        let identity = if config.ignore_query {
            without_query(url).to_owned()
        } else {
            url.to_owned()
        };
        let inner = Arc::new(Inner {
            original,
            identity,
            origin_headers,
            client,
            matcher,
            config,
            resolved: Mutex::new(None),
            answered: AtomicBool::new(false),
            limiter,
        });
        Ok(HttpSource {
            #[cfg(target_os = "linux")]
            direct: inner
                .config
                .direct_bodies
                .then(|| direct::DirectRanges::new(inner.clone())),
            inner,
        })
    }

    /// The URL range reads currently go to (the final URL of the last
    /// redirect chain, or the original URL).
    pub fn current_url(&self) -> String {
        self.inner.current().to_string()
    }
}

/// `url` without its query string (and fragment).
pub fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

impl Inner {
    /// How `uri` appears in messages and logs: with its query replaced by
    /// `?…` when queries are not part of the identity (they carry
    /// signatures then).
    pub(crate) fn shown(&self, uri: &Uri) -> String {
        let s = uri.to_string();
        match (self.config.ignore_query, uri.query()) {
            (true, Some(_)) => format!("{}?…", without_query(&s)),
            _ => s,
        }
    }

    /// [`Inner::shown`] of the original URL.
    pub(crate) fn shown_original(&self) -> String {
        self.shown(&self.original)
    }

    /// The URL to send the next range read to.
    pub(crate) fn current(&self) -> Uri {
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| self.original.clone())
    }

    /// Remembers the final URL of a successful redirect chain (`None`
    /// forgets it, forcing the next request to re-resolve).
    pub(crate) fn set_resolved(&self, uri: Option<Uri>) {
        let uri = uri.filter(|u| *u != self.original);
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = uri;
    }
}

impl Source for HttpSource {
    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(probe::probe(self.inner.clone()))
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(read::read_range(self.inner.clone(), range, expect.clone()))
    }

    #[cfg(target_os = "linux")]
    fn direct(&self) -> Option<&dyn cache_core::DirectRanges> {
        self.direct
            .as_ref()
            .map(|d| d as &dyn cache_core::DirectRanges)
    }
}
