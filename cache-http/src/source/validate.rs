//! Pure checks on response headers: the `Content-Range` parser and the
//! validator (version tag) rules.
//!
//! Everything here is a pure function of header text so it can be fuzzed and
//! unit-tested without a network.

use http::header::{CONTENT_RANGE, ETAG, LAST_MODIFIED};
use http::HeaderMap;

/// A parsed `Content-Range` header value (RFC 9110 §14.4), `bytes` unit only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/complete`; `complete` is `None` for `*`.
    Bytes {
        /// First byte position, inclusive.
        first: u64,
        /// Last byte position, inclusive.
        last: u64,
        /// Complete length, when the server knows it.
        complete: Option<u64>,
    },
    /// `bytes */complete`: the form sent with 416 (range not satisfiable).
    Unsatisfied {
        /// Complete length of the representation.
        complete: u64,
    },
}

/// Why a `Content-Range` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Content-Range {value:?}: {reason}")]
pub struct ContentRangeError {
    /// The offending header value (truncated to 100 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a `Content-Range` header value strictly.
///
/// Accepts `bytes a-b/n`, `bytes a-b/*` and `bytes */n` (unit matched
/// case-insensitively, optional whitespace around the parts). Rejects
/// anything else, `a > b`, `b >= n`, signs, and numbers that overflow `u64`.
/// Never panics, whatever the input (it has a fuzz target).
///
/// ```
/// use cache_http::{ContentRange, parse_content_range};
/// assert_eq!(
///     parse_content_range("bytes 0-9/100"),
///     Ok(ContentRange::Bytes { first: 0, last: 9, complete: Some(100) })
/// );
/// assert_eq!(parse_content_range("bytes */0"), Ok(ContentRange::Unsatisfied { complete: 0 }));
/// assert!(parse_content_range("bytes 9-0/100").is_err());
/// ```
pub fn parse_content_range(value: &str) -> Result<ContentRange, ContentRangeError> {
    let err = |reason| ContentRangeError {
        value: value.chars().take(100).collect(),
        reason,
    };
    let v = value.trim();
    let rest = match v.get(..5) {
        Some(unit) if unit.eq_ignore_ascii_case("bytes") => &v[5..],
        _ => return Err(err("unit is not `bytes`")),
    };
    // The unit must be followed by whitespace (RFC: `bytes SP range`).
    if !rest.starts_with([' ', '\t']) {
        return Err(err("missing space after unit"));
    }
    let rest = rest.trim_start();
    let (range, complete) = rest.split_once('/').ok_or_else(|| err("missing `/`"))?;
    let (range, complete) = (range.trim(), complete.trim());
    let complete = if complete == "*" {
        None
    } else {
        Some(parse_num(complete).ok_or_else(|| err("bad complete length"))?)
    };
    if range == "*" {
        return match complete {
            Some(complete) => Ok(ContentRange::Unsatisfied { complete }),
            None => Err(err("`*/*` is meaningless")),
        };
    }
    let (first, last) = range.split_once('-').ok_or_else(|| err("missing `-`"))?;
    let first = parse_num(first.trim()).ok_or_else(|| err("bad first byte position"))?;
    let last = parse_num(last.trim()).ok_or_else(|| err("bad last byte position"))?;
    if first > last {
        return Err(err("first byte position after last"));
    }
    if let Some(n) = complete {
        if last >= n {
            return Err(err("last byte position beyond complete length"));
        }
    }
    Ok(ContentRange::Bytes {
        first,
        last,
        complete,
    })
}

/// Digits only: `u64::from_str` would also accept a leading `+`.
fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The validator of a response: a strong ETag verbatim (quotes included, so
/// it can be sent back in `If-Range`), else `lm:<Last-Modified>`, else empty.
/// Weak ETags (`W/"..."`) are ignored: they do not promise byte equality.
pub fn validator_of(headers: &HeaderMap) -> String {
    if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
        let etag = etag.trim();
        if etag.starts_with('"') && etag.len() >= 2 && etag.ends_with('"') {
            return etag.to_owned();
        }
    }
    if let Some(lm) = headers.get(LAST_MODIFIED).and_then(|v| v.to_str().ok()) {
        return format!("lm:{}", lm.trim());
    }
    String::new()
}

/// Whether `validator` is a strong ETag that may be sent in `If-Range`.
pub fn is_strong_etag(validator: &str) -> bool {
    validator.starts_with('"')
}

/// Parses the response's `Content-Range`, if present.
pub(crate) fn content_range_of(
    headers: &HeaderMap,
) -> Option<Result<ContentRange, ContentRangeError>> {
    let v = headers.get(CONTENT_RANGE)?;
    Some(match v.to_str() {
        Ok(s) => parse_content_range(s),
        Err(_) => Err(ContentRangeError {
            value: String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(100)
                .collect(),
            reason: "not visible ASCII",
        }),
    })
}

/// `Content-Length` as a number, if present and valid.
pub(crate) fn content_length_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()
        .and_then(|s| parse_num(s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse_content_range("bytes 0-0/1"),
            Ok(ContentRange::Bytes {
                first: 0,
                last: 0,
                complete: Some(1)
            })
        );
        assert_eq!(
            parse_content_range("Bytes  5-9/*"),
            Ok(ContentRange::Bytes {
                first: 5,
                last: 9,
                complete: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */0"),
            Ok(ContentRange::Unsatisfied { complete: 0 })
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/18446744073709551615"),
            Ok(ContentRange::Bytes {
                first: 0,
                last: u64::MAX - 1,
                complete: Some(u64::MAX)
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "bytes",
            "bytes=0-1/2",
            "bytes0-1/2",
            "items 0-1/2",
            "bytes 1-0/2",
            "bytes 0-2/2",
            "bytes +0-1/2",
            "bytes 0-1/-2",
            "bytes */*",
            "bytes 0-1",
            "bytes -1/2",
            "bytes 0-18446744073709551616/18446744073709551617",
            "bytes 0-1/2, 3-4/5",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_content_range(&s);
        }

        #[test]
        fn round_trips(first in 0u64..u64::MAX / 2, len in 1u64..u64::MAX / 4, extra in 0u64..1000) {
            let last = first + len - 1;
            let n = last + 1 + extra;
            proptest::prop_assert_eq!(
                parse_content_range(&format!("bytes {first}-{last}/{n}")),
                Ok(ContentRange::Bytes { first, last, complete: Some(n) })
            );
        }
    }

    #[test]
    fn validator_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(validator_of(&h), "");
        h.insert(
            LAST_MODIFIED,
            "Mon, 01 Jan 2024 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(validator_of(&h), "lm:Mon, 01 Jan 2024 00:00:00 GMT");
        h.insert(ETAG, "W/\"weak\"".parse().unwrap());
        assert_eq!(validator_of(&h), "lm:Mon, 01 Jan 2024 00:00:00 GMT");
        h.insert(ETAG, "\"strong\"".parse().unwrap());
        assert_eq!(validator_of(&h), "\"strong\"");
        assert!(is_strong_etag(&validator_of(&h)));
    }
}
