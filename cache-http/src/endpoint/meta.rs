//! How an object is presented: its validators, for conditional requests,
//! and the header values every response about it carries. It depends
//! only on two leaves, `etag` and `range`.
//!
//! The values are made once per object (a [`super::hot`] entry lives a few
//! seconds and serves every request for its name), not once per request:
//! profiled under wrk (random 64 KiB ranges, BENCHMARKS.md "Serving"),
//! building each response's headers from strings (the ETag copied, checked
//! and copied again, `Last-Modified` formatted) was the largest single
//! piece of the endpoint's own CPU after the access log.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::etag;
use super::range::if_range_matches;

/// The media type of every object body.
pub(crate) const CONTENT_TYPE: &str = "application/octet-stream";

/// How one object is presented (see the module docs).
pub(crate) struct ServeMeta {
    /// The ETag sent.
    etag: String,
    /// Another tag the representation also answers to in conditionals
    /// (the content hash of a mirrored object, once known).
    alt_etag: Option<String>,
    last_modified: Option<SystemTime>,
    /// Accept-Ranges, ETag, Last-Modified, Cache-Control and Repr-Digest,
    /// as they are sent: the headers of every answer about the object,
    /// 304 included.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ServeMeta {
    /// The presentation of an object tagged `etag`. `immutable`: content
    /// addressed, cacheable forever. `repr_digest`: the `Repr-Digest`
    /// value (see [`super::hot::repr_digest`]).
    pub(crate) fn new(
        etag: String,
        alt_etag: Option<String>,
        last_modified: Option<SystemTime>,
        immutable: bool,
        repr_digest: Option<HeaderValue>,
    ) -> ServeMeta {
        let mut headers = vec![(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))];
        // An ETag is made by `etag` from hex digits; a value that could
        // not be sent is sent as "invalid" rather than not at all, so a
        // client still sees that conditionals will not match.
        let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("invalid"));
        headers.push((header::ETAG, tag));
        if let Some(lm) = last_modified {
            if let Ok(v) = HeaderValue::try_from(httpdate::fmt_http_date(lm)) {
                headers.push((header::LAST_MODIFIED, v));
            }
        }
        if immutable {
            headers.push((
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ));
        }
        if let Some(v) = repr_digest {
            headers.push((HeaderName::from_static("repr-digest"), v));
        }
        ServeMeta {
            etag,
            alt_etag,
            last_modified,
            headers,
        }
    }

    /// The headers every answer about the object carries, with room for
    /// `more`.
    pub(crate) fn headers(&self, more: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len() + more);
        for (name, value) in &self.headers {
            map.insert(name.clone(), value.clone());
        }
        map
    }

    /// The headers every answer about the object carries, as sent (in
    /// this order by hyper too: the fast path writes them itself).
    pub(crate) fn fields(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Whether an `If-None-Match` value matches (RFC 9110 §13.1.2).
    pub(crate) fn matches_if_none_match(&self, v: &str) -> bool {
        etag::if_none_match(v, &self.etag)
            || self
                .alt_etag
                .as_deref()
                .is_some_and(|t| etag::if_none_match(v, t))
    }

    /// Whether an `If-Range` value lets the Range through (§13.1.5).
    pub(crate) fn matches_if_range(&self, v: &str) -> bool {
        if_range_matches(v, &self.etag, self.last_modified)
            || self
                .alt_etag
                .as_deref()
                .is_some_and(|t| if_range_matches(v, t, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn headers_are_made_once_and_sent_as_given() {
        let lm = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_871_101);
        let digest = HeaderValue::from_static("sha-256=:AAAA:");
        let meta = ServeMeta::new(
            "\"abc\"".into(),
            Some("\"def\"".into()),
            Some(lm),
            true,
            Some(digest),
        );
        let h = meta.headers(3);
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(h["etag"], "\"abc\"");
        assert_eq!(h["last-modified"], "Sat, 28 Nov 2026 13:05:01 GMT");
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["repr-digest"], "sha-256=:AAAA:");
        assert!(h.capacity() >= 8);
        assert!(meta.matches_if_none_match("\"def\""));
        assert!(meta.matches_if_range("\"abc\""));
        assert!(meta.matches_if_range("Sat, 28 Nov 2026 13:05:01 GMT"));
        assert!(!meta.matches_if_range("\"zzz\""));

        let plain = ServeMeta::new("\"abc\"".into(), None, None, false, None);
        let h = plain.headers(0);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(!plain.matches_if_none_match("\"def\""));
    }
}
