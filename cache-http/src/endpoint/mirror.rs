//! The pull-through mirror: `/m/{mirror}/{path}` and the parent route
//! `/u?url=`, resolved to an object of the store (probe, revalidate,
//! start or join a fill, size limit, fallback to a stored copy).
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
//! With a shared tier ([`EndpointConfig::shared`](super::config::EndpointConfig))
//! a mirror fill asks the local store, the parents, the tier, then the
//! origin, and publishes in the background ([`super::shared_tier`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{object_key, FillState, Object, Source, SourceChain, SourceErrorKind, SourceInfo};
use http::{Method, Response, StatusCode};
use url::Url;

use super::access::{tag, CacheResult as Found};
use super::app::{App, MirrorEntry};
use super::config::MirrorConfig;
use super::hot::HotObject;
use super::mirror_path::{join_mirror_path, split_mirror_name};
use super::response::{text, Body};
use super::serve_object::{self, ServeMeta};
use crate::source::{parent_config, ParentSource};

/// How long a new fill waits for room under the size limit before 507.
const ADMIT_PATIENCE: Duration = Duration::from_secs(3);

/// How long a request waits for the origin's answer to a probe before it
/// is served from a complete stored copy, or gets 504. The source's own
/// retries could take minutes on a hanging origin.
const PROBE_BUDGET: Duration = Duration::from_secs(10);

impl App {
    /// A `/m/` request; returns the mirror's name for the access log.
    pub(crate) async fn mirror(
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
    pub(crate) async fn by_origin_url(
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
            Some((mirror, url)) => tag(
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
        self.track(&object);
        // Its header values, computed once per few seconds (see `hot`).
        let hot = match self.hot_keys.get(object.key()) {
            Some(hot) => hot,
            None => {
                let o = object.clone();
                let make = move || {
                    let info = o.info();
                    let etag = super::etag::derived_etag(&info.source, &info.validator, info.len);
                    let alt = o.blake3().map(|h| super::etag::strong_etag(&h));
                    HotObject::new(o, etag, alt, last_modified(&info.validator), false)
                };
                // Only a complete object has a digests file to read. An
                // incomplete one is made here, without a hand-off: a
                // yield now would let a fill this request just started
                // claim its first requests before the read below says
                // which chunk it waits for.
                let made = if object.progress().state == FillState::Complete {
                    tokio::task::spawn_blocking(make).await
                } else {
                    Ok(make())
                };
                match made {
                    Ok(hot) => self.hot_keys.put(object.key().to_owned(), hot),
                    Err(e) => {
                        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
                    }
                }
            }
        };
        let resp = serve_object::serve(self, parts, object, &hot.meta);
        tag(resp, None, Some(found))
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
                .open_ref(url)
                .await
                .ok()
                .filter(|o| o.progress().state == FillState::Complete);
            e.key = complete.map(|o| o.key().to_owned());
        }
        let known = match e.key.as_deref() {
            // Served in the last seconds: no store look-up (see `hot`).
            Some(k) => match self.hot_keys.get(k) {
                Some(hot) => Some(hot.object.clone()),
                None => self.open_ref(k).await.ok(),
            },
            None => None,
        };
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
            return self
                .fallback(url, known, "no upstream source is configured")
                .await;
        };
        let source = match factory(url) {
            Ok(s) => s,
            Err(err) if err.kind == SourceErrorKind::NotFound => {
                return Err(text(StatusCode::NOT_FOUND, format!("{err}\n")))
            }
            Err(err) => {
                self.live.upstream_error(url, &err.to_string());
                return self.fallback(url, known, &err.to_string()).await;
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
                return self.fallback(url, known, &err.to_string()).await;
            }
        };
        let identity = source.identity();
        let key = object_key(&identity, &info.validator, info.len);
        if head {
            // The stored copy of this version when there is one (its
            // content hash as an alternative tag), else the probe alone.
            return Ok(match self.open_ref(&key).await {
                Ok(obj) => {
                    e.key = Some(key);
                    e.probed = Some(Instant::now());
                    Resolved::Object(obj, Found::Hit)
                }
                Err(_) => Resolved::Probed(info, identity),
            });
        }
        let stored = self.open_ref(&key).await.ok();
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
                    let metrics = self.metrics.clone();
                    super::shared_tier::publish_when_verified(tier, owed, &obj, move || {
                        metrics.shared_published()
                    });
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
                self.fallback(url, known, &err.to_string()).await
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
    async fn fallback(
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
        if let Ok(o) = self.open_ref(url).await {
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
    ServeMeta::new(
        super::etag::derived_etag(source, validator, len),
        alt_etag,
        last_modified(validator),
        false,
        None,
    )
}

/// The origin's `Last-Modified`, when it is the validator (`lm:DATE`).
fn last_modified(validator: &str) -> Option<std::time::SystemTime> {
    validator
        .strip_prefix("lm:")
        .and_then(|d| httpdate::parse_http_date(d).ok())
}
