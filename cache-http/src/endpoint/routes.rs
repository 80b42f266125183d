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
//! A `HEAD` never starts a fill: it is answered from the stored copy or
//! from a probe of the origin (one 1-byte range request). A mirror with
//! `fill = lazy` fetches only the chunks readers demand (plus read-ahead).
//! With a size limit, a new fill that cannot fit even after eviction is
//! refused with 507 before anything is downloaded.
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
//!
//! With a shared tier ([`EndpointConfig::shared`](super::server::EndpointConfig))
//! a mirror fill asks the local store, the parents, the tier, then the
//! origin, and publishes in the background ([`super::shared_tier`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{
    object_key, Algo, Digest, Error, FetchOptions, FillState, Object, Source, SourceChain,
    SourceErrorKind, SourceInfo, Store,
};
use http::{header, Method, Request, Response, StatusCode};
use parking_lot::{Mutex, RwLock};
use url::Url;

use super::access::{AccessLogFormat, CacheResult as Found, RouteInfo};
use super::metrics::Metrics;
use super::mirror_path::{join_mirror_path, split_mirror_name};
use super::serve_object::{self, text, Body, ServeMeta};
use super::server::{EndpointConfig, MirrorConfig, MirrorSourceFactory};
use super::status::Tracker;
use crate::source::{parent_config, ParentSource};

/// How long a new fill waits for room under the size limit before 507.
const ADMIT_PATIENCE: Duration = Duration::from_secs(3);

/// How long a request waits for the origin's answer to a probe before it
/// is served from a complete stored copy, or gets 504. The source's own
/// retries could take minutes on a hanging origin.
const PROBE_BUDGET: Duration = Duration::from_secs(10);

/// What the endpoint remembers about one mirrored URL.
#[derive(Default)]
struct MirrorEntry {
    /// Key of the object the last successful probe resolved to (or, before
    /// the first probe, the complete stored copy of the URL).
    key: Option<String>,
    /// When the origin last confirmed `key`.
    probed: Option<Instant>,
    /// A background revalidation is running.
    revalidating: bool,
    /// The origin no longer serves `key` (a new version, or 404): the next
    /// request asks the origin before it serves anything.
    must_probe: bool,
}

/// Shared state of a running endpoint.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: Tracker,
    pub(crate) live: Arc<super::live::Live>,
    /// Replaced as a whole on reload; a request keeps the `Arc` it took.
    mirrors: RwLock<HashMap<String, Arc<MirrorConfig>>>,
    factory: Option<MirrorSourceFactory>,
    revalidate: Duration,
    pub(crate) access_log: AccessLogFormat,
    pub(crate) max_size: Option<u64>,
    fetch: FetchOptions,
    pub(crate) max_ranges: usize,
    max_header_bytes: usize,
    parents: Vec<String>,
    shared: Option<Arc<dyn super::shared_tier::ServeTier>>,
    /// Per mirrored URL, serialised by its own async mutex so that two
    /// first requests for one URL probe the origin once.
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<MirrorEntry>>>>,
}

impl App {
    pub(crate) fn new(store: Store, config: &EndpointConfig) -> App {
        let metrics = Arc::new(Metrics::new());
        if let Some(tier) = &config.shared {
            metrics.attach_shared(tier.clone());
        }
        let live = Arc::new(super::live::Live::new(store.clone(), config.max_size));
        // Started here, not by the first request (see `Live::track`).
        live.ensure_started();
        let app = App {
            store,
            tracker: Tracker::default(),
            live,
            metrics,
            mirrors: RwLock::default(),
            factory: config.source_factory.clone(),
            revalidate: config.revalidate,
            access_log: config.access_log,
            max_size: config.max_size,
            fetch: config.fetch.clone(),
            max_ranges: config.max_ranges,
            max_header_bytes: config.max_header_bytes,
            parents: config.parents.clone(),
            shared: config.shared.clone(),
            entries: Mutex::default(),
        };
        app.set_mirrors(config.mirrors.clone());
        app
    }

    /// Makes `mirrors` the mirror set (checked by the caller).
    pub(crate) fn set_mirrors(&self, mirrors: Vec<MirrorConfig>) {
        let map: HashMap<String, Arc<MirrorConfig>> = mirrors
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        self.live.set_mirrors(
            map.values()
                .map(|m| (m.name.clone(), m.base.to_string()))
                .collect(),
        );
        *self.mirrors.write() = map;
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
                    .set_fills_in_progress(self.tracker.active_fills());
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
            let (name, resp) = self.mirror(rest, &parts).await;
            return with_route(resp, name, None);
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
            FillState::Filling | FillState::Following => Found::Partial,
            _ => Found::Miss,
        };
        self.tracker.track(&object);
        self.live.track(&object);
        let meta = ServeMeta {
            etag: super::etag::strong_etag(&hash),
            alt_etag: None,
            last_modified: None,
            content_type: "application/octet-stream",
            immutable: true,
        };
        with_route(
            serve_object::serve(self, parts, object, &meta),
            None,
            Some(found),
        )
    }

    /// A `/m/` request; returns the mirror's name for the access log.
    async fn mirror(
        self: &Arc<Self>,
        rest: &str,
        parts: &http::request::Parts,
    ) -> (Option<String>, Response<Body>) {
        let (name, rest) = match split_mirror_name(rest) {
            Ok(x) => x,
            Err(e) => {
                let resp = text(StatusCode::BAD_REQUEST, format!("bad mirror path: {e}\n"));
                return (None, resp);
            }
        };
        let Some(mirror) = self.mirrors.read().get(name).cloned() else {
            return (
                None,
                text(
                    StatusCode::NOT_FOUND,
                    format!("unknown mirror {name:?}: only configured mirrors are served\n"),
                ),
            );
        };
        let named = Some(name.to_owned());
        let mut url = match join_mirror_path(&mirror.base, rest) {
            Ok(u) => u,
            Err(e) => {
                return (
                    named,
                    text(StatusCode::BAD_REQUEST, format!("refused path: {e}\n")),
                )
            }
        };
        if mirror.pass_query {
            url.set_query(parts.uri.query());
        }
        (
            named,
            self.serve_mirrored(&mirror, url.as_str(), parts).await,
        )
    }

    /// `/u?url=URL`: a child cache asks for an origin URL. Served only when
    /// the URL lies under one of our mirrors (it then is exactly the object
    /// of that mirror path), so the endpoint never fetches arbitrary URLs.
    async fn by_origin_url(
        self: &Arc<Self>,
        query: &str,
        parts: &http::request::Parts,
    ) -> Response<Body> {
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
            Some((mirror, url)) => with_route(
                self.serve_mirrored(&mirror, url.as_str(), parts).await,
                Some(mirror.name.clone()),
                None,
            ),
            None => text(
                StatusCode::FORBIDDEN,
                format!("{wanted:?} is not under a configured mirror; this endpoint is not an open proxy\n"),
            ),
        }
    }

    /// The mirror and URL, if `wanted` lies under a configured mirror base
    /// and is exactly what that mirror's path rules make of it (no dot
    /// segments, no escapes out of the base). A query string is accepted
    /// only by a mirror that passes queries on.
    fn resolve_under_mirror(&self, wanted: &str) -> Option<(Arc<MirrorConfig>, Url)> {
        let wanted_url = Url::parse(wanted).ok()?;
        let mut bare = wanted_url.clone();
        bare.set_query(None);
        let mirrors = self.mirrors.read();
        mirrors.values().find_map(|m| {
            let rest = bare.as_str().strip_prefix(m.base.as_str())?;
            let mut joined = join_mirror_path(&m.base, rest).ok()?;
            if joined != bare || (wanted_url.query().is_some() && !m.pass_query) {
                return None;
            }
            joined.set_query(wanted_url.query());
            Some((m.clone(), joined))
        })
    }

    /// Serves the mirrored object of `url` (already resolved under
    /// `mirror`).
    async fn serve_mirrored(
        self: &Arc<Self>,
        mirror: &Arc<MirrorConfig>,
        url: &str,
        parts: &http::request::Parts,
    ) -> Response<Body> {
        let head = parts.method == Method::HEAD;
        let (object, found) = match self.mirror_object(mirror, url, head).await {
            Ok(Resolved::Object(o, found)) => (o, found),
            Ok(Resolved::Probed(info, identity)) => {
                let meta = mirror_meta(&identity, &info.validator, info.len, None);
                return serve_object::serve_head(parts, info.len, &meta);
            }
            Err(resp) => return resp,
        };
        self.tracker.track(&object);
        self.live.track(&object);
        let info = object.info();
        let meta = mirror_meta(
            &info.source,
            &info.validator,
            info.len,
            object.blake3().map(|h| super::etag::strong_etag(&h)),
        );
        let resp = serve_object::serve(self, parts, object, &meta);
        with_route(resp, None, Some(found))
    }

    /// The object behind a mirrored URL: reuse the known one inside the
    /// revalidation window, else probe the origin and start or join its
    /// fill through `Store::fetch`. A HEAD (`head`) never starts a fill: it
    /// gets the stored object or the probe's answer.
    #[allow(clippy::result_large_err)]
    async fn mirror_object(
        self: &Arc<Self>,
        mirror: &Arc<MirrorConfig>,
        url: &str,
        head: bool,
    ) -> Result<Resolved, Response<Body>> {
        let entry = self
            .entries
            .lock()
            .entry(url.to_owned())
            .or_default()
            .clone();
        let mut e = entry.lock().await;
        if e.key.is_none() && !e.must_probe {
            // First request for this URL in this process: a complete copy
            // from an earlier run is served like a known one.
            let complete = self
                .store
                .open_ref(url)
                .ok()
                .filter(|o| o.progress().state == FillState::Complete);
            e.key = complete.map(|o| o.key().to_owned());
        }
        let known = e.key.as_deref().and_then(|k| self.store.open_ref(k).ok());
        let known_state = known.as_ref().map(|o| o.progress().state);
        let running = matches!(known_state, Some(FillState::Filling | FillState::Following));
        let revalidate = mirror.revalidate.unwrap_or(self.revalidate);
        let fresh = e.probed.is_some_and(|t| t.elapsed() < revalidate);
        // A running fill checks every response against the validator it
        // started with, so it needs no revalidation of its own.
        if let Some(obj) = known.clone() {
            if running {
                let found = if known_state == Some(FillState::Following) {
                    Found::Partial
                } else {
                    Found::Coalesced
                };
                return Ok(Resolved::Object(obj, found));
            }
            if fresh && (known_state == Some(FillState::Complete) || head) {
                return Ok(Resolved::Object(obj, Found::Hit));
            }
            if known_state == Some(FillState::Complete) && !e.must_probe {
                // Past the window: serve the stored copy now and ask the
                // origin in the background, so a slow or dead origin never
                // delays a copy we have (stale-while-revalidate).
                if !e.revalidating {
                    e.revalidating = true;
                    self.revalidate_in_background(mirror.clone(), url, entry.clone(), obj.key());
                }
                return Ok(Resolved::Object(obj, Found::Hit));
            }
        }
        let Some(factory) = mirror.source_factory.as_ref().or(self.factory.as_ref()) else {
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
        let source = super::live::counting(&self.live, source);
        let source = super::metered::metered(source, self.metrics.clone(), &mirror.name);
        let probed = tokio::time::timeout(PROBE_BUDGET, source.probe())
            .await
            .unwrap_or_else(|_| {
                Err(cache_core::SourceError::new(
                    SourceErrorKind::Network,
                    format!("no answer from the origin within {PROBE_BUDGET:?}"),
                ))
            });
        e.must_probe = false;
        let info = match probed {
            Ok(info) => info,
            Err(err) => {
                if err.kind == SourceErrorKind::NotFound {
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
                return self.fallback(url, known, &err.to_string());
            }
        };
        let identity = source.identity();
        let key = object_key(&identity, &info.validator, info.len);
        if head {
            // The stored copy of this version when there is one (its
            // content hash as an alternative tag), else the probe alone.
            return Ok(match self.store.open_ref(&key) {
                Ok(obj) => {
                    e.key = Some(key);
                    e.probed = Some(Instant::now());
                    Resolved::Object(obj, Found::Hit)
                }
                Err(_) => Resolved::Probed(info, identity),
            });
        }
        let stored = self.store.open_ref(&key).ok();
        if stored.is_none() {
            self.admit(url, info.len).await?;
        }
        let chain = self.chain_for(url, &info, {
            let probed: Arc<dyn Source> =
                Arc::new(super::metered::Probed::new(source, info.clone()));
            probed
        });
        let complete = stored.is_some_and(|o| o.progress().state == FillState::Complete);
        let tier = self.shared.as_ref().filter(|_| !complete);
        let eager = mirror.fill == cache_core::FillPolicy::Eager;
        let (chain, owed) = super::shared_tier::join(tier, chain, &identity, &info, eager).await;
        let mut fetch = self.fetch.clone();
        fetch.fill.policy = mirror.fill;
        match self.store.fetch_chain(chain, fetch).await {
            Ok(obj) => {
                if let (Some(tier), Some(owed)) = (tier, owed) {
                    super::shared_tier::publish_when_verified(tier, owed, &obj, &self.metrics);
                }
                let found = match obj.progress().state {
                    FillState::Complete => Found::Hit,
                    FillState::Following => Found::Partial,
                    _ if known.as_ref().is_some_and(|k| k.key() == obj.key()) && running => {
                        Found::Coalesced
                    }
                    _ => Found::Miss,
                };
                e.key = Some(obj.key().to_owned());
                e.probed = Some(Instant::now());
                Ok(Resolved::Object(obj, found))
            }
            Err(err) => {
                if let Some(owed) = owed {
                    tokio::spawn(owed.abandon());
                }
                tracing::warn!(%url, error = %err, "starting the fill failed");
                self.live.upstream_error(url, &err.to_string());
                self.fallback(url, known, &err.to_string())
            }
        }
    }

    /// Asks the origin whether `key` is still what it serves for `url`,
    /// without holding up any request: the entry is updated when the
    /// answer comes (same version: a fresh window; another version or a
    /// 404: the next request asks the origin first; no answer: the stored
    /// copy keeps being served, and the next request past the window asks
    /// again).
    fn revalidate_in_background(
        self: &Arc<Self>,
        mirror: Arc<MirrorConfig>,
        url: &str,
        entry: Arc<tokio::sync::Mutex<MirrorEntry>>,
        key: &str,
    ) {
        let app = self.clone();
        let url = url.to_owned();
        let key = key.to_owned();
        tokio::spawn(async move {
            let answer = app.probe_key(&mirror, &url).await;
            let mut e = entry.lock().await;
            e.revalidating = false;
            if e.key.as_deref() != Some(key.as_str()) {
                return; // a request moved on meanwhile
            }
            match answer {
                Ok(k) if k == key => e.probed = Some(Instant::now()),
                Ok(_) => {
                    tracing::info!(%url, "the origin has a new version; the next request fetches it");
                    e.must_probe = true;
                }
                Err(err) if err.kind == SourceErrorKind::NotFound => {
                    tracing::info!(%url, "the origin no longer has it; the next request gets 404");
                    e.must_probe = true;
                }
                Err(err) => {
                    tracing::warn!(%url, error = %err, "revalidation failed; serving the stored copy");
                    app.live.upstream_error(&url, &err.to_string());
                }
            }
        });
    }

    /// The object key of what the origin serves for `url` now (one probe,
    /// within [`PROBE_BUDGET`]).
    async fn probe_key(
        &self,
        mirror: &MirrorConfig,
        url: &str,
    ) -> Result<String, cache_core::SourceError> {
        let factory = mirror
            .source_factory
            .as_ref()
            .or(self.factory.as_ref())
            .ok_or_else(|| {
                cache_core::SourceError::new(
                    SourceErrorKind::Other,
                    "no upstream source is configured",
                )
            })?;
        let source = super::metered::metered(factory(url)?, self.metrics.clone(), &mirror.name);
        let info = tokio::time::timeout(PROBE_BUDGET, source.probe())
            .await
            .map_err(|_| {
                cache_core::SourceError::new(
                    SourceErrorKind::Network,
                    format!("no answer from the origin within {PROBE_BUDGET:?}"),
                )
            })??;
        Ok(object_key(&source.identity(), &info.validator, info.len))
    }

    /// The origin of a mirrored URL with the configured parents in front,
    /// each asked by URL for the version the origin serves now (`info`,
    /// from the probe the request made).
    fn chain_for(&self, url: &str, info: &SourceInfo, origin: Arc<dyn Source>) -> SourceChain {
        let mut chain = SourceChain::new(origin);
        if self.parents.is_empty() {
            return chain;
        }
        let config = parent_config(&crate::HttpSourceConfig::default());
        for p in &self.parents {
            match ParentSource::by_url(p, url, info, config.clone()) {
                Ok(s) => chain = chain.with_alternate(Arc::new(s)),
                Err(e) => tracing::warn!(parent = %p, "parent left out: {e}"),
            }
        }
        chain
    }

    /// With a size limit: makes room for a new object of `len` bytes by
    /// evicting least recently used complete objects nobody uses, or
    /// refuses it with 507 (nothing is evicted then).
    ///
    /// An object whose last reader just left may still be finishing its
    /// fill (root check, durability flush) for a moment, so a refusal is
    /// retried for up to [`ADMIT_PATIENCE`] before the 507.
    #[allow(clippy::result_large_err)]
    async fn admit(self: &Arc<Self>, url: &str, len: u64) -> Result<(), Response<Body>> {
        let Some(max) = self.max_size else {
            return Ok(());
        };
        let refuse = |why: String| {
            text(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("cannot cache {url} ({len} bytes): {why}\n"),
            )
        };
        if len > max {
            return Err(refuse(format!("larger than the size limit of {max} bytes")));
        }
        let deadline = Instant::now() + ADMIT_PATIENCE;
        loop {
            let app = self.clone();
            let made = tokio::task::spawn_blocking(move || {
                super::housekeeping::make_room(&app, max - len)
            })
            .await;
            match made {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Ok(false)) => {
                    return Err(refuse(format!(
                    "the store cannot get under {max} bytes with it: the other objects are in use"
                )))
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "size limit check failed");
                    return Err(refuse(err.to_string()));
                }
                Err(join) => return Err(refuse(format!("size limit check failed: {join}"))),
            }
        }
    }

    /// The origin cannot be asked: serve a complete copy if we have one.
    #[allow(clippy::result_large_err)]
    fn fallback(
        &self,
        url: &str,
        known: Option<Object>,
        why: &str,
    ) -> Result<Resolved, Response<Body>> {
        let complete = |o: &Object| o.progress().state == FillState::Complete;
        if let Some(o) = known.filter(complete) {
            return Ok(Resolved::Object(o, Found::Hit));
        }
        // Resolving by URL prefers a complete object.
        if let Ok(o) = self.store.open_ref(url) {
            if complete(&o) {
                return Ok(Resolved::Object(o, Found::Hit));
            }
        }
        Err(text(
            StatusCode::BAD_GATEWAY,
            format!("origin unavailable for {url} and no complete copy cached: {why}\n"),
        ))
    }
}

/// What a mirror request resolved to.
enum Resolved {
    /// An object to serve, and how it was found.
    Object(Object, Found),
    /// A HEAD of a version the store does not have: the probe's answer and
    /// the source identity (for the ETag).
    Probed(SourceInfo, String),
}

/// How a mirrored object is presented: a strong ETag derived from (URL,
/// upstream validator, length) that stays the same once the object
/// completes, so resumes with If-Range keep working.
fn mirror_meta(source: &str, validator: &str, len: u64, alt_etag: Option<String>) -> ServeMeta {
    ServeMeta {
        etag: super::etag::derived_etag(source, validator, len),
        alt_etag,
        last_modified: validator
            .strip_prefix("lm:")
            .and_then(|d| httpdate::parse_http_date(d).ok()),
        content_type: "application/octet-stream",
        immutable: false,
    }
}

/// Tells the access log which mirror and cache result `resp` is about.
fn with_route(
    mut resp: Response<Body>,
    mirror: Option<String>,
    result: Option<Found>,
) -> Response<Body> {
    let info = resp.extensions_mut().get_or_insert_with(RouteInfo::default);
    if mirror.is_some() {
        info.mirror = mirror;
    }
    if result.is_some() {
        info.result = result;
    }
    resp
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
