//! `GET|HEAD /blobs/{blake3}/manifest`: the chunk chaining values of a
//! complete object ([`cache_core::Manifest`], binary, its format documented
//! in cache-core), so a child cache can check every chunk it gets from us.
//!
//! Only complete objects have one (404 otherwise: the CVs of a partial
//! object cannot be proven against its name). The manifest of a root is
//! fixed once the object is complete, so it is immutable and its strong
//! ETag is derived from the root and the chunk size.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::app::App;
use super::etag;
use super::response::{empty, text, Body};

/// Media type of a manifest.
pub const CONTENT_TYPE: &str = "application/vnd.blockcache.manifest";

/// The strong ETag of the manifest of `hash` in chunks of `chunk_size`.
pub fn manifest_etag(hash: &blake3::Hash, chunk_size: u32) -> String {
    format!("\"{}.manifest.{chunk_size}\"", hash.to_hex())
}

pub(crate) async fn serve(
    app: &App,
    hash: &blake3::Hash,
    parts: &http::request::Parts,
) -> Response<Body> {
    // The lookup and the manifest (the chunk values from the index) read
    // files: off the runtime.
    let h = *hash;
    let found = app
        .blocking("read manifest", move |s| match s.get(&h)? {
            Some(o) => o.manifest().map(|m| Some(m.ok_or(o.key().to_owned()))),
            None => Ok(None),
        })
        .await;
    let manifest = match found {
        Ok(Some(Ok(m))) => m,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no object with BLAKE3 {}\n", hash.to_hex()),
            )
        }
        Ok(Some(Err(_incomplete))) => {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "object {} is not complete yet: only complete objects have a manifest\n",
                    hash.to_hex()
                ),
            )
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let tag = manifest_etag(hash, manifest.chunk_size());
    let not_modified = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag::if_none_match(v, &tag));
    let bytes = manifest.encode();
    let len = bytes.len();
    let mut resp = if not_modified {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if parts.method == Method::HEAD {
        Response::new(empty())
    } else {
        Response::new(
            Full::new(Bytes::from(bytes))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if !not_modified {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}
