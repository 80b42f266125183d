//! The endpoint's serving path under concurrency: byte-exact bodies for
//! small ranges (written from the map), large ranges and whole objects
//! (sent with sendfile from the data file), multipart, several responses
//! per keep-alive connection, over `/blobs/` (objects resolved from
//! memory for a few seconds) and `/m/`, on complete and filling objects;
//! and many more concurrent connections than the old limit of 256.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use support::endpoint::{data, Origin, TestEndpoint, CLIENT_BOUND, MIRROR};

/// One keep-alive connection that GETs `path` with each of `ranges`
/// (inclusive `first-last` strings, or "" for the whole object) and
/// returns (status, body) of each.
async fn client(
    addr: std::net::SocketAddr,
    path: String,
    ranges: Vec<String>,
) -> Vec<(u16, Option<String>, Vec<u8>)> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for r in ranges {
        let mut req = Request::get(&path).header("host", "t");
        if !r.is_empty() {
            req = req.header("range", format!("bytes={r}"));
        }
        send.ready().await.expect("ready");
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        out.push((status, ct, body.to_vec()));
    }
    out
}

/// Range specs for client `c`: small (from memory), large (sendfile),
/// crossing chunk boundaries, the last byte, the whole object.
fn ranges_for(c: u64, len: u64) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..6u64 {
        let a = (c * 7_919_993 + i * 1_234_567) % len;
        let small = (a + 65_535).min(len - 1);
        let large = (a + (900 << 10) + c * 4097).min(len - 1);
        v.push(format!("{a}-{small}"));
        v.push(format!("{a}-{large}"));
    }
    v.push(format!("{}-{}", len - 1, len - 1));
    v.push(String::new());
    v
}

fn check(bytes: &[u8], spec: &str, status: u16, body: &[u8]) {
    if spec.is_empty() {
        assert_eq!(status, 200);
        assert!(body == bytes, "whole body differs");
        return;
    }
    let (a, b) = spec.split_once('-').unwrap();
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    assert_eq!(status, 206, "{spec}");
    assert!(body == &bytes[a..=b], "bytes of {spec} differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ranges_are_byte_exact_on_every_route() {
    let origin = Origin::default();
    // Not a multiple of the chunk size: the last chunk is short.
    let len = (6 << 20) + 12_345;
    let bytes = Arc::new(data(41, len));
    origin.put("img.raw", (*bytes).clone(), 0);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let mirror = format!("/m/{MIRROR}/img.raw");
    // Complete it, and learn its hash.
    let whole = client(ep.addr, mirror.clone(), vec![String::new()]).await;
    assert!(whole[0].2 == *bytes);
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let blob = format!("/blobs/{hash}");
    // The content hash names the object once its fill has finished.
    let named = async {
        while client(ep.addr, blob.clone(), vec!["0-0".into()]).await[0].0 != 206 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(CLIENT_BOUND, named)
        .await
        .expect("named");

    let run = async {
        let mut tasks = Vec::new();
        for c in 0..12u64 {
            let path = if c % 2 == 0 {
                blob.clone()
            } else {
                mirror.clone()
            };
            let ranges = ranges_for(c, len as u64);
            tasks.push(tokio::spawn({
                let ranges = ranges.clone();
                client(ep.addr, path, ranges)
            }));
            let _ = &ranges;
        }
        for (c, t) in tasks.into_iter().enumerate() {
            let got = t.await.expect("client");
            for (spec, (status, _, body)) in ranges_for(c as u64, len as u64).iter().zip(got) {
                check(&bytes, spec, status, &body);
            }
        }
    };
    tokio::time::timeout(CLIENT_BOUND, run)
        .await
        .expect("bounded");

    // Multipart with a large part (sendfile) and a small one (memory).
    let spec = format!("0-99,{}-{}", 1 << 20, (3 << 20) + 5);
    let got = client(ep.addr, blob.clone(), vec![spec]).await;
    let (status, ct, body) = &got[0];
    assert_eq!(*status, 206);
    let ct = ct.as_deref().expect("content type");
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    let find = |needle: &[u8]| body.windows(needle.len()).position(|w| w == needle);
    let large = &bytes[1 << 20..(3 << 20) + 6];
    assert!(find(&bytes[..100]).is_some(), "small part");
    assert!(find(large).is_some(), "large part");
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_object_streams_byte_exact_to_many_readers() {
    let origin = Origin::default();
    let len = 5 << 20;
    let bytes = Arc::new(data(42, len));
    // 64 KiB pieces every 3 ms: ~20 MiB/s, so readers wait for chunks.
    origin.put("slow.raw", (*bytes).clone(), 3);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let path = format!("/m/{MIRROR}/slow.raw");
    let run = async {
        let mut tasks = Vec::new();
        for c in 0..8u64 {
            let a = c * (600 << 10);
            let spec = vec![format!("{a}-{}", len as u64 - 1), String::new()];
            tasks.push((
                spec.clone(),
                tokio::spawn(client(ep.addr, path.clone(), spec)),
            ));
        }
        for (specs, t) in tasks {
            for (spec, (status, _, body)) in specs.iter().zip(t.await.expect("client")) {
                check(&bytes, spec, status, &body);
            }
        }
    };
    tokio::time::timeout(CLIENT_BOUND, run)
        .await
        .expect("bounded");
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_256_connections_are_served_at_once() {
    let origin = Origin::default();
    let bytes = Arc::new(data(43, 300_000));
    origin.put("small.raw", (*bytes).clone(), 0);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let path = format!("/m/{MIRROR}/small.raw");
    let first = client(ep.addr, path.clone(), vec![String::new()]).await;
    assert!(first[0].2 == *bytes);
    // 400 connections open at once, each sends its request only when all
    // are connected: with a limit of 256 the rest would wait for ever
    // (nobody closes).
    let n = 400;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (barrier, path, addr) = (barrier.clone(), path.clone(), ep.addr);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            barrier.wait().await;
            let req = Request::get(&path)
                .header("host", "t")
                .header("range", "bytes=0-9")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = send.send_request(req).await.expect("response");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            // Hold the connection until every client has its answer.
            barrier.wait().await;
            (status, body)
        }));
    }
    let all = async {
        for t in tasks {
            let (status, body) = t.await.expect("client");
            assert_eq!(status, 206);
            assert_eq!(&body[..], &bytes[..10]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every connection was served");
    ep.stop().await;
}
