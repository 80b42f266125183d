//! [`ParentSource`]: another blockcache's endpoint as an alternate source
//! (see [`cache_core::chain`]): asked before the origin, trusted only as
//! far as it can be checked.
//!
//! * **By BLAKE3** ([`ParentSource::by_hash`], when the caller knows the
//!   root): `GET /blobs/<h>`, whose strong ETag must be that hash, and its
//!   manifest `GET /blobs/<h>/manifest`. The fill uses the manifest only
//!   if its chunk values merge to the root, then checks every chunk before
//!   it is stored: a lying parent is caught at its first bad chunk.
//! * **By origin URL** ([`ParentSource::by_url`], no root known):
//!   `GET /u?url=<origin URL>`, which the parent resolves only against its
//!   own mirrors. The parent's ETag for a mirrored object is derived from
//!   (origin URL, origin validator, length), so the child, having probed
//!   the origin itself, checks that the parent holds the very version the
//!   origin serves now. Beyond that nothing proves a chunk: a parent that
//!   lies about content is caught only by the final root check (when a
//!   root is expected) — not at the chunk.
//!
//! A parent is asked with few retries and short time-outs: a parent that
//! is down must cost little before the fill falls through to the origin.

use std::ops::Range;
use std::time::Duration;

use cache_core::{Manifest, RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
use futures::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::request::Failure;
use super::{HttpSource, HttpSourceConfig, HttpSourceError};
use crate::endpoint::etag::{derived_etag, strong_etag};

/// Largest manifest accepted (64 MiB: 2 M chunks, 2 TiB at 1 MiB chunks).
const MAX_MANIFEST_BYTES: usize = 64 << 20;

/// Another blockcache endpoint serving one object (see the module docs).
#[derive(Debug)]
pub struct ParentSource {
    blob: HttpSource,
    manifest_url: Option<String>,
    /// The ETag the parent must answer with.
    expected_etag: String,
}

/// Settings for talking to a parent: the given ones, with few retries and
/// short time-outs (a down parent costs seconds, not minutes).
pub fn parent_config(base: &HttpSourceConfig) -> HttpSourceConfig {
    HttpSourceConfig {
        max_retries: 1,
        retry_base: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(10),
        limit_rate: None,
        ..base.clone()
    }
}

fn join(parent: &str, path: &str) -> String {
    format!("{}/{}", parent.trim_end_matches('/'), path)
}

impl ParentSource {
    /// The object with BLAKE3 `hash` at the parent endpoint `parent`
    /// (e.g. `http://10.0.0.2:8472/`).
    pub fn by_hash(
        parent: &str,
        hash: &blake3::Hash,
        config: HttpSourceConfig,
    ) -> Result<ParentSource, HttpSourceError> {
        let url = join(parent, &format!("blobs/{}", hash.to_hex()));
        Ok(ParentSource {
            blob: HttpSource::new(&url, config)?,
            manifest_url: Some(format!("{url}/manifest")),
            expected_etag: strong_etag(hash),
        })
    }

    /// The parent's copy of `origin_url`, which the child probed as
    /// `origin` (its validator and length): the parent must hold that
    /// version.
    pub fn by_url(
        parent: &str,
        origin_url: &str,
        origin: &SourceInfo,
        config: HttpSourceConfig,
    ) -> Result<ParentSource, HttpSourceError> {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", origin_url)
            .finish();
        let url = join(parent, &format!("u?{query}"));
        Ok(ParentSource {
            blob: HttpSource::new(&url, config)?,
            manifest_url: None,
            expected_etag: derived_etag(origin_url, &origin.validator, origin.len),
        })
    }

    async fn fetch_manifest(&self, url: &str) -> Result<Option<Manifest>, SourceError> {
        let err = |kind, cause: String| SourceError::new(kind, format!("{url}: {cause}"));
        let uri: Uri = url
            .parse()
            .map_err(|e| err(SourceErrorKind::Other, format!("{e}")))?;
        let inner = &self.blob.inner;
        let (resp, _) = super::request::send_following(inner, &Method::GET, uri, &HeaderMap::new())
            .await
            .map_err(|f| match f {
                Failure::Transient { kind, cause, .. }
                | Failure::Stale { kind, cause }
                | Failure::Final { kind, cause } => err(kind, cause),
                Failure::Unreachable { cause } => err(SourceErrorKind::Network, cause),
            })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(err(SourceErrorKind::Protocol, format!("HTTP {s}"))),
        }
        let body = Limited::new(resp.into_body(), MAX_MANIFEST_BYTES)
            .collect()
            .await
            .map_err(|e| {
                err(
                    SourceErrorKind::Network,
                    format!("reading the manifest: {e}"),
                )
            })?
            .to_bytes();
        Manifest::decode(&body)
            .map(Some)
            .map_err(|e| err(SourceErrorKind::Protocol, e.to_string()))
    }
}

impl Source for ParentSource {
    fn identity(&self) -> String {
        self.blob.identity()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            let info = self.blob.probe().await?;
            if info.validator != self.expected_etag {
                return Err(SourceError::new(
                    SourceErrorKind::Changed,
                    format!(
                        "{}: the parent has another version (ETag {}, expected {})",
                        self.identity(),
                        info.validator,
                        self.expected_etag
                    ),
                ));
            }
            Ok(info)
        })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        self.blob.read_range(range, expect)
    }

    fn manifest(&self) -> BoxFuture<'_, Result<Option<Manifest>, SourceError>> {
        Box::pin(async move {
            match &self.manifest_url {
                Some(url) => self.fetch_manifest(url).await,
                None => Ok(None),
            }
        })
    }
}
