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
//!
//! The pull-through logic behind `/m/` and `/u` is in [`mirror`](super::mirror);
//! the state every handler shares is [`App`](super::app::App).

use std::sync::Arc;

use cache_core::{Algo, Digest, FillState};
use http::{header, Method, Request, Response, StatusCode};

use super::access::{tag, CacheResult as Found};
use super::app::App;
use super::hot::HotObject;
use super::response::{method_not_allowed, store_error, text, Body};
use super::serve_object;

impl App {
    /// Answers one request. Never fails: errors become error responses.
    pub(crate) async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        // hyper bounds its read buffer, but a head that arrives in one read
        // can exceed it: enforce the limit on the parsed head as well.
        let uri = &parts.uri;
        let target_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(1, |p| p.as_str().len());
        let head_bytes: usize = target_len
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
        let path = parts.uri.path();
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
            return tag(resp, name, None);
        }
        text(StatusCode::NOT_FOUND, "not found\n".to_owned())
    }

    /// The object `/blobs/` serves for `digest`, if one is complete. A
    /// name resolved in the last seconds is served from memory (see
    /// `hot`); else the store resolves it on a blocking thread (an alias
    /// file, the object's digests for `Repr-Digest`).
    pub(crate) async fn hot_blob(
        &self,
        digest: &Digest,
    ) -> cache_core::Result<Option<Arc<HotObject>>> {
        if let Some(hot) = self.hot_blobs.get(digest) {
            return Ok(Some(hot));
        }
        let wanted = digest.clone();
        let found = self
            .blocking("look up object", move |s| {
                let Some(object) = s.get_digest(&wanted)? else {
                    return Ok(None);
                };
                let Some(hash) = object.blake3() else {
                    return Ok(None);
                };
                let etag = super::etag::strong_etag(&hash);
                Ok(Some(HotObject::new(object, etag, None, None, true)))
            })
            .await?;
        Ok(found.map(|hot| self.hot_blobs.put(digest.clone(), hot)))
    }

    /// Shows `object` as read on the status page and in `/status`.
    pub(crate) fn track(&self, object: &cache_core::Object) {
        self.tracker.track(object);
        self.live.track(object);
    }

    async fn blob(&self, path: &str, parts: &http::request::Parts) -> Response<Body> {
        // `/blobs/<blake3>/manifest`, `/blobs/<blake3>` or `/blobs/<algo>/<hex>`.
        if let Some(hex) = path.strip_suffix("/manifest") {
            return match Digest::from_hex(Algo::Blake3, hex)
                .ok()
                .and_then(|d| d.as_blake3())
            {
                Some(hash) => super::manifest::serve(self, &hash, parts).await,
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
        let hot = match self.hot_blob(&digest).await {
            Ok(Some(hot)) => hot,
            Ok(None) => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no complete object with {digest}\n"),
                )
            }
            Err(e) => return store_error(&e),
        };
        let object = hot.object.clone();
        let found = match object.progress().state {
            FillState::Complete => Found::Hit,
            FillState::Filling | FillState::Following => Found::Partial,
            _ => Found::Miss,
        };
        self.track(&object);
        tag(
            serve_object::serve(self, parts, object, &hot.meta),
            None,
            Some(found),
        )
    }
}
