//! Whole fills through the cache: `Store::fetch` with an `HttpSource`,
//! against a real nginx and against an origin that misbehaves. Each ends
//! complete with the right BLAKE3 or with the specific error, and never
//! with a wrong byte committed.

mod support;

use std::sync::Arc;

use cache_core::{FetchOptions, FillOptions, SourceErrorKind, Store};
use cache_http::HttpSource;
use support::fault_origin::{Action, FaultOrigin};
use support::nginx::Nginx;
use support::{fast_config, pattern, STEP};

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.expect("bounded wait")
}

fn options(connections: usize) -> FetchOptions {
    FetchOptions {
        fill: FillOptions {
            connections,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    }
}

/// The acceptance: 256 MiB from nginx with 4 connections; the
/// root equals the file's BLAKE3 and nginx sent every byte exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_256_mib_four_connections_each_byte_once() {
    const LEN: usize = 256 << 20;
    let nginx = Nginx::start();
    let data = pattern(256, LEN);
    let want = blake3::hash(&data);
    nginx.put("big.img", &data);
    drop(data);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&nginx.url("big.img"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), options(4)).await.unwrap();
    let root = bounded(object.wait_complete()).await.unwrap();
    assert_eq!(root, want);

    let log = nginx.access_log();
    // The probe asks for one byte; every other request is a 206 range of
    // the fill, and together they carry each byte exactly once.
    let (probe, fill): (Vec<_>, Vec<_>) = log.iter().partition(|l| l.range == "bytes=0-0");
    assert_eq!(probe.len(), 1, "{probe:?}");
    assert!(fill.iter().all(|l| l.status == 206), "{fill:?}");
    let sent: u64 = fill.iter().map(|l| l.body_bytes_sent).sum();
    assert_eq!(sent, LEN as u64, "bytes nginx sent for the fill");
    assert!(fill.len() >= 4, "merged into {} requests", fill.len());
}

/// One connection, requests of 1 MiB: a fill in predictable steps.
fn one_by_one() -> FetchOptions {
    FetchOptions {
        fill: FillOptions {
            connections: 1,
            max_request_bytes: 1 << 20,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    }
}

const ETAG: &str = "\"v1\"";
const LEN: usize = 6 << 20;

/// A 200 to a range request away from offset 0: nothing is written at that
/// offset; the fill falls back to one full stream and completes.
#[tokio::test]
async fn whole_body_for_a_range_falls_back_to_one_stream() {
    let data = pattern(1, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, |seen, _| match seen.range.as_deref() {
        Some(r) if !r.starts_with("bytes=0-") => Action::Whole200,
        _ => Action::Serve,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), options(4)).await.unwrap();
    assert_eq!(
        bounded(object.wait_complete()).await.unwrap(),
        blake3::hash(&data)
    );
    assert!(object.read_at(0, LEN as u64).await.unwrap()[..] == data[..]);
}

/// An origin that stops honouring ranges mid-fill (a CDN node swapped
/// under us): the running requests fall back to one stream, and when that
/// stream, resumed at the first missing chunk, is answered with the whole
/// object too, it starts again from offset 0 — the chunks already stored
/// must match what passes by. Before, the second refusal ended the fill.
#[tokio::test]
async fn ranges_refused_mid_fill_end_in_one_stream_from_offset_0() {
    let data = pattern(5, LEN);
    // The probe and the first two 1 MiB requests are served as asked.
    let o = FaultOrigin::start(data.clone(), ETAG, |_, i| {
        if i < 3 {
            Action::Serve
        } else {
            Action::Whole200
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), one_by_one()).await.unwrap();
    assert_eq!(
        bounded(object.wait_complete()).await.unwrap(),
        blake3::hash(&data)
    );
    assert!(object.read_at(0, LEN as u64).await.unwrap()[..] == data[..]);
}

/// Resets mid-body are retried from the last byte; the object completes.
#[tokio::test]
async fn resets_mid_body_still_complete_correctly() {
    let data = pattern(2, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, |_, i| {
        if i % 3 == 1 {
            Action::Reset { after: 100_000 }
        } else {
            Action::Serve
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), options(2)).await.unwrap();
    assert_eq!(
        bounded(object.wait_complete()).await.unwrap(),
        blake3::hash(&data)
    );
}

/// The origin publishes a new version mid-fill: the fill ends with
/// "source changed", and every chunk it kept is the first version's.
#[tokio::test]
async fn etag_change_mid_fill_is_source_changed() {
    let data = pattern(3, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, |_, i| {
        if i >= 3 {
            Action::ServeEtag("\"v2\"".into())
        } else {
            Action::Serve
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), one_by_one()).await.unwrap();
    let err = bounded(object.wait_complete()).await.unwrap_err();
    assert_eq!(
        err.source_error().map(|e| e.kind),
        Some(SourceErrorKind::Changed),
        "{err}"
    );
    let cs = object.chunk_size() as usize;
    let mut kept = 0;
    for c in 0..LEN / cs {
        if let Ok(b) = object.try_read_at((c * cs) as u64, cs as u64) {
            assert!(b[..] == data[c * cs..(c + 1) * cs], "chunk {c} wrong");
            kept += 1;
        }
    }
    // One connection: one request at a time, no overlap.
    assert_eq!(kept, 2, "the two requests before the change");
}

/// 404 at the probe: a clear, final error naming the URL.
#[tokio::test]
async fn not_found_is_final_and_names_the_url() {
    let o = FaultOrigin::start(pattern(4, 100), ETAG, |_, _| Action::Status(404, vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let url = o.url("/missing.img");
    let src = HttpSource::new(&url, fast_config()).unwrap();
    let err = store.fetch(Arc::new(src), options(2)).await.unwrap_err();
    assert_eq!(
        err.source_error().map(|e| e.kind),
        Some(SourceErrorKind::NotFound),
        "{err}"
    );
    assert!(err.to_string().contains(&url), "{err}");
}
