//! Fuzz target for the endpoint's `Range` header evaluation.
//!
//! Input layout: 8 bytes little-endian object length, 1 byte `max_ranges`
//! (mod 33, so 0 — ranges disabled — is covered too), then the header value
//! (lossy UTF-8, as the server would see after `HeaderValue::to_str`
//! succeeded or a lossy conversion). Checked:
//! - `parse_range_header` never panics;
//! - every returned range is non-empty and inside `0..len`;
//! - several ranges are sorted, non-overlapping and non-adjacent (merged);
//! - never more than `max_ranges` ranges;
//! - `content_range` / `MultipartPlan` accept whatever the parser returns,
//!   and the plan's length adds up;
//! - `if_range_matches` never panics on the same text.
#![no_main]

use cache_http::endpoint::multipart::MultipartPlan;
use cache_http::endpoint::range::{
    content_range, if_range_matches, parse_range_header, RangeOutcome,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let max_ranges = usize::from(data[8] % 33);
    let header = String::from_utf8_lossy(&data[9..]);

    let outcome = parse_range_header(&header, len, max_ranges);
    if let RangeOutcome::Ranges(ranges) = &outcome {
        assert!(!ranges.is_empty(), "Ranges(..) must not be empty");
        assert!(ranges.len() <= max_ranges, "more than max_ranges");
        for r in ranges {
            assert!(r.start < r.end, "empty range {r:?}");
            assert!(r.end <= len, "range {r:?} past len {len}");
            let _ = content_range(r, len);
        }
        for w in ranges.windows(2) {
            assert!(w[0].end < w[1].start, "not sorted/merged: {ranges:?}");
        }
        // Multipart framing must accept every parser output, unless the
        // body length would not fit in u64 (only possible for huge `len`).
        match MultipartPlan::with_boundary(
            "fuzz",
            ranges.clone(),
            len,
            Some("application/octet-stream"),
        ) {
            Ok(plan) => {
                let framing: u64 = (0..plan.len())
                    .map(|i| plan.part_header(i).len() as u64)
                    .sum::<u64>()
                    + plan.closing().len() as u64;
                let bodies: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                assert_eq!(plan.content_length(), framing + bodies);
            }
            Err(e) => assert_eq!(e, cache_http::endpoint::multipart::PlanError::TooLong),
        }
    }

    let _ = if_range_matches(&header, "\"etag\"", Some(std::time::UNIX_EPOCH));
});
