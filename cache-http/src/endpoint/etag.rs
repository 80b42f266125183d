//! ETags of served objects and `If-None-Match` evaluation (RFC 9110 §8.8.3,
//! §13.1.2).
//!
//! Objects are content-addressed, so once the BLAKE3 hash is known it *is* the
//! perfect strong validator: [`strong_etag`]. While the object is still being
//! filled from an upstream whose hash is unknown, the ETag is derived from the
//! upstream URL, the upstream validator and the length ([`derived_etag`]).
//! That is still a strong validator for us, because invariant 2 guarantees the
//! bytes of an object never mix two upstream versions (a validator change ends
//! the fill).

/// Strong ETag for an object whose BLAKE3 hash is known: `"<64 hex>"`, the
/// same hex `b3sum` prints.
///
/// ```
/// use cache_http::endpoint::etag::strong_etag;
/// let h = blake3::hash(b"");
/// assert_eq!(strong_etag(&h), format!("\"{}\"", h.to_hex()));
/// ```
pub fn strong_etag(hash: &blake3::Hash) -> String {
    format!("\"{}\"", hash.to_hex())
}

/// Strong ETag derived from the upstream identity while the hash is unknown:
/// `"v-<first 32 hex of BLAKE3(url, validator, len)>"`.
///
/// The fields are length-prefixed before hashing so that no two different
/// `(url, validator)` pairs can produce the same input (`"ab"+"c"` vs
/// `"a"+"bc"`). The `v-` prefix keeps these tags visibly distinct from
/// content hashes, which are 64 hex digits.
///
/// ```
/// use cache_http::endpoint::etag::derived_etag;
/// let t = derived_etag("https://m/x.qcow2", "\"up-1\"", 42);
/// assert!(t.starts_with("\"v-") && t.len() == 2 + 2 + 32);
/// ```
pub fn derived_etag(url: &str, validator: &str, len: u64) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"blockcache derived etag v1\0");
    h.update(&(url.len() as u64).to_le_bytes());
    h.update(url.as_bytes());
    h.update(&(validator.len() as u64).to_le_bytes());
    h.update(validator.as_bytes());
    h.update(&len.to_le_bytes());
    let hex = h.finalize().to_hex();
    format!("\"v-{}\"", &hex[..32])
}

/// A parsed entity-tag: `weak` flag and the opaque-tag *including* quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// `etagc = %x21 / %x23-7E / obs-text` (obs-text = %x80-FF).
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// Parses one entity-tag at the start of `s`; returns it and the rest.
fn parse_one(s: &str) -> Option<(EntityTag<'_>, &str)> {
    let (weak, body) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let bytes = body.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    // Note: etagc includes ',' so lists cannot be split on commas blindly.
    let close = bytes[1..].iter().position(|&b| !is_etagc(b))? + 1;
    if bytes[close] != b'"' {
        return None;
    }
    Some((
        EntityTag {
            weak,
            opaque: &body[..=close],
        },
        &body[close + 1..],
    ))
}

/// Parses a whole value that must be exactly one entity-tag (plus OWS).
fn parse_exact(s: &str) -> Option<EntityTag<'_>> {
    let (tag, rest) = parse_one(s.trim_matches([' ', '\t']))?;
    rest.is_empty().then_some(tag)
}

/// Strong comparison (RFC 9110 §8.8.3.2): both tags strong and their
/// opaque-tags identical. Malformed tags never match.
///
/// ```
/// use cache_http::endpoint::etag::strong_eq;
/// assert!(strong_eq("\"x\"", "\"x\""));
/// assert!(!strong_eq("W/\"x\"", "\"x\""));
/// ```
pub fn strong_eq(a: &str, b: &str) -> bool {
    match (parse_exact(a), parse_exact(b)) {
        (Some(a), Some(b)) => !a.weak && !b.weak && a.opaque == b.opaque,
        _ => false,
    }
}

/// Weak comparison (RFC 9110 §8.8.3.2): opaque-tags identical, either or
/// both may be weak. Malformed tags never match.
///
/// ```
/// use cache_http::endpoint::etag::weak_eq;
/// assert!(weak_eq("W/\"x\"", "\"x\""));
/// ```
pub fn weak_eq(a: &str, b: &str) -> bool {
    match (parse_exact(a), parse_exact(b)) {
        (Some(a), Some(b)) => a.opaque == b.opaque,
        _ => false,
    }
}

/// Evaluates `If-None-Match` against the current ETag (RFC 9110 §13.1.2):
/// `true` means "matches", i.e. answer 304 Not Modified to GET/HEAD (412 to
/// other methods).
///
/// * `*` matches any existing representation (we always have one when we
///   have an ETag).
/// * Otherwise the value is a comma-separated list of entity-tags compared
///   with **weak** comparison. Empty list elements are skipped.
/// * A malformed value matches nothing: the request then proceeds normally
///   (a full 200), which is always safe, whereas a wrong 304 would leave the
///   client with stale bytes.
///
/// ```
/// use cache_http::endpoint::etag::if_none_match;
/// assert!(if_none_match("*", "\"x\""));
/// assert!(if_none_match("\"a\", W/\"x\"", "\"x\""));
/// assert!(!if_none_match("\"a\"", "\"x\""));
/// ```
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let Some(current) = parse_exact(etag) else {
        return false;
    };
    let ows = [' ', '\t'];
    let v = header.trim_matches(ows);
    if v == "*" {
        return true;
    }
    let mut rest = v;
    let mut matched = false;
    loop {
        rest = rest.trim_start_matches(ows);
        if let Some(r) = rest.strip_prefix(',') {
            rest = r; // empty list element
            continue;
        }
        if rest.is_empty() {
            return matched;
        }
        let Some((tag, r)) = parse_one(rest) else {
            return false;
        };
        // Keep parsing after a match so a malformed tail still voids the
        // header as a whole (consistent, simple rule).
        matched |= tag.opaque == current.opaque;
        rest = r.trim_start_matches(ows);
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => return matched,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strong_from_hash() {
        let h = blake3::hash(b"abc");
        let t = strong_etag(&h);
        assert_eq!(t.len(), 66);
        assert!(strong_eq(&t, &t));
    }

    #[test]
    fn derived_is_stable_and_unambiguous() {
        let a = derived_etag("u", "\"v\"", 1);
        assert_eq!(a, derived_etag("u", "\"v\"", 1));
        assert_ne!(a, derived_etag("u", "\"v\"", 2));
        assert_ne!(a, derived_etag("u2", "\"v\"", 1));
        assert_ne!(derived_etag("ab", "c", 0), derived_etag("a", "bc", 0));
        assert!(strong_eq(&a, &a));
        assert!(a[3..35].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn comparisons() {
        // RFC 9110 §8.8.3.2 table.
        assert!(!strong_eq("W/\"1\"", "W/\"1\""));
        assert!(weak_eq("W/\"1\"", "W/\"1\""));
        assert!(!strong_eq("W/\"1\"", "W/\"2\""));
        assert!(!weak_eq("W/\"1\"", "W/\"2\""));
        assert!(!strong_eq("W/\"1\"", "\"1\""));
        assert!(weak_eq("W/\"1\"", "\"1\""));
        assert!(strong_eq("\"1\"", "\"1\""));
        assert!(weak_eq("\"1\"", "\"1\""));
        // Malformed.
        for bad in ["1", "\"1", "w/\"1\"", "\"1\"x", "\"a\"b\"", "W/ \"1\"", ""] {
            assert!(!strong_eq(bad, bad), "{bad}");
            assert!(!weak_eq(bad, bad), "{bad}");
        }
        // Empty opaque-tag is legal.
        assert!(strong_eq("\"\"", "\"\""));
    }

    #[test]
    fn if_none_match_lists() {
        let e = "\"x\"";
        assert!(if_none_match("*", e));
        assert!(if_none_match(" * ", e));
        assert!(if_none_match("\"x\"", e));
        assert!(if_none_match("W/\"x\"", e));
        assert!(if_none_match("\"x\"", "W/\"x\""));
        assert!(if_none_match("\"a\",\"x\"", e));
        assert!(if_none_match(" \"a\" ,\t W/\"x\" , ", e));
        assert!(if_none_match(",,\"x\",,", e));
        assert!(!if_none_match("\"a\", \"b\"", e));
        assert!(!if_none_match("", e));
        // Commas are legal inside an opaque-tag.
        assert!(if_none_match("\"a,b\"", "\"a,b\""));
        assert!(!if_none_match("\"a,b\"", "\"a\""));
        // Malformed → no match, even when a valid match precedes it.
        assert!(!if_none_match("\"x\" \"y\"", e));
        assert!(!if_none_match("\"x\", garbage", e));
        assert!(!if_none_match("x", "x"));
        assert!(!if_none_match("*", "not-an-etag"));
        assert!(!if_none_match("*, \"x\"", e));
    }

    proptest! {
        #[test]
        fn prop_no_panic(h in ".{0,40}", e in ".{0,20}") {
            let _ = if_none_match(&h, &e);
            let _ = strong_eq(&h, &e);
            let _ = weak_eq(&h, &e);
        }

        #[test]
        fn prop_list_membership(
            tags in proptest::collection::vec(("[!#-~]{0,8}", any::<bool>()), 1..6),
            pick in any::<prop::sample::Index>(),
        ) {
            let render = |(t, w): &(String, bool)| format!("{}\"{}\"", if *w { "W/" } else { "" }, t);
            let header = tags.iter().map(render).collect::<Vec<_>>().join(", ");
            let chosen = &tags[pick.index(tags.len())];
            let present = format!("\"{}\"", chosen.0);
            prop_assert!(if_none_match(&header, &present));
            let absent = format!("\"{}\"", tags.iter().map(|t| t.0.as_str()).collect::<String>() + "~absent");
            prop_assert!(!if_none_match(&header, &absent));
        }
    }
}
