//! Range bodies moved into a file in the kernel (`HttpSource::direct`,
//! Linux `splice`): the bytes land where they belong, anything but a
//! plain 206 of exactly the range is declined (so `read_range` handles
//! it), and a body that breaks is a source error, not a wrong byte.
//! Whole fills that go through this path and fall back from it are in
//! `fill.rs`.

#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use cache_core::{DirectBody, MoveError, Source, SourceErrorKind, SourceInfo};
use cache_http::{HttpSource, HttpSourceConfig};
use support::fault_origin::{Action, FaultOrigin};
use support::{fast_config, pattern, probe};

const ETAG: &str = "\"v1\"";
const LEN: usize = 3 << 20;

fn info() -> SourceInfo {
    support::source_info(LEN, ETAG)
}

async fn origin(
    script: impl Fn(usize) -> Action + Send + Sync + 'static,
) -> (FaultOrigin, Vec<u8>) {
    let data = pattern(7, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, move |_, i| script(i)).await;
    (o, data)
}

/// Opens `range` on a blocking thread (the fill calls it from one).
async fn open(
    src: &std::sync::Arc<HttpSource>,
    range: std::ops::Range<u64>,
) -> Option<Box<dyn DirectBody>> {
    let src = src.clone();
    tokio::task::spawn_blocking(move || src.direct().expect("direct bodies").open(range, &info()))
        .await
        .unwrap()
}

/// Moves `pieces` (lengths, in order) of `body` into `file` from `at`.
async fn move_pieces(
    mut body: Box<dyn DirectBody>,
    file: std::sync::Arc<std::fs::File>,
    at: u64,
    pieces: Vec<usize>,
) -> (Box<dyn DirectBody>, Vec<Result<(), MoveError>>) {
    tokio::task::spawn_blocking(move || {
        let mut off = at;
        let mut results = Vec::new();
        for len in pieces {
            results.push(body.move_into(&file, off, len));
            off += len as u64;
        }
        (body, results)
    })
    .await
    .unwrap()
}

fn temp_file(len: usize) -> (tempfile::NamedTempFile, std::sync::Arc<std::fs::File>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(len as u64).unwrap();
    let file = std::sync::Arc::new(f.reopen().unwrap());
    (f, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_lands_in_the_file_byte_for_byte() {
    let (o, data) = origin(|_| Action::Serve).await;
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), fast_config()).unwrap());
    let (path, file) = temp_file(LEN);
    // Odd edges and uneven pieces, one larger than a pipe.
    let range = (1 << 20) + 5..(3 << 20) - 7;
    let body = open(&src, range.clone())
        .await
        .expect("a plain 206 is moved");
    let n = (range.end - range.start) as usize;
    let pieces = vec![3, (1 << 20) + 11, n - 3 - (1 << 20) - 11];
    let (_, results) = move_pieces(body, file, range.start, pieces).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = std::fs::read(path.path()).unwrap();
    assert_eq!(
        &got[range.start as usize..range.end as usize],
        &data[range.start as usize..range.end as usize]
    );
    assert!(
        got[..range.start as usize].iter().all(|&b| b == 0),
        "bytes before the range untouched"
    );

    // The request was read_range's: range, If-Range, identity encoding.
    let seen = o.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(&*format!("bytes={}-{}", range.start, range.end - 1))
    );
    assert_eq!(last.if_range.as_deref(), Some(ETAG));
    assert_eq!(last.headers.get("accept-encoding").unwrap(), "identity");
    assert_eq!(
        last.headers.get("host").unwrap().to_str().unwrap(),
        o.authority()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_with_a_moved_request() {
    let (o, _) = origin(|_| Action::Serve).await;
    let config = HttpSourceConfig {
        headers: vec![("x-token".parse().unwrap(), "s3cret".parse().unwrap())],
        basic_auth: Some(cache_http::BasicAuth::parse("user:pw")),
        ..fast_config()
    };
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), config).unwrap());
    assert!(open(&src, 0..4096).await.is_some());
    let seen = o.seen();
    let h = &seen.last().unwrap().headers;
    assert_eq!(h.get("x-token").unwrap(), "s3cret");
    assert_eq!(h.get("authorization").unwrap(), "Basic dXNlcjpwdw==");
}

/// Each of these answers gets a request and a `None`: `read_range` asks
/// again and deals with it (retry, redirect, whole body, "changed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_plain_206_of_the_range_is_declined() {
    let cases: Vec<(&str, Action)> = vec![
        ("200 whole body", Action::Whole200),
        ("wrong Content-Range", Action::WrongContentRange),
        ("503", Action::Status(503, vec![])),
        ("redirect", Action::Redirect(302, "/elsewhere".into())),
        ("chunked, no Content-Length", Action::Short { after: 100 }),
        ("another version", Action::ServeEtag("\"v2\"".into())),
    ];
    for (what, action) in cases {
        let (o, _) = origin(move |_| action.clone()).await;
        let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), fast_config()).unwrap());
        assert!(open(&src, 4096..8192).await.is_none(), "{what}: declined");
        assert_eq!(o.seen().len(), 1, "{what}: asked once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_needs_hyper_is_not_moved() {
    let (o, _) = origin(|_| Action::Serve).await;
    // A rate limit is hyper's path; so is TLS (no request is made).
    let limited = HttpSourceConfig {
        limit_rate: Some(1 << 30),
        ..fast_config()
    };
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), limited).unwrap());
    assert!(open(&src, 0..4096).await.is_none());
    let tls = std::sync::Arc::new(
        HttpSource::new(&format!("https://{}/img", o.authority()), fast_config()).unwrap(),
    );
    assert!(open(&tls, 0..4096).await.is_none());
    assert!(o.seen().is_empty(), "{:?}", o.seen());
    // Switched off: no direct bodies at all.
    let off = HttpSourceConfig {
        direct_bodies: false,
        ..fast_config()
    };
    assert!(HttpSource::new(&o.url("/img"), off)
        .unwrap()
        .direct()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_is_a_source_error() {
    // More than the socket buffers hold: the head is read long before
    // the reset (a reset discards what the client has not read yet).
    let (o, _) = origin(|_| Action::Reset { after: 1_500_000 }).await;
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), fast_config()).unwrap());
    let (_path, file) = temp_file(LEN);
    let body = open(&src, 0..(2 << 20))
        .await
        .expect("the head is a plain 206");
    let (_, results) = move_pieces(body, file, 0, vec![1 << 20, 1 << 20, 4096]).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    for r in &results[1..] {
        match r {
            Err(MoveError::Source(e)) => assert!(
                matches!(
                    e.kind,
                    SourceErrorKind::Protocol | SourceErrorKind::Network | SourceErrorKind::Other
                ),
                "{e}"
            ),
            other => panic!("expected a source error, got {other:?}"),
        }
    }
    match &results[1] {
        Err(MoveError::Source(e)) => assert!(
            e.message.contains("short body") || e.message.contains("body error"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_a_network_error_after_the_stall_time() {
    let (o, _) = origin(|_| Action::Stall { after: 1000 }).await;
    let config = HttpSourceConfig {
        stall_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), config).unwrap());
    let (_path, file) = temp_file(LEN);
    let body = open(&src, 0..65_536)
        .await
        .expect("the head is a plain 206");
    let (_, results) = move_pieces(body, file, 0, vec![65_536]).await;
    match &results[0] {
        Err(MoveError::Source(e)) => {
            assert_eq!(e.kind, SourceErrorKind::Network, "{e}");
            assert!(e.message.contains("stalled"), "{e}");
        }
        other => panic!("expected a stall, got {other:?}"),
    }
}

/// The probe and a moved range on the source a fill would use, one after
/// the other on one connection: the second request finds the first's
/// connection idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_bodies_reuse_their_connection() {
    let (o, data) = origin(|_| Action::Serve).await;
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), fast_config()).unwrap());
    let info = probe(src.as_ref()).await.unwrap();
    assert_eq!(info, self::info());
    let (path, file) = temp_file(LEN);
    for range in [0..65_536u64, 65_536..131_072] {
        let body = open(&src, range.clone()).await.expect("moved");
        let n = (range.end - range.start) as usize;
        let (_, results) = move_pieces(body, file.clone(), range.start, vec![n]).await;
        assert!(results[0].is_ok());
    }
    assert_eq!(
        &std::fs::read(path.path()).unwrap()[..131_072],
        &data[..131_072]
    );
    let ports: Vec<u16> = o.seen().iter().skip(1).map(|s| s.peer_port).collect();
    assert_eq!(
        ports[0], ports[1],
        "the second moved request reused the connection"
    );
}

/// A file that refuses splice (here: opened for appending, which splice
/// rejects with EINVAL, as a file system without it would) is not a write
/// error: the body ends as a source error, so the fill asks hyper, and
/// later requests are not moved at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_refuses_splice_sends_bodies_through_hyper() {
    let (o, _) = origin(|_| Action::Serve).await;
    let src = std::sync::Arc::new(HttpSource::new(&o.url("/img"), fast_config()).unwrap());
    let path = tempfile::NamedTempFile::new().unwrap();
    let appending = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(path.path())
            .unwrap(),
    );
    let body = open(&src, 0..(1 << 20)).await.expect("moved");
    let (_, results) = move_pieces(body, appending, 0, vec![1 << 20]).await;
    match &results[0] {
        Err(MoveError::Source(e)) => assert!(e.message.contains("refuses splice"), "{e}"),
        other => panic!("expected a source error, got {other:?}"),
    }
    assert_eq!(o.seen().len(), 1);
    assert!(open(&src, 0..4096).await.is_none(), "no longer moved");
    assert_eq!(o.seen().len(), 1, "and not even asked");
}
