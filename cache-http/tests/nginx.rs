//! HttpSource against a real nginx origin.

mod support;

use std::io::Write;

use cache_core::Source;
use cache_http::HttpSource;
use futures::StreamExt;
use support::nginx::{Nginx, NginxOptions};
use support::{collect, fast_config, pattern, probe, read};

#[tokio::test]
async fn probe_small_objects() {
    let ng = Nginx::start();
    for (name, len) in [("empty", 0usize), ("one", 1), ("odd", 1_048_576 + 12_345)] {
        ng.put(name, &pattern(len as u64, len));
        let src = HttpSource::new(&ng.url(name), fast_config()).unwrap();
        let info = probe(&src).await.unwrap();
        assert_eq!(info.len, len as u64, "{name}");
        assert!(
            info.validator.starts_with('"'),
            "{name}: nginx sends a strong ETag: {info:?}"
        );
        if len > 0 {
            assert!(info.ranges, "{name}");
        }
        assert_eq!(src.identity(), ng.url(name));
    }
}

#[tokio::test]
async fn read_assorted_ranges() {
    let ng = Nginx::start();
    let len = 3 * 1_048_576 + 7;
    let data = pattern(7, len);
    ng.put("obj", &data);
    let src = HttpSource::new(&ng.url("obj"), fast_config()).unwrap();
    let info = probe(&src).await.unwrap();
    let l = len as u64;
    for r in [
        0..1,
        0..l,
        l - 1..l,
        1..2,
        4095..4097,
        1_048_576..2 * 1_048_576 + 1,
        5..5,
        l..l,
    ] {
        let (got_range, got) = read(&src, r.clone(), &info).await.unwrap();
        assert_eq!(got_range, r);
        assert_eq!(got, &data[r.start as usize..r.end as usize], "range {r:?}");
    }
    // An empty object reads as empty.
    ng.put("empty", b"");
    let src = HttpSource::new(&ng.url("empty"), fast_config()).unwrap();
    let info = probe(&src).await.unwrap();
    let (_, got) = read(&src, 0..0, &info).await.unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn changed_file_is_detected() {
    let ng = Nginx::start();
    ng.put("obj", &pattern(1, 100_000));
    let src = HttpSource::new(&ng.url("obj"), fast_config()).unwrap();
    let info = probe(&src).await.unwrap();
    // New content and a different mtime: nginx's ETag changes, so the
    // If-Range request gets a 200 with the new ETag.
    let p = ng.root().join("obj");
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    let err = read(&src, 10..20, &info).await.unwrap_err();
    assert_eq!(err.kind, cache_core::SourceErrorKind::Changed, "{err}");
    assert!(err.message.contains(&ng.url("obj")), "{err}");
}

#[tokio::test]
async fn limit_rate_still_reads_correct_bytes() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("8m".into()),
    });
    let data = pattern(3, 2 * 1_048_576);
    ng.put("obj", &data);
    let cfg = cache_http::HttpSourceConfig {
        limit_rate: Some(16 * 1_048_576),
        ..fast_config()
    };
    let src = HttpSource::new(&ng.url("obj"), cfg).unwrap();
    let info = probe(&src).await.unwrap();
    let (_, got) = read(&src, 0..info.len, &info).await.unwrap();
    assert_eq!(got, data);
}

/// Writes `len` pseudo-random bytes to `path`, returning their BLAKE3.
fn write_big(path: &std::path::Path, len: usize) -> blake3::Hash {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = blake3::Hasher::new();
    let block = 1 << 20;
    for i in 0..len.div_ceil(block) {
        let n = block.min(len - i * block);
        let b = pattern(1000 + i as u64, n);
        h.update(&b);
        f.write_all(&b).unwrap();
    }
    f.flush().unwrap();
    h.finalize()
}

/// 256 MiB in 16 MiB ranges, 4 in flight; bytes assembled in order and
/// hashed incrementally. Once the filler lands, swap `fetch_all` for a cache
/// fill and hash the cached object instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_parallel_ranges() {
    const LEN: u64 = 256 << 20;
    const PART: u64 = 16 << 20;
    let ng = Nginx::start();
    let want = write_big(&ng.root().join("big.img"), LEN as usize);
    let src = HttpSource::new(&ng.url("big.img"), fast_config()).unwrap();
    let info = probe(&src).await.unwrap();
    assert_eq!(info.len, LEN);
    assert!(info.ranges);
    let log_before = ng.wait_log_lines(1).len();

    let got = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        fetch_all(&src, &info, PART, 4),
    )
    .await
    .expect("256 MiB read bounded");
    assert_eq!(got, want);

    let parts = LEN.div_ceil(PART) as usize;
    let log = ng.wait_log_lines(log_before + parts);
    let sent: u64 = log[log_before..].iter().map(|l| l.body_bytes_sent).sum();
    assert_eq!(sent, LEN, "bytes nginx sent for the range reads: {log:?}");
    assert!(log[log_before..]
        .iter()
        .all(|l| l.status == 206 && l.range.starts_with("bytes=")));
}

/// Reads the whole object as `part`-sized ranges, `parallel` at a time, and
/// hashes the bytes in order without holding the object in memory.
async fn fetch_all(
    src: &HttpSource,
    info: &cache_core::SourceInfo,
    part: u64,
    parallel: usize,
) -> blake3::Hash {
    let ranges: Vec<_> = (0..info.len.div_ceil(part))
        .map(|i| i * part..((i + 1) * part).min(info.len))
        .collect();
    let mut bodies = futures::stream::iter(ranges)
        .map(|r| async move {
            let body = src.read_range(r.clone(), info).await.unwrap();
            assert_eq!(body.range, r);
            let bytes = collect(body).await.unwrap();
            assert_eq!(bytes.len() as u64, r.end - r.start);
            bytes
        })
        .buffered(parallel);
    let mut h = blake3::Hasher::new();
    while let Some(b) = bodies.next().await {
        h.update(&b);
    }
    h.finalize()
}
