//! `Range` and `If-Range` evaluation (RFC 9110 §14.1.1, §14.2, §13.1.5).
//!
//! The endpoint serves objects that may still be downloading, so clients
//! (qemu, aria2c, curl `-r`/`-C -`) lean heavily on ranges. This module turns a
//! raw header value plus the object length into a decision the server can act
//! on directly, see [`RangeOutcome`].
//!
//! Decisions taken here (all RFC-conformant, documented so the server and its
//! tests agree):
//!
//! * A header that is syntactically invalid or uses a unit other than `bytes`
//!   is **ignored** ([`RangeOutcome::Full`], answer 200) — RFC 9110 §14.2
//!   allows a server to ignore a Range it does not understand, and 200 is
//!   always a correct answer to a GET.
//! * Several ranges are **sorted and merged** (overlapping *or adjacent*)
//!   before being served. RFC 9110 §14.2 lets a server coalesce ranges; doing
//!   so defeats the "many small overlapping ranges" amplification attack and
//!   makes `multipart/byteranges` bodies minimal. A single range is served as
//!   asked.
//! * More than `max_ranges` ranges *after merging* yields
//!   [`RangeOutcome::TooMany`], which the server answers with **200 and the
//!   full body**, like nginx's `max_ranges`. A 416 would make some clients
//!   give up, whereas the full body is always usable by them.
//! * More than [`MAX_RANGE_SPECS`] specs in one header are not parsed past the
//!   limit: the answer is [`RangeOutcome::TooMany`] (200 full) too. Parse work
//!   is linear in the header length and memory is bounded by the limit.
//! * A zero-length object has no satisfiable range: any valid `bytes` header
//!   yields [`RangeOutcome::NotSatisfiable`] (416 with `bytes */0`). RFC 9110
//!   calls a non-zero suffix-range "satisfiable" for an empty representation,
//!   but a 206 cannot express an empty range in `Content-Range`, so 416 is the
//!   only coherent answer (nginx and Apache do the same).
//! * Numbers larger than `u64` saturate rather than fail: `bytes=99999999999999999999-`
//!   is a valid but unsatisfiable request, and a huge `last-pos` or
//!   suffix-length simply clips to the object.
//! * Optional whitespace (space, tab) is tolerated around `=`, `-` and `,`;
//!   empty list elements (`bytes=0-1,,2-3`) are skipped as RFC 9110 §5.6.1
//!   requires.
//!
//! The server must only apply `Range` to GET (RFC 9110 §14.2); that is its
//! concern, not this module's.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default cap on the number of ranges served in one response (after merging).
pub const DEFAULT_MAX_RANGES: usize = 16;

/// Hard cap on the number of range-specs parsed from one header. A header
/// with more specs is answered with the full body without further parsing.
pub const MAX_RANGE_SPECS: usize = 1000;

/// What the server should do with a request's `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable Range header (absent, unknown unit or invalid syntax):
    /// answer 200 with the whole representation.
    Full,
    /// Satisfiable byte ranges, each non-empty and inside `0..len`. When there
    /// are several they are sorted, non-overlapping and non-adjacent. One
    /// range → 206 with `Content-Range`; several → 206 `multipart/byteranges`.
    Ranges(Vec<Range<u64>>),
    /// More ranges than the server is willing to serve: answer 200 with the
    /// whole representation (see the module docs for why not 416).
    TooMany,
    /// A valid `bytes` range header none of whose ranges overlaps the object:
    /// answer 416 with `Content-Range: bytes */LEN` (see
    /// [`unsatisfied_content_range`]).
    NotSatisfiable,
}

/// One parsed range-spec, before it is resolved against the length.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-last` or `first-` (last = None).
    Int { first: u64, last: Option<u64> },
    /// `-suffix_len`.
    Suffix(u64),
}

/// Optional whitespace per RFC 9110 §5.6.3: space and horizontal tab only.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(is_ows)
}

/// `1*DIGIT`, saturating at `u64::MAX` (see module docs). `None` if empty or
/// not all ASCII digits (so no `+`, no sign, no inner whitespace).
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(v)
}

fn parse_spec(s: &str) -> Option<Spec> {
    let (first, last) = s.split_once('-')?;
    let (first, last) = (trim_ows(first), trim_ows(last));
    if first.is_empty() {
        return Some(Spec::Suffix(parse_digits(last)?));
    }
    let first = parse_digits(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(parse_digits(last)?)
    };
    // RFC 9110 §14.1.1: an int-range with last-pos < first-pos is invalid,
    // which makes the whole header invalid (→ ignored).
    if matches!(last, Some(l) if l < first) {
        return None;
    }
    Some(Spec::Int { first, last })
}

/// Resolves a spec against the length; `None` if unsatisfiable.
fn resolve(spec: Spec, len: u64) -> Option<Range<u64>> {
    match spec {
        Spec::Int { first, last } => {
            if first >= len {
                return None;
            }
            // last is inclusive; saturating_add keeps `last = u64::MAX` sane.
            let end = last.map_or(len, |l| l.saturating_add(1).min(len));
            Some(first..end)
        }
        Spec::Suffix(n) => {
            if n == 0 || len == 0 {
                return None;
            }
            Some(len.saturating_sub(n)..len)
        }
    }
}

/// Sorts and merges overlapping or adjacent ranges in place.
fn merge(ranges: &mut Vec<Range<u64>>) {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Evaluates a `Range` header value against an object of `len` bytes.
///
/// `max_ranges` caps the number of ranges served after merging (use
/// [`DEFAULT_MAX_RANGES`]); `0` disables ranges (any satisfiable request is
/// [`RangeOutcome::TooMany`]). See the module docs for every decision.
///
/// ```
/// use cache_http::endpoint::range::{parse_range_header, RangeOutcome};
///
/// assert_eq!(parse_range_header("bytes=0-99", 1000, 16), RangeOutcome::Ranges(vec![0..100]));
/// assert_eq!(parse_range_header("bytes=-100", 1000, 16), RangeOutcome::Ranges(vec![900..1000]));
/// assert_eq!(parse_range_header("bytes=900-", 1000, 16), RangeOutcome::Ranges(vec![900..1000]));
/// // Overlapping and adjacent ranges are merged and sorted.
/// assert_eq!(
///     parse_range_header("bytes=50-59, 0-9, 10-19, 55-70", 1000, 16),
///     RangeOutcome::Ranges(vec![0..20, 50..71]),
/// );
/// assert_eq!(parse_range_header("bytes=1000-", 1000, 16), RangeOutcome::NotSatisfiable);
/// assert_eq!(parse_range_header("pages=1-2", 1000, 16), RangeOutcome::Full);
/// assert_eq!(parse_range_header("bytes=5-1", 1000, 16), RangeOutcome::Full);
/// ```
pub fn parse_range_header(value: &str, len: u64, max_ranges: usize) -> RangeOutcome {
    let Some((unit, set)) = value.split_once('=') else {
        return RangeOutcome::Full;
    };
    // Range units are case-insensitive (RFC 9110 §14.1).
    if !trim_ows(unit).eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut specs = 0usize;
    for element in set.split(',') {
        let element = trim_ows(element);
        if element.is_empty() {
            continue; // empty list elements are legal and ignored
        }
        specs += 1;
        if specs > MAX_RANGE_SPECS {
            // Bail out before doing more work: no legitimate client sends this.
            return RangeOutcome::TooMany;
        }
        let Some(spec) = parse_spec(element) else {
            return RangeOutcome::Full;
        };
        // `ranges` holds at most MAX_RANGE_SPECS entries: memory is bounded.
        if let Some(r) = resolve(spec, len) {
            ranges.push(r);
        }
    }
    if specs == 0 {
        // `1#range-spec`: at least one is required, so "bytes=" is invalid.
        return RangeOutcome::Full;
    }
    if ranges.is_empty() {
        return RangeOutcome::NotSatisfiable;
    }
    if ranges.len() > 1 {
        merge(&mut ranges);
    }
    if ranges.len() > max_ranges {
        return RangeOutcome::TooMany;
    }
    RangeOutcome::Ranges(ranges)
}

/// The `Content-Range` value of a 206 part: `bytes FIRST-LAST/LEN`.
///
/// `range` must be non-empty (as every range from [`parse_range_header`] is).
///
/// ```
/// use cache_http::endpoint::range::content_range;
/// assert_eq!(content_range(&(0..100), 1000), "bytes 0-99/1000");
/// ```
pub fn content_range(range: &Range<u64>, len: u64) -> String {
    debug_assert!(range.start < range.end && range.end <= len);
    format!("bytes {}-{}/{}", range.start, range.end - 1, len)
}

/// The `Content-Range` value of a 416 answer: `bytes */LEN`.
///
/// ```
/// use cache_http::endpoint::range::unsatisfied_content_range;
/// assert_eq!(unsatisfied_content_range(0), "bytes */0");
/// ```
pub fn unsatisfied_content_range(len: u64) -> String {
    format!("bytes */{len}")
}

/// Evaluates an `If-Range` header (RFC 9110 §13.1.5): `true` means the Range
/// header must be honoured, `false` means it must be ignored (send 200 full).
///
/// * An entity-tag (starts with `"` or `W/`) matches only by **strong**
///   comparison: both tags strong and identical. A weak tag never matches.
///   `etag` is the current representation's ETag as sent (quotes included).
/// * Otherwise the value must be an HTTP-date equal to `last_modified`
///   truncated to whole seconds (HTTP-dates have one-second resolution).
///   An unparsable date, or no `last_modified`, does not match.
///
/// ```
/// use cache_http::endpoint::range::if_range_matches;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// assert!(if_range_matches("\"abc\"", "\"abc\"", None));
/// assert!(!if_range_matches("W/\"abc\"", "\"abc\"", None));
/// let lm = UNIX_EPOCH + Duration::from_secs(784111777);
/// assert!(if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", "\"x\"", Some(lm)));
/// ```
pub fn if_range_matches(if_range: &str, etag: &str, last_modified: Option<SystemTime>) -> bool {
    let v = trim_ows(if_range);
    if v.starts_with('"') || v.starts_with("W/") {
        return super::etag::strong_eq(v, etag);
    }
    let (Some(lm), Ok(date)) = (last_modified, httpdate::parse_http_date(v)) else {
        return false;
    };
    truncate_to_secs(lm) == Some(date)
}

fn truncate_to_secs(t: SystemTime) -> Option<SystemTime> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(d.as_secs()))
}

#[cfg(test)]
// `vec![a..b]` is exactly what these tests mean: one range in a list.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RangeOutcome::*;

    fn p(v: &str, len: u64) -> RangeOutcome {
        parse_range_header(v, len, DEFAULT_MAX_RANGES)
    }

    #[test]
    fn single_forms() {
        assert_eq!(p("bytes=0-0", 10), Ranges(vec![0..1]));
        assert_eq!(p("bytes=0-9", 10), Ranges(vec![0..10]));
        assert_eq!(p("bytes=0-", 10), Ranges(vec![0..10]));
        assert_eq!(p("bytes=9-", 10), Ranges(vec![9..10]));
        assert_eq!(p("bytes=3-5", 10), Ranges(vec![3..6]));
        assert_eq!(p("bytes=-1", 10), Ranges(vec![9..10]));
        assert_eq!(p("bytes=-10", 10), Ranges(vec![0..10]));
    }

    #[test]
    fn clipping() {
        assert_eq!(p("bytes=5-100", 10), Ranges(vec![5..10]));
        // Suffix larger than the object = the whole object.
        assert_eq!(p("bytes=-100", 10), Ranges(vec![0..10]));
        assert_eq!(p(&format!("bytes=0-{}", u64::MAX), 10), Ranges(vec![0..10]));
        assert_eq!(p(&format!("bytes=-{}", u64::MAX), 10), Ranges(vec![0..10]));
        assert_eq!(
            p(&format!("bytes=0-{}", u64::MAX), u64::MAX),
            Ranges(vec![0..u64::MAX])
        );
    }

    #[test]
    fn overflow_saturates() {
        let huge = "1".repeat(60);
        assert_eq!(p(&format!("bytes=0-{huge}"), 10), Ranges(vec![0..10]));
        assert_eq!(p(&format!("bytes=-{huge}"), 10), Ranges(vec![0..10]));
        assert_eq!(p(&format!("bytes={huge}-"), 10), NotSatisfiable);
        // first saturates to u64::MAX, last is smaller → invalid → ignored.
        assert_eq!(p(&format!("bytes={huge}-5"), 10), Full);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(p("bytes=10-", 10), NotSatisfiable);
        assert_eq!(p("bytes=10-20", 10), NotSatisfiable);
        assert_eq!(p("bytes=-0", 10), NotSatisfiable);
        assert_eq!(p("bytes=-0, 20-30, 10-", 10), NotSatisfiable);
        // One satisfiable range among unsatisfiable ones is served alone.
        assert_eq!(p("bytes=20-30, -0, 2-3", 10), Ranges(vec![2..4]));
    }

    #[test]
    fn zero_length_object() {
        for v in [
            "bytes=0-0",
            "bytes=0-",
            "bytes=-1",
            "bytes=-0",
            "bytes=0-5,-5",
        ] {
            assert_eq!(p(v, 0), NotSatisfiable, "{v}");
        }
        assert_eq!(p("bytes=x", 0), Full);
        assert_eq!(unsatisfied_content_range(0), "bytes */0");
    }

    #[test]
    fn malformed_is_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes= , ,",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=1 0-20",
            "bytes=5-1",
            "bytes=0-1,x",
            "bytes=0-1,5-1",
            "bytes=0x10-",
            "bytes=-1-",
            "bytes=１-2", // fullwidth digit
            "items=0-1",
            "bytes0-1",
            "=0-1",
        ] {
            assert_eq!(p(v, 100), Full, "{v:?}");
        }
    }

    #[test]
    fn whitespace_and_case() {
        assert_eq!(p(" BYTES = 1 - 2 ", 10), Ranges(vec![1..3]));
        assert_eq!(p("bytes=\t0-0 ,\t 4-4", 10), Ranges(vec![0..1, 4..5]));
        assert_eq!(p("Bytes=0-1,,,3-4,", 10), Ranges(vec![0..2, 3..5]));
        // Newlines are not OWS.
        assert_eq!(p("bytes=0-1\n", 10), Full);
    }

    #[test]
    fn merging() {
        assert_eq!(p("bytes=0-1,2-3", 10), Ranges(vec![0..4])); // adjacent
        assert_eq!(p("bytes=5-7,0-1", 10), Ranges(vec![0..2, 5..8])); // sorted
        assert_eq!(p("bytes=0-5,2-3", 10), Ranges(vec![0..6])); // contained
        assert_eq!(p("bytes=0-5,3-8", 10), Ranges(vec![0..9])); // overlapping
        assert_eq!(p("bytes=-2,0-1", 10), Ranges(vec![0..2, 8..10]));
        assert_eq!(p("bytes=-5,6-", 10), Ranges(vec![5..10]));
        assert_eq!(p("bytes=0-0,0-0,0-0", 10), Ranges(vec![0..1]));
    }

    #[test]
    fn max_ranges_after_merging() {
        let many: Vec<String> = (0..20).map(|i| format!("{}-{}", i * 10, i * 10)).collect();
        let v = format!("bytes={}", many.join(","));
        assert_eq!(p(&v, 1000), TooMany);
        assert_eq!(parse_range_header(&v, 1000, 20).clone(), {
            Ranges((0..20).map(|i| i * 10..i * 10 + 1).collect())
        });
        // 20 specs that merge into one are fine.
        let adj: Vec<String> = (0..20).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            p(&format!("bytes={}", adj.join(",")), 1000),
            Ranges(vec![0..20])
        );
        assert_eq!(parse_range_header("bytes=0-0", 10, 0), TooMany);
    }

    #[test]
    fn huge_headers_are_bounded() {
        // Exactly the spec limit is parsed (and merges into one range).
        let ok = format!("bytes={}", vec!["0-0"; MAX_RANGE_SPECS].join(","));
        assert_eq!(p(&ok, 10), Ranges(vec![0..1]));
        // One more is refused before the tail is even looked at: the garbage
        // after the limit would otherwise make the header invalid.
        let too_many = format!(
            "bytes={},0-0,garbage",
            vec!["0-0"; MAX_RANGE_SPECS].join(",")
        );
        assert_eq!(p(&too_many, 10), TooMany);
        // A 1 MB header completes quickly.
        let big = format!("bytes={}", "1-2,".repeat(250_000));
        let t = std::time::Instant::now();
        assert_eq!(p(&big, 10), TooMany);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // Many empty elements are linear and harmless.
        assert_eq!(
            p(&format!("bytes={}0-0", ",".repeat(100_000)), 10),
            Ranges(vec![0..1])
        );
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(0..1), 1), "bytes 0-0/1");
        assert_eq!(content_range(&(5..10), 10), "bytes 5-9/10");
        assert_eq!(unsatisfied_content_range(10), "bytes */10");
    }

    #[test]
    fn if_range_etags() {
        assert!(if_range_matches("\"a\"", "\"a\"", None));
        assert!(if_range_matches(" \"a\" ", "\"a\"", None));
        assert!(!if_range_matches("\"a\"", "\"b\"", None));
        assert!(!if_range_matches("W/\"a\"", "\"a\"", None));
        assert!(!if_range_matches("\"a\"", "W/\"a\"", None));
        assert!(!if_range_matches("W/\"a\"", "W/\"a\"", None));
        assert!(!if_range_matches("\"a\", \"b\"", "\"a\"", None)); // not a list
        assert!(!if_range_matches("\"a", "\"a\"", None));
        assert!(!if_range_matches("\"a\"", "", None));
    }

    #[test]
    fn if_range_dates() {
        let lm = UNIX_EPOCH + Duration::from_secs(784111777);
        let imf = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(if_range_matches(imf, "\"x\"", Some(lm)));
        // Sub-second precision of the stored time is not visible in HTTP-dates.
        assert!(if_range_matches(
            imf,
            "\"x\"",
            Some(lm + Duration::from_millis(700))
        ));
        // Obsolete formats are accepted by the date parser too.
        assert!(if_range_matches(
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "\"x\"",
            Some(lm)
        ));
        assert!(if_range_matches(
            "Sun Nov  6 08:49:37 1994",
            "\"x\"",
            Some(lm)
        ));
        assert!(!if_range_matches(
            imf,
            "\"x\"",
            Some(lm + Duration::from_secs(1))
        ));
        assert!(!if_range_matches(imf, "\"x\"", None));
        assert!(!if_range_matches("yesterday", "\"x\"", Some(lm)));
        assert!(!if_range_matches("", "\"x\"", Some(lm)));
    }

    /// The invariants the fuzz target checks, as a property test.
    fn check(outcome: &RangeOutcome, len: u64, max: usize) {
        if let Ranges(rs) = outcome {
            assert!(!rs.is_empty() && rs.len() <= max);
            for r in rs {
                assert!(r.start < r.end && r.end <= len, "{r:?} len {len}");
            }
            for w in rs.windows(2) {
                assert!(w[0].end < w[1].start, "not merged: {rs:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn prop_arbitrary_strings(v in ".{0,64}", len in any::<u64>(), max in 0usize..20) {
            check(&parse_range_header(&v, len, max), len, max);
        }

        #[test]
        fn prop_structured(
            specs in proptest::collection::vec(
                (proptest::option::of(0u64..200), proptest::option::of(0u64..200)), 1..30),
            len in 0u64..150,
            max in 1usize..20,
        ) {
            let parts: Vec<String> = specs.iter().map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => format!("{}-{}", a.min(b), a.max(b)),
                (Some(a), None) => format!("{a}-"),
                (None, Some(b)) => format!("-{b}"),
                (None, None) => "0-".to_string(),
            }).collect();
            let v = format!("bytes={}", parts.join(", "));
            let out = parse_range_header(&v, len, max);
            check(&out, len, max);
            // Compare against a bitmap model: the union of bytes selected.
            let mut want = vec![false; len as usize];
            for (a, b) in &specs {
                let (s, e) = match (a, b) {
                    (Some(a), Some(b)) => (*a.min(b), (*a.max(b) + 1).min(len)),
                    (Some(a), None) => (*a, len),
                    (None, Some(b)) => (len.saturating_sub(*b), if *b == 0 { 0 } else { len }),
                    (None, None) => (0, len),
                };
                for i in s..e.max(s) { if i < len { want[i as usize] = true; } }
            }
            let any = want.iter().any(|&x| x);
            match out {
                NotSatisfiable => prop_assert!(!any),
                TooMany => prop_assert!(any),
                Ranges(rs) => {
                    let mut got = vec![false; len as usize];
                    for r in rs { for i in r { got[i as usize] = true; } }
                    prop_assert_eq!(got, want);
                }
                Full => prop_assert!(false, "valid header ignored: {}", v),
            }
        }
    }
}
