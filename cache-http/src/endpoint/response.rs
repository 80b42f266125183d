//! The endpoint's response body type and the small responses every
//! handler builds (text, empty, method not allowed, store error). A leaf:
//! it depends on no other endpoint module.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Error type of response bodies: a failed fill mid-body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Response body of the endpoint.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A small text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 405 for anything but GET and HEAD.
pub(crate) fn method_not_allowed() -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET and HEAD\n".to_owned(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// 500 for a store error, logged once here.
pub(crate) fn store_error(e: &cache_core::Error) -> Response<Body> {
    tracing::warn!(error = %e, "store error");
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
}
