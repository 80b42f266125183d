//! Endpoint range semantics with curl against partially filled objects.

mod support;

use std::collections::HashMap;
use std::path::Path;

use support::endpoint::{curl, data, run, Origin, TestEndpoint};

/// (status, lower-case headers of the last response, body) of one curl run.
struct Got {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn get(dir: &Path, url: &str, extra: &[&str]) -> Got {
    let h = dir.join("h");
    let b = dir.join("b");
    let _ = std::fs::remove_file(&b);
    let mut args = vec!["-D", h.to_str().unwrap(), "-o", b.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args).await;
    let head = std::fs::read_to_string(&h).unwrap();
    // The last response block (curl may print 100-continue etc.).
    let block = head.trim_end().rsplit("\r\n\r\n").next().unwrap();
    let mut lines = block.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got {
        status,
        headers,
        body: std::fs::read(&b).unwrap_or_default(),
    }
}

/// Parses a multipart/byteranges body into (Content-Range, bytes) parts,
/// checking the framing strictly.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary parameter");
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let mut first = true;
    loop {
        if !first {
            assert!(rest.starts_with(b"\r\n"), "CRLF before delimiter");
            rest = &rest[2..];
        }
        first = false;
        assert!(rest.starts_with(delim.as_bytes()), "delimiter");
        rest = &rest[delim.len()..];
        if rest == b"--\r\n" {
            return parts;
        }
        assert!(rest.starts_with(b"\r\n"));
        rest = &rest[2..];
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of part headers");
        let headers = std::str::from_utf8(&rest[..end]).unwrap();
        rest = &rest[end + 4..];
        let cr = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("part Content-Range")
            .to_owned();
        let span = cr
            .strip_prefix("bytes ")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let (a, b) = span.split_once('-').unwrap();
        let n = (b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap()) + 1;
        parts.push((cr, rest[..n].to_vec()));
        rest = &rest[n..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_ranges_of_a_partially_filled_object() {
    let origin = Origin::default();
    let len = 6 * (256 << 10) + 1234;
    let bytes = data(1, len);
    // Slow: 64 KiB per 20 ms per connection, so requests overlap the fill.
    origin.put("img.raw", bytes.clone(), 20);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = ep.mirror_url("img.raw");
    let l = len as u64;

    // Far end first, while nothing else is there yet.
    let g = get(tmp.path(), &url, &["-r", "-1000"]).await;
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &bytes[len - 1000..]);
    assert_eq!(
        g.headers["content-range"],
        format!("bytes {}-{}/{l}", l - 1000, l - 1)
    );
    assert_eq!(g.headers["accept-ranges"], "bytes");
    let etag = g.headers["etag"].clone();
    assert!(etag.starts_with("\"v-"), "{etag}");

    for (spec, r) in [
        ("0-0", 0..1),
        ("100-199", 100..200),
        ("262143-262145", 262_143..262_146),
        ("1000000-", 1_000_000..len),
        ("0-99999999", 0..len),
    ] {
        let g = get(tmp.path(), &url, &["-r", spec]).await;
        assert_eq!(g.status, 206, "{spec}");
        assert_eq!(g.body, &bytes[r.clone()], "{spec}");
        assert_eq!(g.headers["content-length"], (r.end - r.start).to_string());
    }

    // Multi-range: valid multipart/byteranges with exact Content-Length.
    let g = get(tmp.path(), &url, &["-r", "0-9,500000-500099,-5"]).await;
    assert_eq!(g.status, 206);
    assert_eq!(g.headers["content-length"], g.body.len().to_string());
    let parts = parse_multipart(&g.headers["content-type"], &g.body);
    let want = [0..10, 500_000..500_100, len - 5..len];
    assert_eq!(parts.len(), 3);
    for ((cr, body), r) in parts.iter().zip(want) {
        assert_eq!(cr, &format!("bytes {}-{}/{l}", r.start, r.end - 1));
        assert_eq!(body, &bytes[r]);
    }

    // Unsatisfiable.
    let g = get(tmp.path(), &url, &["-r", &format!("{l}-")]).await;
    assert_eq!(g.status, 416);
    assert_eq!(g.headers["content-range"], format!("bytes */{l}"));

    // Conditionals: If-None-Match → 304; If-Range mismatch → 200 full.
    let g = get(tmp.path(), &url, &["-H", &format!("If-None-Match: {etag}")]).await;
    assert_eq!(g.status, 304);
    let g = get(
        tmp.path(),
        &url,
        &["-r", "0-9", "-H", "If-Range: \"other\""],
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body, bytes);
    let g = get(
        tmp.path(),
        &url,
        &["-r", "0-9", "-H", &format!("If-Range: {etag}")],
    )
    .await;
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &bytes[..10]);

    // HEAD: full length, no body.
    let g = get(tmp.path(), &url, &["-I"]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.headers["content-length"], l.to_string());
    assert_eq!(g.headers["content-type"], "application/octet-stream");

    // Now complete: the content hash is served under /blobs/.
    let obj = ep
        .store
        .open_ref(&format!("{}img.raw", support::endpoint::BASE))
        .unwrap();
    let hash = tokio::time::timeout(support::STEP, obj.wait_complete())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hash, blake3::hash(&bytes));
    let blob = ep.url(&format!("/blobs/{}", hash.to_hex()));
    let g = get(tmp.path(), &blob, &["-r", "5-9"]).await;
    assert_eq!(g.status, 206);
    assert_eq!(g.body, &bytes[5..10]);
    assert_eq!(g.headers["etag"], format!("\"{}\"", hash.to_hex()));
    assert_eq!(
        g.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // The mirror object also answers to its content hash in conditionals.
    let g = get(
        tmp.path(),
        &url,
        &["-H", &format!("If-None-Match: \"{}\"", hash.to_hex())],
    )
    .await;
    assert_eq!(g.status, 304);
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_resume_of_a_cut_download() {
    let origin = Origin::default();
    let len = 3 * (256 << 10) + 77;
    let bytes = data(2, len);
    origin.put("big.bin", bytes.clone(), 5);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big.bin");
    // A download cut after 300000 bytes.
    std::fs::write(&out, &bytes[..300_000]).unwrap();
    curl(&[
        "-C",
        "-",
        "-o",
        out.to_str().unwrap(),
        &ep.mirror_url("big.bin"),
    ])
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fill_aborts_the_response() {
    let origin = Origin::default();
    let len = 8 * (256 << 10);
    let src = origin.put("flaky.bin", data(3, len), 2);
    src.fail_after_bytes(600_000);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let r = run(
        "curl",
        &[
            "-s",
            "--max-time",
            "100",
            "-o",
            out.to_str().unwrap(),
            &ep.mirror_url("flaky.bin"),
        ],
    )
    .await;
    // curl sees a transfer error (18: partial file, or 56: recv failure),
    // never a successful short body.
    assert!(!r.status.success(), "curl must fail on an aborted body");
    let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert!(got < len as u64);
    ep.stop().await;
}
