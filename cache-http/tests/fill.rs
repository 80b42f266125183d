//! Whole fills through the cache: `Store::fetch` with an `HttpSource`,
//! against a real nginx and against an origin that misbehaves. Each ends
//! complete with the right BLAKE3 or with the specific error, and never
//! with a wrong byte committed.

mod support;

use std::sync::Arc;

use cache_core::{FetchOptions, FillOptions, Object, SourceErrorKind, Store, StoreOptions};
use cache_http::HttpSource;
use support::fault_origin::{Action, FaultOrigin};
use support::nginx::{Nginx, NginxOptions};
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

    fill_from(&nginx, "big.img", want, options(4)).await;

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

/// The connections nginx saw the fill's requests on (the probe's aside).
fn fill_connections(nginx: &Nginx, requests: usize) -> std::collections::BTreeSet<u64> {
    let log = nginx.wait_log_lines(requests + 1);
    let fill: Vec<_> = log.iter().filter(|l| l.range != "bytes=0-0").collect();
    assert!(fill.len() >= requests, "{} requests: {fill:?}", fill.len());
    assert!(fill.iter().all(|l| l.status == 206), "{fill:?}");
    fill.iter().map(|l| l.connection).collect()
}

/// Fills nginx's `name` into a fresh store with `options`; checks the root.
async fn fill_from(nginx: &Nginx, name: &str, want: blake3::Hash, options: FetchOptions) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let src = HttpSource::new(&nginx.url(name), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), options).await.unwrap();
    assert_eq!(bounded(object.wait_complete()).await.unwrap(), want);
}

/// A fast origin keeps the fill at `fast_origin_connections` requests at
/// a time (each with at most one successor overlapping its end); the
/// same fill allowed all its lanes opens them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_origin_keeps_the_fill_to_its_fast_lanes() {
    const LEN: usize = 48 << 20;
    let data = pattern(48, LEN);
    let want = blake3::hash(&data);
    let lanes = |fast: usize| FetchOptions {
        fill: FillOptions {
            connections: 8,
            max_request_bytes: 2 << 20,
            fast_origin_connections: fast,
            // Never judged slow: what is tested is the cap, not the clock.
            fast_origin_rate: 0,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };

    let nginx = Nginx::start();
    nginx.put("img", &data);
    fill_from(&nginx, "img", want, lanes(2)).await;
    let narrow = fill_connections(&nginx, 24);
    assert!(
        narrow.len() <= 4,
        "2 lanes used {} connections",
        narrow.len()
    );

    let nginx = Nginx::start();
    nginx.put("img", &data);
    fill_from(&nginx, "img", want, lanes(8)).await;
    let wide = fill_connections(&nginx, 24);
    assert!(wide.len() >= 8, "8 lanes used {} connections", wide.len());
}

/// An origin slower than `fast_origin_rate` per connection gets every
/// connection from the first window on. nginx's `limit_rate` lets each
/// response start with one second's worth at once, so the requests are
/// twice that: 128 KiB at 64 KiB/s (chunks of 64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_opens_every_lane() {
    const LEN: usize = 2 << 20;
    let data = pattern(16, LEN);
    let want = blake3::hash(&data);
    let nginx = Nginx::start_with(NginxOptions {
        limit_rate: Some("64k".into()),
    });
    nginx.put("img", &data);
    let options = FetchOptions {
        chunk_size: 64 << 10,
        fill: FillOptions {
            connections: 8,
            max_request_bytes: 128 << 10,
            fast_origin_connections: 2,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    fill_from(&nginx, "img", want, options).await;
    let used = fill_connections(&nginx, 16);
    assert!(
        used.len() >= 6,
        "a slow origin got {} connections",
        used.len()
    );
}

/// A fill of `o`'s `/obj` into a fresh store opened with `store`; the
/// store's directory lives as long as the returned guard.
async fn fill_obj(
    o: &FaultOrigin,
    store: StoreOptions,
    options: FetchOptions,
) -> (tempfile::TempDir, Store, Object) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), store).unwrap();
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let object = store.fetch(Arc::new(src), options).await.unwrap();
    (dir, store, object)
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
    let (_dir, _store, object) = fill_obj(&o, StoreOptions::default(), options(4)).await;
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
    let (_dir, _store, object) = fill_obj(&o, StoreOptions::default(), one_by_one()).await;
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
    let (_dir, _store, object) = fill_obj(&o, StoreOptions::default(), options(2)).await;
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
    let (_dir, _store, object) = fill_obj(&o, StoreOptions::default(), one_by_one()).await;
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

/// A body moved in the kernel (`HttpSource::direct`) that breaks mid-run:
/// the chunk it was in is asked again through hyper from its start, and
/// the fill completes with the right bytes.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_body_that_breaks_is_finished_through_hyper() {
    const LEN: usize = 4 << 20;
    let data = pattern(3, LEN);
    // Request 0 is the probe, 1 the fill's one range (moved): it breaks
    // half way into chunk 1. More than the socket buffers hold, so the
    // head is read before the reset.
    let o = FaultOrigin::start(data.clone(), ETAG, |_, i| {
        if i == 1 {
            Action::Reset { after: 1_500_000 }
        } else {
            Action::Serve
        }
    })
    .await;
    let (_dir, _store, object) = fill_obj(&o, StoreOptions::default(), options(1)).await;
    assert_eq!(
        bounded(object.wait_complete()).await.unwrap(),
        blake3::hash(&data)
    );
    assert!(object.read_at(0, LEN as u64).await.unwrap()[..] == data[..]);
    let ranges: Vec<Option<String>> = o.seen().into_iter().map(|s| s.range).collect();
    assert_eq!(
        ranges,
        [
            Some("bytes=0-0".to_owned()),
            Some(format!("bytes=0-{}", LEN - 1)),
            Some(format!("bytes={}-{}", 1 << 20, LEN - 1)),
        ],
        "probe, the moved body, then the rest from chunk 1 through hyper"
    );
}

/// A full disk while a body is moved in the kernel: the fill fails with
/// the write error naming the data file, and the chunks written before
/// it stay complete.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_a_moved_body_fails_the_fill_and_keeps_what_came() {
    const LEN: usize = 4 << 20;
    let data = pattern(4, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, |_, _| Action::Serve).await;
    let fault: cache_core::WriteFault = Arc::new(|offset, _| {
        if offset >= 2 << 20 {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    });
    let full_disk = StoreOptions {
        write_fault: Some(fault),
        ..StoreOptions::default()
    };
    let (_dir, _store, object) = fill_obj(&o, full_disk, options(1)).await;
    let err = bounded(object.wait_complete()).await.unwrap_err();
    let shown = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(shown.contains("write chunk"), "{shown}");
    assert!(
        shown.contains(&object.data_path().display().to_string()),
        "{shown}"
    );
    assert_eq!(object.state(), cache_core::ObjectState::Failed);
    assert_eq!(object.progress().chunks_done, 2, "chunks 0 and 1 stay");
    assert!(object.read_at(0, 2 << 20).await.unwrap()[..] == data[..2 << 20]);
}
