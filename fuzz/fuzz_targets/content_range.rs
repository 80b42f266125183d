//! Fuzz target for the HTTP source's `Content-Range` parser: arbitrary text
//! never panics, and every accepted range lies inside its object.
#![no_main]

use cache_http::{parse_content_range, ContentRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cr) = parse_content_range(&text) {
        check(&cr);
    }
});

fn check(cr: &ContentRange) {
    if let ContentRange::Bytes {
        first,
        last,
        complete,
    } = *cr
    {
        assert!(first <= last, "{cr:?}: first after last");
        if let Some(n) = complete {
            assert!(last < n, "{cr:?}: accepted outside the object");
        }
    }
}
