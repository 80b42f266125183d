//! Request routing and the pull-through mirror logic.
//!
//! | route | what |
//! | --- | --- |
//! | `GET\|HEAD /blobs/{blake3-hex}` | a complete object by BLAKE3 hash |
//! | `GET\|HEAD /blobs/{blake3-hex}/manifest` | its chunk chaining values ([`cache_core::Manifest`]), complete objects only |
//! | `GET\|HEAD /blobs/sha256/{hex}` | a complete object by its SHA-256 (likewise `sha512`) |
//! | `GET\|HEAD /m/{mirror}/{path}` | pull-through mirror of `BASE/path` |
//! | `GET\|HEAD /u?url={origin URL}` | parent route for child caches: the same object as the mirror path the URL falls under; 403 for a URL under no configured mirror (never an open proxy) |
//! | `GET /` | live status page: objects and the chunk map ([`live`](super::live)) |
//! | `GET /events` | server-sent events: a snapshot, then chunk-map deltas |
//! | `GET /status` | JSON: the store, its mirrors, every object with progress and rate |
//! | `GET /metrics` | Prometheus text format |
//!
//! Mirror objects are revalidated with the origin at most every
//! [`EndpointConfig::revalidate`](super::server::EndpointConfig): the first
//! request probes the origin (and starts or attaches to the fill), later
//! requests inside the window reuse the known object without asking the
//! origin. When the origin is unreachable a complete copy is served; when
//! the origin says 404 the answer is 404.
//!
//! Representation metadata: cache-core stores neither `Content-Type` nor
//! `Last-Modified`, and the [`Source`](cache_core::Source) trait does not
//! report them, so objects are served as `application/octet-stream`
//! (right for disk images and archives). `Last-Modified` is passed on when
//! the origin's validator is its Last-Modified date (`lm:` validators of
//! `HttpSource`, i.e. origins without a strong ETag). Mirrored objects get
//! a strong ETag derived from (URL, upstream validator, length) that stays
//! the same once the object completes, so `If-Range` resumes keep working;
//! conditionals also accept the content hash tag once it is known.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{
    Algo, Digest, Error, FetchOptions, FillState, Object, Source, SourceChain, SourceErrorKind,
    Store,
};
use http::{header, Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use url::Url;

use super::metrics::Metrics;
use super::mirror_path::{join_mirror_path, split_mirror_name};
use super::serve_object::{self, text, Body, ServeMeta};
use super::server::{EndpointConfig, MirrorSourceFactory};
use super::status::Tracker;
use crate::source::{parent_config, ParentSource};

/// How a request found its object, for the hit/miss/coalesced metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Complete when requested.
    Hit,
    /// This request started the fill.
    Miss,
    /// Attached to a fill already running.
    Coalesced,
}

/// What the endpoint remembers about one mirrored URL.
#[derive(Default)]
struct MirrorEntry {
    /// Key of the object the last successful probe resolved to.
    key: Option<String>,
    /// When the origin was last asked.
    probed: Option<Instant>,
}

/// Shared state of a running endpoint.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: Tracker,
    pub(crate) live: Arc<super::live::Live>,
    mirrors: HashMap<String, Url>,
    factory: Option<MirrorSourceFactory>,
    revalidate: Duration,
    fetch: FetchOptions,
    pub(crate) max_ranges: usize,
    max_header_bytes: usize,
    parents: Vec<String>,
    /// Per mirrored URL, serialised by its own async mutex so that two
    /// first requests for one URL probe the origin once.
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<MirrorEntry>>>>,
}

impl App {
    pub(crate) fn new(store: Store, config: &EndpointConfig) -> App {
        let metrics = Arc::new(Metrics::new());
        let live = Arc::new(super::live::Live::new(
            store.clone(),
            config
                .mirrors
                .iter()
                .map(|(n, u)| (n.clone(), u.to_string()))
                .collect(),
        ));
        // Started here, not by the first request (see `Live::track`).
        live.ensure_started();
        let factory = config
            .source_factory
            .clone()
            .map(|f| super::metered::metered_factory(f, metrics.clone(), config.fetch.chunk_size))
            .map(|f| super::live::counting_factory(f, live.clone()));
        App {
            store,
            tracker: Tracker::default(),
            live,
            metrics,
            mirrors: config.mirrors.iter().cloned().collect(),
            factory,
            revalidate: config.revalidate,
            fetch: config.fetch.clone(),
            max_ranges: config.max_ranges,
            max_header_bytes: config.max_header_bytes,
            parents: config.parents.clone(),
            entries: Mutex::default(),
        }
    }

    /// Answers one request. Never fails: errors become error responses.
    pub(crate) async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        // hyper bounds its read buffer, but a head that arrives in one read
        // can exceed it: enforce the limit on the parsed head as well.
        let head_bytes: usize = parts.uri.to_string().len()
            + parts
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_bytes > self.max_header_bytes {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request head larger than {} bytes\n", self.max_header_bytes),
            );
        }
        let path = parts.uri.path().to_owned();
        let method = parts.method.clone();
        let get_or_head = method == Method::GET || method == Method::HEAD;
        if path == "/" || path == "/events" {
            if !get_or_head {
                return method_not_allowed();
            }
            return if path == "/" {
                super::live::page::page_response(method == Method::HEAD)
            } else {
                super::live::events_response(&self.live).await
            };
        }
        if path == "/status" || path == "/metrics" {
            if !get_or_head {
                return method_not_allowed();
            }
            let (ct, body) = if path == "/status" {
                ("application/json", self.live.status_json().await)
            } else {
                self.metrics
                    .active_fills
                    .set(self.tracker.active_fills(&self.store) as i64);
                (super::metrics::CONTENT_TYPE, self.metrics.render())
            };
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            if method == Method::HEAD {
                *resp.body_mut() = serve_object::empty();
            }
            return resp;
        }
        if let Some(hex) = path.strip_prefix("/blobs/") {
            if !get_or_head {
                return method_not_allowed();
            }
            return self.blob(hex, &parts).await;
        }
        if path == "/u" {
            if !get_or_head {
                return method_not_allowed();
            }
            return self
                .by_origin_url(parts.uri.query().unwrap_or(""), &parts)
                .await;
        }
        if let Some(rest) = path.strip_prefix("/m/") {
            if !get_or_head {
                return method_not_allowed();
            }
            return self.mirror(rest, &parts).await;
        }
        text(StatusCode::NOT_FOUND, "not found\n".to_owned())
    }

    async fn blob(&self, path: &str, parts: &http::request::Parts) -> Response<Body> {
        // `/blobs/<blake3>/manifest`, `/blobs/<blake3>` or `/blobs/<algo>/<hex>`.
        if let Some(hex) = path.strip_suffix("/manifest") {
            return match Digest::from_hex(Algo::Blake3, hex)
                .ok()
                .and_then(|d| d.as_blake3())
            {
                Some(hash) => super::manifest::serve(self, &hash, parts),
                None => text(
                    StatusCode::BAD_REQUEST,
                    "expected /blobs/<BLAKE3 hex>/manifest\n".to_owned(),
                ),
            };
        }
        let (algo, hex) = match path.split_once('/') {
            Some((a, hex)) => (a.parse::<Algo>().ok(), hex),
            None => (Some(Algo::Blake3), path),
        };
        let Some(digest) = algo.and_then(|a| Digest::from_hex(a, hex).ok()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected /blobs/<BLAKE3 hex> or /blobs/sha256/<hex> (or sha512)\n".to_owned(),
            );
        };
        let object = match self.store.get_digest(&digest) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no complete object with {digest}\n"),
                )
            }
            Err(e) => return store_error(&e),
        };
        let Some(hash) = object.blake3() else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no complete object with {digest}\n"),
            );
        };
        let found = match object.progress().state {
            FillState::Complete => Found::Hit,
            FillState::Filling | FillState::Following => Found::Coalesced,
            _ => Found::Miss,
        };
        self.count(found);
        self.tracker.track(&object);
        self.live.track(&object);
        let meta = ServeMeta {
            etag: super::etag::strong_etag(&hash),
            alt_etag: None,
            last_modified: None,
            content_type: "application/octet-stream",
            immutable: true,
        };
        serve_object::serve(self, parts, object, &meta)
    }

    async fn mirror(&self, rest: &str, parts: &http::request::Parts) -> Response<Body> {
        let (name, rest) = match split_mirror_name(rest) {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad mirror path: {e}\n")),
        };
        let Some(base) = self.mirrors.get(name) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown mirror {name:?}: only configured mirrors are served\n"),
            );
        };
        let url = match join_mirror_path(base, rest) {
            Ok(u) => u,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("refused path: {e}\n")),
        };
        self.serve_mirrored(url.as_str(), parts).await
    }

    /// `/u?url=URL`: a child cache asks for an origin URL. Served only when
    /// the URL lies under one of our mirrors (it then is exactly the object
    /// of that mirror path), so the endpoint never fetches arbitrary URLs.
    async fn by_origin_url(&self, query: &str, parts: &http::request::Parts) -> Response<Body> {
        let Some(wanted) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "url")
            .map(|(_, v)| v.into_owned())
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected /u?url=<origin URL>\n".to_owned(),
            );
        };
        match self.resolve_under_mirror(&wanted) {
            Some(url) => self.serve_mirrored(url.as_str(), parts).await,
            None => text(
                StatusCode::FORBIDDEN,
                format!("{wanted:?} is not under a configured mirror; this endpoint is not an open proxy\n"),
            ),
        }
    }

    /// The URL, if it lies under a configured mirror base and is exactly
    /// what that mirror's path rules make of it (no dot segments, no
    /// escapes out of the base).
    fn resolve_under_mirror(&self, wanted: &str) -> Option<Url> {
        let wanted_url = Url::parse(wanted).ok()?;
        self.mirrors.values().find_map(|base| {
            let rest = wanted_url.as_str().strip_prefix(base.as_str())?;
            let joined = join_mirror_path(base, rest).ok()?;
            (joined == wanted_url).then_some(joined)
        })
    }

    /// Serves the mirrored object of `url` (already resolved under a mirror).
    async fn serve_mirrored(&self, url: &str, parts: &http::request::Parts) -> Response<Body> {
        let (object, found) = match self.mirror_object(url).await {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        self.count(found);
        self.tracker.track(&object);
        self.live.track(&object);
        let info = object.info();
        let meta = ServeMeta {
            // Stable across completion, so resumes with If-Range keep working.
            etag: super::etag::derived_etag(&info.source, &info.validator, info.len),
            alt_etag: object.blake3().map(|h| super::etag::strong_etag(&h)),
            last_modified: info
                .validator
                .strip_prefix("lm:")
                .and_then(|d| httpdate::parse_http_date(d).ok()),
            content_type: "application/octet-stream",
            immutable: false,
        };
        serve_object::serve(self, parts, object, &meta)
    }

    /// The object behind a mirrored URL: reuse the known one inside the
    /// revalidation window, else probe the origin through `Store::fetch`.
    #[allow(clippy::result_large_err)]
    async fn mirror_object(&self, url: &str) -> Result<(Object, Found), Response<Body>> {
        let entry = self
            .entries
            .lock()
            .entry(url.to_owned())
            .or_default()
            .clone();
        let mut e = entry.lock().await;
        let known = e.key.as_deref().and_then(|k| self.store.open_ref(k).ok());
        let known_state = known.as_ref().map(|o| o.progress().state);
        let running = matches!(known_state, Some(FillState::Filling | FillState::Following));
        let fresh = e.probed.is_some_and(|t| t.elapsed() < self.revalidate);
        // A running fill checks every response against the validator it
        // started with, so it needs no revalidation of its own.
        if let Some(obj) = known.clone() {
            if running {
                return Ok((obj, Found::Coalesced));
            }
            if fresh && known_state == Some(FillState::Complete) {
                return Ok((obj, Found::Hit));
            }
        }
        let Some(factory) = &self.factory else {
            return self.fallback(url, known, "no upstream source is configured");
        };
        let source = match factory(url) {
            Ok(s) => s,
            Err(err) if err.kind == SourceErrorKind::NotFound => {
                return Err(text(StatusCode::NOT_FOUND, format!("{err}\n")))
            }
            Err(err) => {
                self.live.upstream_error(url, &err.to_string());
                return self.fallback(url, known, &err.to_string());
            }
        };
        let chain = self.chain_for(url, source).await;
        match self.store.fetch_chain(chain, self.fetch.clone()).await {
            Ok(obj) => {
                let found = match obj.progress().state {
                    FillState::Complete => Found::Hit,
                    _ if known.as_ref().is_some_and(|k| k.key() == obj.key()) && running => {
                        Found::Coalesced
                    }
                    _ => Found::Miss,
                };
                e.key = Some(obj.key().to_owned());
                e.probed = Some(Instant::now());
                Ok((obj, found))
            }
            Err(err) => {
                let kind = err.source_error().map(|s| s.kind);
                if kind == Some(SourceErrorKind::NotFound) {
                    e.key = None;
                    e.probed = None;
                    drop(e);
                    self.entries.lock().remove(url);
                    return Err(text(
                        StatusCode::NOT_FOUND,
                        format!("origin has no {url}\n"),
                    ));
                }
                tracing::warn!(%url, error = %err, "origin probe failed");
                self.live.upstream_error(url, &err.to_string());
                self.fallback(url, known, &err.to_string())
            }
        }
    }

    /// The origin of a mirrored URL with the configured parents in front,
    /// each asked by URL for the version the origin serves now (a probe of
    /// the origin tells which; if it fails, the fetch reports it).
    async fn chain_for(&self, url: &str, origin: Arc<dyn Source>) -> SourceChain {
        let mut chain = SourceChain::new(origin.clone());
        if self.parents.is_empty() {
            return chain;
        }
        let Ok(info) = origin.probe().await else {
            return chain;
        };
        let config = parent_config(&crate::HttpSourceConfig::default());
        for p in &self.parents {
            match ParentSource::by_url(p, url, &info, config.clone()) {
                Ok(s) => chain = chain.with_alternate(Arc::new(s)),
                Err(e) => tracing::warn!(parent = %p, "parent left out: {e}"),
            }
        }
        chain
    }

    /// The origin cannot be asked: serve a complete copy if we have one.
    #[allow(clippy::result_large_err)]
    fn fallback(
        &self,
        url: &str,
        known: Option<Object>,
        why: &str,
    ) -> Result<(Object, Found), Response<Body>> {
        let complete = |o: &Object| o.progress().state == FillState::Complete;
        if let Some(o) = known.filter(complete) {
            return Ok((o, Found::Hit));
        }
        // Resolving by URL prefers a complete object.
        if let Ok(o) = self.store.open_ref(url) {
            if complete(&o) {
                return Ok((o, Found::Hit));
            }
        }
        Err(text(
            StatusCode::BAD_GATEWAY,
            format!("origin unavailable for {url} and no complete copy cached: {why}\n"),
        ))
    }

    fn count(&self, found: Found) {
        match found {
            Found::Hit => self.metrics.hits_total.inc(),
            Found::Miss => self.metrics.misses_total.inc(),
            Found::Coalesced => self.metrics.coalesced_requests_total.inc(),
        }
    }
}

fn method_not_allowed() -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET and HEAD\n".to_owned(),
    );
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    r
}

fn store_error(e: &Error) -> Response<Body> {
    tracing::warn!(error = %e, "store error");
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
}
