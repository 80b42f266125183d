//! Serving one object, possibly still filling: conditional requests,
//! ranges (single, multipart, unsatisfiable), HEAD, and a body that streams
//! chunks as they complete.
//!
//! The full length is known from the probe, so every response carries an
//! exact `Content-Length`. If the fill fails while a body is being sent,
//! the body stream returns an error and hyper aborts the connection: a
//! client never gets a short body under a full length.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cache_core::Object;
use futures::{Stream, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use super::app::App;
use super::etag;
use super::multipart::MultipartPlan;
use super::range::{
    content_range, if_range_matches, parse_range_header, unsatisfied_content_range, RangeOutcome,
};
pub(crate) use super::response::{empty, text, Body, BodyError};
use super::sendfile::{ConnSpans, Spans, MIN_SENDFILE};

/// How an object is presented.
pub(crate) struct ServeMeta {
    /// The ETag sent.
    pub(crate) etag: String,
    /// Another tag the representation also answers to in conditionals
    /// (the content hash of a mirrored object, once known).
    pub(crate) alt_etag: Option<String>,
    pub(crate) last_modified: Option<SystemTime>,
    pub(crate) content_type: &'static str,
    /// Content-addressed: cache forever.
    pub(crate) immutable: bool,
    /// `Repr-Digest` (see [`super::hot::repr_digest`]).
    pub(crate) repr_digest: Option<HeaderValue>,
}

impl ServeMeta {
    fn matches_if_none_match(&self, v: &str) -> bool {
        etag::if_none_match(v, &self.etag)
            || self
                .alt_etag
                .as_deref()
                .is_some_and(|t| etag::if_none_match(v, t))
    }

    fn matches_if_range(&self, v: &str) -> bool {
        if_range_matches(v, &self.etag, self.last_modified)
            || self
                .alt_etag
                .as_deref()
                .is_some_and(|t| if_range_matches(v, t, None))
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The bytes of `range` as body frames; an error (failed fill) ends the
/// body with an error so the connection is reset.
fn object_stream(
    object: &Object,
    range: Range<u64>,
    spans: Option<Arc<Spans>>,
) -> impl Stream<Item = Result<Frame<Bytes>, BodyError>> + Send + 'static {
    let of = object.clone();
    object.stream(range).map(move |piece| match piece {
        Ok(b) => {
            // Sent from the data file (see `sendfile`) on TCP connections.
            if let Some(spans) = &spans {
                if let Some(file) = of.file_span(&b) {
                    spans.register(&b, file);
                }
            }
            Ok(Frame::data(b))
        }
        Err(e) => {
            tracing::warn!(error = %e, "aborting a response: the object's fill failed");
            Err(Box::new(e) as BodyError)
        }
    })
}

/// Answers a HEAD of an object known only from a probe of its origin
/// (nothing stored, nothing fetched): the headers a GET would get.
pub(crate) fn serve_head(
    parts: &http::request::Parts,
    len: u64,
    meta: &ServeMeta,
) -> Response<Body> {
    let builder = base_headers(meta);
    if let Some(v) = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if meta.matches_if_none_match(v) {
            return finish(builder.status(StatusCode::NOT_MODIFIED), empty());
        }
    }
    let b = builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, meta.content_type)
        .header(header::CONTENT_LENGTH, len);
    finish(b, empty())
}

/// The headers every object response carries.
fn base_headers(meta: &ServeMeta) -> http::response::Builder {
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, hv(&meta.etag));
    if let Some(lm) = meta.last_modified {
        builder = builder.header(header::LAST_MODIFIED, httpdate::fmt_http_date(lm));
    }
    if meta.immutable {
        builder = builder.header(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    }
    builder
}

/// Answers a GET or HEAD for `object`.
pub(crate) fn serve(
    app: &App,
    parts: &http::request::Parts,
    object: Object,
    meta: &ServeMeta,
) -> Response<Body> {
    let len = object.len();
    let head = parts.method == Method::HEAD;
    let conn_spans = parts.extensions.get::<ConnSpans>().map(|c| c.0.clone());
    // Large responses go out with sendfile (see `sendfile`).
    let spans_for = |bytes: u64| conn_spans.clone().filter(|_| bytes >= MIN_SENDFILE);
    let req = &parts.headers;
    let get = |name: header::HeaderName| req.get(name).and_then(|v| v.to_str().ok());

    let mut builder = base_headers(meta);
    if let Some(v) = &meta.repr_digest {
        builder = builder.header("repr-digest", v.clone());
    }

    // RFC 9110 §13.2.2: If-None-Match before Range.
    if let Some(v) = get(header::IF_NONE_MATCH) {
        if meta.matches_if_none_match(v) {
            return finish(builder.status(StatusCode::NOT_MODIFIED), empty());
        }
    }

    // Range applies to GET only (§14.2); If-Range can switch it off.
    let mut outcome = RangeOutcome::Full;
    if !head {
        if let Some(r) = get(header::RANGE) {
            let honour = get(header::IF_RANGE).is_none_or(|v| meta.matches_if_range(v));
            if honour {
                outcome = parse_range_header(r, len, app.max_ranges);
            }
        }
    }

    match outcome {
        RangeOutcome::Full | RangeOutcome::TooMany => {
            let b = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, meta.content_type)
                .header(header::CONTENT_LENGTH, len);
            let body = if head {
                empty()
            } else {
                StreamBody::new(object_stream(&object, 0..len, spans_for(len))).boxed_unsync()
            };
            finish(b, body)
        }
        RangeOutcome::NotSatisfiable => {
            let b = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, unsatisfied_content_range(len))
                .header(header::CONTENT_LENGTH, 0);
            finish(b, empty())
        }
        RangeOutcome::Ranges(ranges) if ranges.len() == 1 => {
            let r = ranges[0].clone();
            let b = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, meta.content_type)
                .header(header::CONTENT_RANGE, content_range(&r, len))
                .header(header::CONTENT_LENGTH, r.end - r.start);
            let body = StreamBody::new(object_stream(
                &object,
                r.clone(),
                spans_for(r.end - r.start),
            ))
            .boxed_unsync();
            finish(b, body)
        }
        RangeOutcome::Ranges(ranges) => {
            let plan = match MultipartPlan::new(ranges, len, Some(meta.content_type)) {
                Ok(p) => p,
                Err(e) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
                }
            };
            let b = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, plan.content_type())
                .header(header::CONTENT_LENGTH, plan.content_length());
            let spans = spans_for(plan.content_length());
            finish(b, multipart_body(object, plan, spans))
        }
    }
}

/// The multipart body: each part header then its bytes, streamed lazily
/// (one object reader at a time), then the closing delimiter.
fn multipart_body(object: Object, plan: MultipartPlan, spans: Option<Arc<Spans>>) -> Body {
    let plan = Arc::new(plan);
    let n = plan.len();
    let parts = futures::stream::iter(0..=n).flat_map(move |i| {
        if i == n {
            let closing = plan.closing();
            return futures::stream::once(async move { Ok(Frame::data(closing)) }).boxed();
        }
        let header = plan.part_header(i);
        let r = plan.ranges()[i].clone();
        futures::stream::once(async move { Ok(Frame::data(header)) })
            .chain(object_stream(&object, r, spans.clone()))
            .boxed()
    });
    StreamBody::new(parts).boxed_unsync()
}

fn finish(builder: http::response::Builder, body: Body) -> Response<Body> {
    match builder.body(body) {
        Ok(r) => r,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
