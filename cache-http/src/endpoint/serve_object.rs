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

use bytes::Bytes;
use cache_core::Object;
use futures::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use super::app::App;
pub(crate) use super::meta::ServeMeta;
use super::meta::CONTENT_TYPE;
use super::multipart::MultipartPlan;
use super::range::{content_range, parse_range_header, unsatisfied_content_range, RangeOutcome};
pub(crate) use super::response::{empty, text, Body, BodyError};
use super::sendfile::{ConnSpans, Spans, MIN_SENDFILE};

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
    let mut headers = meta.headers(2);
    if let Some(v) = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if meta.matches_if_none_match(v) {
            return respond(StatusCode::NOT_MODIFIED, headers, empty());
        }
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    respond(StatusCode::OK, headers, empty())
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

    // Content-Type, Content-Range and Content-Length at most.
    let mut headers = meta.headers(3);

    // RFC 9110 §13.2.2: If-None-Match before Range.
    if let Some(v) = get(header::IF_NONE_MATCH) {
        if meta.matches_if_none_match(v) {
            return respond(StatusCode::NOT_MODIFIED, headers, empty());
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

    let octets = HeaderValue::from_static(CONTENT_TYPE);
    match outcome {
        RangeOutcome::Full | RangeOutcome::TooMany => {
            headers.insert(header::CONTENT_TYPE, octets);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            let body = if head {
                empty()
            } else {
                StreamBody::new(object_stream(&object, 0..len, spans_for(len))).boxed_unsync()
            };
            respond(StatusCode::OK, headers, body)
        }
        RangeOutcome::NotSatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(unsatisfied_content_range(len)),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, empty())
        }
        RangeOutcome::Ranges(ranges) if ranges.len() == 1 => {
            let r = ranges[0].clone();
            headers.insert(header::CONTENT_TYPE, octets);
            headers.insert(header::CONTENT_RANGE, header_value(content_range(&r, len)));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            let spans = spans_for(r.end - r.start);
            let body = StreamBody::new(object_stream(&object, r, spans)).boxed_unsync();
            respond(StatusCode::PARTIAL_CONTENT, headers, body)
        }
        RangeOutcome::Ranges(ranges) => {
            let plan = match MultipartPlan::new(ranges, len, Some(CONTENT_TYPE)) {
                Ok(p) => p,
                Err(e) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
                }
            };
            headers.insert(header::CONTENT_TYPE, header_value(plan.content_type()));
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(plan.content_length()),
            );
            let spans = spans_for(plan.content_length());
            respond(
                StatusCode::PARTIAL_CONTENT,
                headers,
                multipart_body(object, plan, spans),
            )
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

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A header value this module formatted (digits, `bytes`, `-`, `/`, `*`,
/// a boundary of letters and digits): always valid.
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("invalid"))
}
