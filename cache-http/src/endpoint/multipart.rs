//! `multipart/byteranges` framing (RFC 9110 §14.6, RFC 2046 §5.1.1).
//!
//! The part bodies come from the cache as streams, possibly still being
//! downloaded, so the framing is planned up front: a [`MultipartPlan`] knows
//! every header and the closing delimiter before the first byte is sent, and
//! therefore the exact `Content-Length`. Clients that resume or verify by
//! length (curl, aria2c) and HTTP/1.1 keep-alive both prefer an exact length
//! to chunked encoding.
//!
//! The body is laid out as
//!
//! ```text
//! part_header(0) body(0) part_header(1) body(1) ... body(n-1) closing()
//! ```
//!
//! where `part_header(0)` is `--B CRLF headers CRLF CRLF`, every later
//! `part_header(i)` starts with the CRLF that RFC 2046 attaches to the
//! *delimiter* (it is not part of the previous body), and `closing()` is
//! `CRLF --B-- CRLF`.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use super::range::content_range;

/// Why a [`MultipartPlan`] could not be built. These are programming errors
/// of the caller (ranges come from [`super::range::parse_range_header`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// No ranges at all.
    NoRanges,
    /// A range is empty or reaches past the object's length.
    BadRange(Range<u64>),
    /// The boundary is not 1–70 `bchars` not ending in a space.
    BadBoundary,
    /// The part content type contains characters not allowed in a header.
    BadContentType,
    /// The whole body would be longer than `u64::MAX` bytes.
    TooLong,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoRanges => write!(f, "multipart plan needs at least one range"),
            PlanError::BadRange(r) => write!(f, "range {r:?} is empty or outside the object"),
            PlanError::BadBoundary => write!(f, "invalid multipart boundary"),
            PlanError::BadContentType => write!(f, "invalid part content type"),
            PlanError::TooLong => write!(f, "multipart body longer than u64::MAX"),
        }
    }
}

impl std::error::Error for PlanError {}

/// The framing of one `multipart/byteranges` response body.
///
/// ```
/// use cache_http::endpoint::multipart::MultipartPlan;
///
/// let plan = MultipartPlan::with_boundary("XYZ", vec![0..2, 5..6], 10,
///     Some("application/octet-stream")).unwrap();
/// assert_eq!(plan.content_type(), "multipart/byteranges; boundary=XYZ");
/// let data = b"0123456789";
/// let mut body = Vec::new();
/// for (i, r) in plan.ranges().iter().enumerate() {
///     body.extend_from_slice(&plan.part_header(i));
///     body.extend_from_slice(&data[r.start as usize..r.end as usize]);
/// }
/// body.extend_from_slice(&plan.closing());
/// assert_eq!(plan.content_length(), body.len() as u64);
/// assert_eq!(body, b"--XYZ\r\n\
///     Content-Type: application/octet-stream\r\n\
///     Content-Range: bytes 0-1/10\r\n\r\n01\
///     \r\n--XYZ\r\n\
///     Content-Type: application/octet-stream\r\n\
///     Content-Range: bytes 5-5/10\r\n\r\n5\
///     \r\n--XYZ--\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct MultipartPlan {
    boundary: String,
    ranges: Vec<Range<u64>>,
    headers: Vec<Bytes>,
    closing: Bytes,
    content_length: u64,
}

/// RFC 2046 `bchars` minus space (we never generate or accept spaces, which
/// would force quoting the boundary parameter).
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b)
}

/// Characters allowed in our part Content-Type value: visible ASCII, space
/// and tab (no CR/LF, so no header injection).
fn is_header_text(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b)
}

impl MultipartPlan {
    /// Plans a body for `ranges` of an object of `len` bytes, with a fresh
    /// random boundary.
    ///
    /// The boundary is `blockcache-` plus 32 random hex digits (128 bits):
    /// since the body is streamed we cannot scan it for the boundary first,
    /// and the chance that a 128-bit random string appears in an image is
    /// negligible (this is what Apache and nginx rely on too, with less
    /// entropy).
    ///
    /// `part_content_type` is repeated in every part (RFC 9110 §14.6: the
    /// Content-Type the representation would have had in a 200); `None`
    /// omits it.
    pub fn new(
        ranges: Vec<Range<u64>>,
        len: u64,
        part_content_type: Option<&str>,
    ) -> Result<Self, PlanError> {
        let boundary = format!("blockcache-{:032x}", rand::random::<u128>());
        Self::with_boundary(&boundary, ranges, len, part_content_type)
    }

    /// As [`MultipartPlan::new`] with a chosen boundary (for tests and
    /// reproducible output).
    pub fn with_boundary(
        boundary: &str,
        ranges: Vec<Range<u64>>,
        len: u64,
        part_content_type: Option<&str>,
    ) -> Result<Self, PlanError> {
        if boundary.is_empty() || boundary.len() > 70 || !boundary.bytes().all(is_bchar) {
            return Err(PlanError::BadBoundary);
        }
        if let Some(ct) = part_content_type {
            if ct.is_empty() || !ct.bytes().all(is_header_text) {
                return Err(PlanError::BadContentType);
            }
        }
        if ranges.is_empty() {
            return Err(PlanError::NoRanges);
        }
        let mut headers = Vec::with_capacity(ranges.len());
        // u128 so that pathological inputs (many ranges near u64::MAX) cannot
        // overflow while summing; the result is checked below.
        let mut total: u128 = 0;
        for (i, r) in ranges.iter().enumerate() {
            if r.start >= r.end || r.end > len {
                return Err(PlanError::BadRange(r.clone()));
            }
            let mut h = String::with_capacity(128);
            if i > 0 {
                h.push_str("\r\n");
            }
            h.push_str("--");
            h.push_str(boundary);
            h.push_str("\r\n");
            if let Some(ct) = part_content_type {
                h.push_str("Content-Type: ");
                h.push_str(ct);
                h.push_str("\r\n");
            }
            h.push_str("Content-Range: ");
            h.push_str(&content_range(r, len));
            h.push_str("\r\n\r\n");
            total += h.len() as u128 + u128::from(r.end - r.start);
            headers.push(Bytes::from(h));
        }
        let closing = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        total += closing.len() as u128;
        let content_length = u64::try_from(total).map_err(|_| PlanError::TooLong)?;
        Ok(MultipartPlan {
            boundary: boundary.to_owned(),
            ranges,
            headers,
            closing,
            content_length,
        })
    }

    /// Exact number of bytes of the whole body (headers, part bodies,
    /// delimiters), for the response's `Content-Length`.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// The response's `Content-Type`: `multipart/byteranges; boundary=B`.
    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    /// The boundary string (without the leading `--`).
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The ranges, in the order their parts appear.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Number of parts.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Always `false`: a plan has at least one part. (Provided for clippy's
    /// `len_without_is_empty` convention.)
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The framing bytes sent before the body of part `i` (delimiter and part
    /// headers). Cheap: a reference-counted clone.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn part_header(&self, i: usize) -> Bytes {
        self.headers[i].clone()
    }

    /// The close delimiter sent after the last part body.
    pub fn closing(&self) -> Bytes {
        self.closing.clone()
    }
}

#[cfg(test)]
// `vec![a..b]` is exactly what these tests mean: one range in a list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(plan: &MultipartPlan, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, r) in plan.ranges().iter().enumerate() {
            body.extend_from_slice(&plan.part_header(i));
            body.extend_from_slice(&data[r.start as usize..r.end as usize]);
        }
        body.extend_from_slice(&plan.closing());
        body
    }

    /// A parsed part: lower-cased headers and the body.
    type Part = (Vec<(String, String)>, Vec<u8>);

    /// A strict RFC 2046 multipart parser, independent of the framing code:
    /// splits on `CRLF--boundary`, requires the close delimiter, parses the
    /// part headers case-insensitively. Returns (headers, body) per part.
    fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
        let boundary = content_type
            .strip_prefix("multipart/byteranges; boundary=")
            .expect("content type");
        // Prepend CRLF so the first delimiter has the same shape as the
        // others (RFC 2046 allows the first to start the body directly).
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(body);
        let delim = format!("\r\n--{boundary}").into_bytes();
        let find = |hay: &[u8], from: usize| {
            hay[from..]
                .windows(delim.len())
                .position(|w| w == delim.as_slice())
                .map(|p| p + from)
        };
        let mut parts = Vec::new();
        let mut pos = find(&buf, 0).expect("first delimiter");
        assert_eq!(pos, 0, "no preamble expected");
        loop {
            pos += delim.len();
            if buf[pos..].starts_with(b"--") {
                assert_eq!(&buf[pos..], b"--\r\n", "close delimiter then nothing");
                return parts;
            }
            assert!(buf[pos..].starts_with(b"\r\n"), "delimiter line ends");
            pos += 2;
            let next = find(&buf, pos).expect("next delimiter");
            let part = &buf[pos..next];
            let split = part
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("header end");
            let headers = std::str::from_utf8(&part[..split])
                .unwrap()
                .split("\r\n")
                .map(|l| {
                    let (k, v) = l.split_once(':').expect("header line");
                    (k.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            parts.push((headers, part[split + 4..].to_vec()));
            pos = next;
        }
    }

    fn check_roundtrip(plan: &MultipartPlan, data: &[u8]) {
        let body = render(plan, data);
        assert_eq!(plan.content_length(), body.len() as u64);
        let parts = parse_multipart(&plan.content_type(), &body);
        assert_eq!(parts.len(), plan.len());
        for ((headers, pbody), r) in parts.iter().zip(plan.ranges()) {
            let cr = &headers
                .iter()
                .find(|(k, _)| k == "content-range")
                .unwrap()
                .1;
            // Parse Content-Range as a client would.
            let spec = cr.strip_prefix("bytes ").unwrap();
            let (se, total) = spec.split_once('/').unwrap();
            let (s, e) = se.split_once('-').unwrap();
            let (s, e, total): (u64, u64, u64) = (
                s.parse().unwrap(),
                e.parse().unwrap(),
                total.parse().unwrap(),
            );
            assert_eq!(total, data.len() as u64);
            assert_eq!((s, e + 1), (r.start, r.end));
            assert_eq!(pbody.as_slice(), &data[s as usize..=e as usize]);
        }
    }

    #[test]
    fn roundtrip_basic() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let plan = MultipartPlan::new(
            vec![0..1, 10..20, 999..1000],
            1000,
            Some("application/octet-stream"),
        )
        .unwrap();
        assert!(plan.boundary().starts_with("blockcache-"));
        assert_eq!(plan.boundary().len(), 11 + 32);
        check_roundtrip(&plan, &data);
        let plan = MultipartPlan::new(vec![0..1000], 1000, None).unwrap();
        check_roundtrip(&plan, &data);
    }

    #[test]
    fn body_containing_crlf_and_dashes() {
        // Part bodies that look like framing must not confuse the parser as
        // long as the boundary itself is absent.
        let data = b"\r\n--\r\n\r\n--X--\r\n".to_vec();
        let plan = MultipartPlan::with_boundary(
            "B0",
            vec![0..4, 6..10, 12..data.len() as u64],
            data.len() as u64,
            Some("text/plain"),
        )
        .unwrap();
        check_roundtrip(&plan, &data);
    }

    #[test]
    fn random_boundaries_differ() {
        let a = MultipartPlan::new(vec![0..1], 1, None).unwrap();
        let b = MultipartPlan::new(vec![0..1], 1, None).unwrap();
        assert_ne!(a.boundary(), b.boundary());
    }

    #[test]
    fn errors() {
        use PlanError::*;
        let mk = |b: &str, r: Vec<Range<u64>>, ct: Option<&str>| {
            MultipartPlan::with_boundary(b, r, 10, ct).map(|_| ())
        };
        assert_eq!(mk("b", vec![], None), Err(NoRanges));
        assert_eq!(mk("b", vec![3..3], None), Err(BadRange(3..3)));
        assert_eq!(mk("b", vec![5..11], None), Err(BadRange(5..11)));
        assert_eq!(mk("", vec![0..1], None), Err(BadBoundary));
        assert_eq!(mk("a b", vec![0..1], None), Err(BadBoundary));
        assert_eq!(mk("a\"b", vec![0..1], None), Err(BadBoundary));
        assert_eq!(mk(&"a".repeat(71), vec![0..1], None), Err(BadBoundary));
        assert_eq!(mk(&"a".repeat(70), vec![0..1], None), Ok(()));
        assert_eq!(
            mk("b", vec![0..1], Some("a\r\nX-Evil: 1")),
            Err(BadContentType)
        );
        assert_eq!(mk("b", vec![0..1], Some("")), Err(BadContentType));
        assert!(!NoRanges.to_string().is_empty());
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let len = u64::MAX;
        let plan =
            MultipartPlan::with_boundary("b", vec![0..len / 4, len / 2..len / 2 + 10], len, None)
                .unwrap();
        assert!(plan.content_length() > len / 4 + 10);
        // Whole-u64 parts cannot fit in one u64 Content-Length: refused.
        assert!(
            MultipartPlan::with_boundary("b", vec![0..len - 10, len - 5..len], len, None).is_err()
        );
    }

    #[test]
    fn curl_compatible_shape() {
        // curl (lib/http.c / multipart handling in tools) and browsers expect
        // the type header exactly like this and each part's Content-Range in
        // `bytes a-b/len` form.
        let plan = MultipartPlan::with_boundary(
            "3d6b6a416f9b5",
            vec![0..50, 100..150],
            1270,
            Some("text/html"),
        )
        .unwrap();
        assert_eq!(
            plan.content_type(),
            "multipart/byteranges; boundary=3d6b6a416f9b5"
        );
        let h1 = plan.part_header(1);
        assert_eq!(
            &h1[..],
            b"\r\n--3d6b6a416f9b5\r\nContent-Type: text/html\r\nContent-Range: bytes 100-149/1270\r\n\r\n"
        );
        assert_eq!(&plan.closing()[..], b"\r\n--3d6b6a416f9b5--\r\n");
    }

    proptest! {
        #[test]
        fn prop_roundtrip(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 2..12),
            ct in proptest::option::of("[a-z]{1,8}/[a-z+.-]{1,10}"),
        ) {
            // Turn random cut points into sorted, disjoint, non-empty ranges.
            let len = data.len() as u64;
            let mut pts: Vec<u64> = cuts.iter().map(|c| c.index(data.len() + 1) as u64).collect();
            pts.sort_unstable();
            pts.dedup();
            let ranges: Vec<Range<u64>> =
                pts.chunks_exact(2).filter(|w| w[0] < w[1]).map(|w| w[0]..w[1]).collect();
            prop_assume!(!ranges.is_empty());
            let plan = MultipartPlan::new(ranges, len, ct.as_deref()).unwrap();
            check_roundtrip(&plan, &data);
        }
    }
}
