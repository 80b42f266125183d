//! Joining a client's request path onto a mirror's base URL, safely.
//!
//! The endpoint exposes mirrors as `/<mirror-name>/<path>` and fetches
//! `BASE_URL/<path>` upstream. A path that climbs out of the base
//! (`../`, `%2e%2e/`, `..%2f`, `..\`, double-encoded `%252e%252e`) would turn
//! the cache into an open proxy for whatever else lives on the mirror host,
//! so every request path is validated segment by segment, on its
//! *percent-decoded* form, and the result is checked to lie strictly under the
//! base.
//!
//! Decisions:
//!
//! * **Queries and fragments are rejected** (`?` or `#` in the path).
//!   The server passes only the request URI's path here and **drops the
//!   request's query**; it is never forwarded upstream. The cache key is the
//!   path, so forwarding a client-chosen query would either alias different
//!   upstream content under one key or let clients bust the cache. Mirrors
//!   that need a query (signed URLs) carry it in configuration, not in
//!   requests — and a base URL with a query is refused here for the same
//!   reason (it would be ambiguous which query wins).
//! * **`%25` (an encoded `%`) is rejected**: it is the signature of double
//!   encoding, and a legitimate image name essentially never contains `%`.
//! * Encoded `/` (`%2F`) and `\` (`%5C`), NUL and other control characters,
//!   raw or encoded, are rejected: upstream servers disagree on whether they
//!   separate segments.
//! * Empty segments (`a//b`, trailing `/`) are rejected: some servers collapse
//!   them, others do not, and an object path never needs one.
//! * The first segment must not look like a URL scheme (`http:...`) and the
//!   path must not start with `//`, so nothing can be read as an absolute or
//!   scheme-relative URL by any later `join`.
//! * Valid segments keep their percent-encoding (hex normalised to upper
//!   case) because RFC 3986 does not make `%2B` and `+` equivalent; raw bytes
//!   that are not allowed in a URL path (space, `"`, `{`, non-ASCII, …) are
//!   percent-encoded, which is semantics-preserving.

use std::fmt;

use url::Url;

/// Longest accepted request path, in bytes (bounds the work per request).
pub const MAX_PATH_LEN: usize = 4096;

/// Why a request path (or a base URL) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The base URL is not an `http`/`https` URL with a host and without a
    /// query or fragment.
    BadBase,
    /// The mirror name is empty or contains characters outside `[A-Za-z0-9._-]`
    /// (or starts with `.`).
    BadMirrorName,
    /// The path is empty.
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`].
    TooLong,
    /// An empty segment (`//`, trailing `/`) or a leading `//`.
    EmptySegment,
    /// A `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A forbidden byte, raw or percent-decoded (`/` and `\` inside a
    /// segment, `%` after decoding, NUL and control characters).
    Forbidden(u8),
    /// A segment whose percent-decoded bytes are not UTF-8 (this also
    /// refuses overlong encodings such as `%C0%AE` for `.`, which some
    /// servers decode leniently).
    InvalidUtf8,
    /// A query (`?`) or fragment (`#`) in the path.
    Query,
    /// The path looks like an absolute URL (`scheme:`).
    SchemeLike,
    /// The joined URL escaped the base after URL normalisation (defence in
    /// depth; the checks above should make this unreachable).
    Escaped,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::BadBase => write!(
                f,
                "mirror base URL must be http(s) with a host and no query"
            ),
            PathError::BadMirrorName => write!(f, "invalid mirror name"),
            PathError::Empty => write!(f, "empty path"),
            PathError::TooLong => write!(f, "path longer than {MAX_PATH_LEN} bytes"),
            PathError::EmptySegment => write!(f, "empty path segment"),
            PathError::DotSegment => write!(f, "'.' or '..' path segment"),
            PathError::BadEscape => write!(f, "malformed percent-escape"),
            PathError::Forbidden(b) => write!(f, "forbidden byte 0x{b:02x} in path"),
            PathError::InvalidUtf8 => write!(f, "path segment is not UTF-8 after decoding"),
            PathError::Query => write!(f, "query or fragment not allowed in mirror path"),
            PathError::SchemeLike => write!(f, "path looks like an absolute URL"),
            PathError::Escaped => write!(f, "path escapes the mirror base"),
        }
    }
}

impl std::error::Error for PathError {}

/// Splits `NAME/rest` (an optional leading `/` is allowed) into the mirror
/// name and the rest of the path, validating the name: 1–64 bytes of
/// `[A-Za-z0-9._-]`, not starting with `.`.
///
/// ```
/// use cache_http::endpoint::mirror_path::split_mirror_name;
/// assert_eq!(split_mirror_name("/debian/pool/x.iso").unwrap(), ("debian", "pool/x.iso"));
/// assert!(split_mirror_name("//pool/x.iso").is_err());
/// ```
pub fn split_mirror_name(path: &str) -> Result<(&str, &str), PathError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (name, rest) = path.split_once('/').unwrap_or((path, ""));
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(PathError::BadMirrorName);
    }
    Ok((name, rest))
}

/// Raw bytes kept as they are: RFC 3986 unreserved, sub-delims, `:` and `@`.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Forbidden after decoding (and raw): separators, `%` (double encoding),
/// controls.
fn forbidden_decoded(b: u8) -> bool {
    b == b'/' || b == b'\\' || b == b'%' || b < 0x20 || b == 0x7f
}

/// Validates one raw segment and appends its canonical form to `out`.
/// `scratch` is a reusable buffer for the decoded bytes.
fn push_segment(
    seg: &str,
    first: bool,
    out: &mut String,
    scratch: &mut Vec<u8>,
) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bytes = seg.as_bytes();
    scratch.clear();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let decoded = if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(PathError::BadEscape);
            };
            let d = (h << 4) | l;
            if forbidden_decoded(d) {
                return Err(PathError::Forbidden(d));
            }
            if first && d == b':' {
                return Err(PathError::SchemeLike);
            }
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            i += 3;
            d
        } else {
            match b {
                b'?' | b'#' => return Err(PathError::Query),
                _ if forbidden_decoded(b) => return Err(PathError::Forbidden(b)),
                _ if is_path_char(b) => out.push(char::from(b)),
                // Not allowed raw in a URL path: encode (no meaning changes).
                _ => {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
                }
            }
            i += 1;
            b
        };
        scratch.push(decoded);
    }
    let decoded = std::str::from_utf8(scratch).map_err(|_| PathError::InvalidUtf8)?;
    if decoded == "." || decoded == ".." {
        return Err(PathError::DotSegment);
    }
    if first {
        // `scheme ":"` where scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        if let Some((scheme, _)) = seg.split_once(':') {
            let sb = scheme.as_bytes();
            if !sb.is_empty()
                && sb[0].is_ascii_alphabetic()
                && sb
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
            {
                return Err(PathError::SchemeLike);
            }
        }
    }
    Ok(())
}

/// Joins the request path `rest` (relative to the mirror, one optional
/// leading `/`) onto the mirror's `base` URL.
///
/// The base path is treated as a directory whether or not it ends in `/`
/// (`http://m/debian` and `http://m/debian/` are the same mirror). Any `Ok`
/// result is `http(s)://host[:port]/base_path/<segments>` with no query and
/// no fragment. See the module docs for every rule.
///
/// ```
/// use cache_http::endpoint::mirror_path::{join_mirror_path, PathError};
/// use url::Url;
///
/// let base = Url::parse("https://mirror.example/debian").unwrap();
/// assert_eq!(
///     join_mirror_path(&base, "/pool/main/x%20y.iso").unwrap().as_str(),
///     "https://mirror.example/debian/pool/main/x%20y.iso",
/// );
/// assert_eq!(join_mirror_path(&base, "pool/../../etc/passwd"), Err(PathError::DotSegment));
/// assert_eq!(join_mirror_path(&base, "pool/%2e%2e/x"), Err(PathError::DotSegment));
/// assert_eq!(join_mirror_path(&base, "pool/..%2fx"), Err(PathError::Forbidden(b'/')));
/// assert_eq!(join_mirror_path(&base, "//evil.example/x"), Err(PathError::EmptySegment));
/// ```
pub fn join_mirror_path(base: &Url, rest: &str) -> Result<Url, PathError> {
    let base_prefix = base_prefix(base)?;
    if rest.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let rel = rest.strip_prefix('/').unwrap_or(rest);
    if rel.is_empty() {
        return Err(PathError::Empty);
    }
    let mut path = String::with_capacity(base_prefix.len() + rel.len() + 16);
    path.push_str(base.path().trim_end_matches('/'));
    let mut scratch = Vec::new();
    for (i, seg) in rel.split('/').enumerate() {
        path.push('/');
        push_segment(seg, i == 0, &mut path, &mut scratch)?;
    }
    let mut url = base.clone();
    url.set_path(&path);
    // Defence in depth: the URL parser must not have rewritten anything (it
    // normalises dot segments, backslashes, …) and the result must still be
    // strictly under the base.
    if url.path() != path
        || !url.as_str().starts_with(&base_prefix)
        || url.as_str().len() <= base_prefix.len()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(PathError::Escaped);
    }
    Ok(url)
}

/// `scheme://authority/base_path/` of a valid base, as serialised by `url`.
fn base_prefix(base: &Url) -> Result<String, PathError> {
    if !matches!(base.scheme(), "http" | "https")
        || base.cannot_be_a_base()
        || base.host().is_none()
        || base.query().is_some()
        || base.fragment().is_some()
    {
        return Err(PathError::BadBase);
    }
    let mut dir = base.clone();
    let p = format!("{}/", base.path().trim_end_matches('/'));
    dir.set_path(&p);
    Ok(dir.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use PathError::*;

    fn base() -> Url {
        Url::parse("http://h.example:8080/mirrors/deb/").unwrap()
    }

    fn j(rest: &str) -> Result<String, PathError> {
        join_mirror_path(&base(), rest).map(|u| u.to_string())
    }

    #[test]
    fn good_paths() {
        let p = "http://h.example:8080/mirrors/deb/";
        assert_eq!(j("a").unwrap(), format!("{p}a"));
        assert_eq!(j("/a/b/c.qcow2").unwrap(), format!("{p}a/b/c.qcow2"));
        assert_eq!(j("a/...").unwrap(), format!("{p}a/..."));
        assert_eq!(j("a/.x/..y/x..").unwrap(), format!("{p}a/.x/..y/x.."));
        assert_eq!(j("a%2bb+c").unwrap(), format!("{p}a%2Bb+c"));
        assert_eq!(j("x y").unwrap(), format!("{p}x%20y"));
        assert_eq!(j("é").unwrap(), format!("{p}%C3%A9"));
        assert_eq!(j("a/b:c@d").unwrap(), format!("{p}a/b:c@d"));
        assert_eq!(j("a%3fb%23c").unwrap(), format!("{p}a%3Fb%23c"));
        assert_eq!(j("a/%2e%2e%2e").unwrap(), format!("{p}a/%2E%2E%2E"));
    }

    #[test]
    fn base_forms() {
        for b in ["http://m/debian", "http://m/debian/", "http://m/debian//"] {
            let u = join_mirror_path(&Url::parse(b).unwrap(), "x").unwrap();
            assert_eq!(u.as_str(), "http://m/debian/x", "{b}");
        }
        let root = Url::parse("https://m").unwrap();
        assert_eq!(
            join_mirror_path(&root, "x").unwrap().as_str(),
            "https://m/x"
        );
        for bad in [
            "ftp://m/x",
            "http://m/x?q=1",
            "http://m/x#f",
            "mailto:a@b",
            "file:///tmp",
        ] {
            assert_eq!(
                join_mirror_path(&Url::parse(bad).unwrap(), "x"),
                Err(BadBase),
                "{bad}"
            );
        }
    }

    #[test]
    fn traversal_rejected() {
        for (p, e) in [
            ("", Empty),
            ("/", Empty),
            (".", DotSegment),
            ("..", DotSegment),
            ("a/./b", DotSegment),
            ("a/../b", DotSegment),
            ("../x", DotSegment),
            ("%2e", DotSegment),
            ("%2E%2e/x", DotSegment),
            (".%2e/x", DotSegment),
            ("a/%2e%2e", DotSegment),
            ("..%2fetc", Forbidden(b'/')),
            ("a%2fb", Forbidden(b'/')),
            ("a%2Fb", Forbidden(b'/')),
            ("a%5cb", Forbidden(b'\\')),
            ("..\\x", Forbidden(b'\\')),
            ("a\\b", Forbidden(b'\\')),
            ("%252e%252e/x", Forbidden(b'%')),
            ("a%25", Forbidden(b'%')),
            ("a%00", Forbidden(0)),
            ("a\0", Forbidden(0)),
            ("a\r\nb", Forbidden(b'\r')),
            ("a%0a", Forbidden(b'\n')),
            ("a%7f", Forbidden(0x7f)),
            ("%c0%ae%c0%ae/x", InvalidUtf8),
            ("a%ff", InvalidUtf8),
            ("a%", BadEscape),
            ("a%2", BadEscape),
            ("a%zz", BadEscape),
            ("a%%41", BadEscape),
            ("//evil.example/x", EmptySegment),
            ("///x", EmptySegment),
            ("a//b", EmptySegment),
            ("a/", EmptySegment),
            ("http://evil/x", SchemeLike),
            ("https:x", SchemeLike),
            ("http%3a//evil/x", SchemeLike),
            ("a?x=1", Query),
            ("a#frag", Query),
            ("?x", Query),
        ] {
            assert_eq!(j(p), Err(e), "{p:?}");
        }
        assert_eq!(j(&"a".repeat(MAX_PATH_LEN + 1)), Err(TooLong));
        // A colon later on, or not after a scheme-like prefix, is fine.
        assert!(j("a/http:x").is_ok());
        assert!(j("1a:x").is_ok());
    }

    #[test]
    fn mirror_names() {
        assert_eq!(split_mirror_name("deb/x").unwrap(), ("deb", "x"));
        assert_eq!(split_mirror_name("/deb").unwrap(), ("deb", ""));
        assert_eq!(
            split_mirror_name("a.b_c-1/x/y").unwrap(),
            ("a.b_c-1", "x/y")
        );
        for bad in [
            "",
            "/",
            "//x",
            "/.hidden/x",
            "../x",
            "a b/x",
            "a%2fb/x",
            &"n".repeat(65),
        ] {
            assert_eq!(split_mirror_name(bad), Err(BadMirrorName), "{bad:?}");
        }
        assert!(!BadMirrorName.to_string().is_empty());
    }

    const TOKENS: &[&str] = &[
        "a",
        "b",
        "img.qcow2",
        ".",
        "..",
        "/",
        "//",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%25",
        "%00",
        "%41",
        "%",
        "%zz",
        "\\",
        "?",
        "#",
        ":",
        "http:",
        "@",
        "+",
        " ",
        "é",
        "\0",
        "%c0%ae",
        "~",
        "%252e",
        "\t",
        "%3a",
    ];

    proptest! {
        #[test]
        fn prop_ok_is_strictly_under_base(
            toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..12),
            raw in ".{0,16}",
            which in 0usize..3,
        ) {
            let bases = ["http://h.example:8080/mirrors/deb/", "https://m.example/a/b", "http://127.0.0.1:1"];
            let base = Url::parse(bases[which]).unwrap();
            let prefix = base_prefix(&base).unwrap();
            for rest in [toks.concat(), raw] {
                if let Ok(u) = join_mirror_path(&base, &rest) {
                    let s = u.as_str();
                    prop_assert!(s.starts_with(&prefix) && s.len() > prefix.len(), "{} -> {}", rest, s);
                    prop_assert_eq!(u.scheme(), base.scheme());
                    prop_assert_eq!(u.host_str(), base.host_str());
                    prop_assert_eq!(u.port_or_known_default(), base.port_or_known_default());
                    prop_assert!(u.query().is_none() && u.fragment().is_none());
                    // Re-parsing is stable (no later normalisation surprises).
                    let reparsed = Url::parse(s).unwrap();
                    prop_assert_eq!(reparsed.as_str(), s);
                    // No decoded segment below the base is empty, `.`, `..`,
                    // or contains a separator.
                    for seg in s[prefix.len()..].split('/') {
                        let d = decode(seg);
                        prop_assert!(!d.is_empty() && d != b"." && d != b"..", "{}", s);
                        prop_assert!(!d.contains(&b'/') && !d.contains(&b'\\'), "{}", s);
                    }
                }
            }
        }
    }

    fn decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = hex_val(b[i + 1]).unwrap();
                let l = hex_val(b[i + 2]).unwrap();
                out.push((h << 4) | l);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }
}
