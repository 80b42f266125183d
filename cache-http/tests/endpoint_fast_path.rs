//! The fast path of `/blobs/` range requests (`endpoint::fast_path`)
//! against hyper's answer to the same request, over raw sockets: the same
//! head byte for byte (bar `Date`) and body, pipelined requests answered
//! in order across the hand-off to hyper, a head that arrives in pieces,
//! the access log's metrics, the header read time-out and the drain.

mod support;

use std::time::Duration;

use support::endpoint::{data, Origin, TestEndpoint, CLIENT_BOUND, MIRROR};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response: the status line and header lines as sent (`Date`
/// left out), and the body.
#[derive(Debug, PartialEq)]
struct Raw {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// Reads one response (a body of `Content-Length` bytes, none for HEAD).
async fn read_response(r: &mut BufReader<TcpStream>, head_request: bool) -> Raw {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.expect("read head");
        assert!(n > 0, "connection closed in a head: {head:?}");
        let line = line.trim_end_matches("\r\n").to_owned();
        if line.is_empty() {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("date: ") {
            head.push(line);
        }
    }
    let raw = Raw { head, body: vec![] };
    let len: usize = raw
        .header("content-length")
        .map(|v| v.parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = vec![0; if head_request { 0 } else { len }];
    r.read_exact(&mut body).await.expect("read body");
    Raw { body, ..raw }
}

/// Sends `request` on a new connection and reads its one response.
async fn exchange(ep: &TestEndpoint, request: &str) -> Raw {
    let mut s = TcpStream::connect(ep.addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut r = BufReader::new(s);
    tokio::time::timeout(CLIENT_BOUND, read_response(&mut r, false))
        .await
        .expect("a response within the bound")
}

/// An endpoint with one complete object of `len` bytes: (endpoint,
/// bytes, `/blobs/` path, its ETag).
async fn with_object(
    len: usize,
    tweak: impl FnOnce(&mut cache_http::endpoint::EndpointConfig),
) -> (TestEndpoint, Vec<u8>, String, String) {
    let origin = Origin::default();
    let bytes = data(77, len);
    origin.put("img.raw", bytes.clone(), 0);
    let ep = TestEndpoint::start(&origin, tweak).await;
    let whole = exchange(
        &ep,
        &format!("GET /m/{MIRROR}/img.raw HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(whole.body == bytes, "filled through the mirror");
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let path = format!("/blobs/{hash}");
    // The content hash names the object once its fill has finished.
    let named = async {
        loop {
            let r = exchange(&ep, &get(&path, "0-0", "")).await;
            if r.head[0].starts_with("HTTP/1.1 206") {
                return r.header("etag").expect("etag").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let etag = tokio::time::timeout(CLIENT_BOUND, named)
        .await
        .expect("named");
    (ep, bytes, path, etag)
}

/// The value of the metric line starting with `prefix` now (0 before
/// its first count).
async fn metric(ep: &TestEndpoint, prefix: &str) -> f64 {
    let text = body_text(ep.addr, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().expect("a number"))
}

const FAST: &str = "blockcache_http_fast_path_requests_total ";
const HITS: &str = "blockcache_http_requests_total{mirror=\"\",status=\"206\",result=\"hit\"}";
const SENT: &str = "blockcache_http_response_bytes_total{mirror=\"\"}";

/// A request is counted once its answer is sent, a moment after its
/// client has read the last byte: waits (bounded) until the metric
/// reaches `want`, and returns the value it has then (more than `want`
/// when something else was counted too).
async fn reaches(ep: &TestEndpoint, prefix: &str, want: f64) -> f64 {
    let wait = async {
        loop {
            let v = metric(ep, prefix).await;
            if v >= want {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(CLIENT_BOUND, wait)
        .await
        .expect("the metric reached its value within the bound")
}

/// The metric once every answer already sent is counted (two reads
/// 100 ms apart agree).
async fn settled(ep: &TestEndpoint, prefix: &str) -> f64 {
    let wait = async {
        let mut last = metric(ep, prefix).await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let v = metric(ep, prefix).await;
            if v == last {
                return v;
            }
            last = v;
        }
    };
    tokio::time::timeout(CLIENT_BOUND, wait)
        .await
        .expect("the metric settled within the bound")
}

/// The body of `GET path` on a connection of its own, as text.
async fn body_text(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    text.split_once("\r\n\r\n")
        .expect("a head and a body")
        .1
        .to_owned()
}

/// Reads `s` to its end (bounded): it must close without another byte.
async fn assert_closed_without_more(mut s: impl tokio::io::AsyncRead + Unpin) {
    let mut rest = Vec::new();
    let n = tokio::time::timeout(CLIENT_BOUND, s.read_to_end(&mut rest))
        .await
        .expect("closed within the bound")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "closed without more: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn get(path: &str, range: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: test\r\nRange: bytes={range}\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_as_hyper_does() {
    let len = (3 << 20) + 777;
    let (ep, bytes, path, etag) = with_object(len, |_| {}).await;
    // Small (written from memory), large (sendfile), across a chunk
    // boundary (256 KiB chunks), the last byte, a suffix, an open end.
    let cases = [
        ("0-99", 0..100),
        ("1000-70000", 1000..70_001),
        ("262000-600000", 262_000..600_001),
        (&*format!("{}-{}", len - 1, len - 1), len - 1..len),
        ("-5000", len - 5000..len),
        (&*format!("{}-", len - 300_000), len - 300_000..len),
    ];
    let mut fast_answers = settled(&ep, FAST).await;
    for (spec, want) in cases {
        for close in ["", "Connection: close\r\n"] {
            let fast = exchange(&ep, &get(&path, spec, close)).await;
            // Counted as fast, and nothing before it was (hyper's answer
            // of the last turn included).
            fast_answers += 1.0;
            assert_eq!(
                reaches(&ep, FAST, fast_answers).await,
                fast_answers,
                "{spec}: the fast path's"
            );
            // A matching If-Range keeps the Range but is hyper's to answer.
            let by_hyper = exchange(
                &ep,
                &get(&path, spec, &format!("If-Range: {etag}\r\n{close}")),
            )
            .await;
            assert_eq!(fast.head, by_hyper.head, "{spec} {close:?}");
            assert!(
                fast.head[0] == "HTTP/1.1 206 Partial Content",
                "{:?}",
                fast.head
            );
            assert!(fast.body == bytes[want.clone()], "{spec}: body");
            assert!(by_hyper.body == fast.body, "{spec}: hyper's body");
        }
    }
    assert_eq!(settled(&ep, FAST).await, fast_answers, "hyper's answers");
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_keep_their_order_across_the_hand_off() {
    let len = 1 << 20;
    let (ep, bytes, path, _) = with_object(len, |_| {}).await;
    let before = settled(&ep, FAST).await;
    let s = TcpStream::connect(ep.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    // Two fast requests, a HEAD (hyper's), then one more that hyper
    // answers too (the connection is hyper's from the HEAD on), a 416,
    // and a fast one again: all in one write.
    let all = [
        get(&path, "0-9", ""),
        get(&path, "100000-199999", ""),
        format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        get(&path, "10-19", ""),
        get(&path, &format!("{len}-"), ""),
        get(&path, "20-29", ""),
    ]
    .concat();
    r.get_mut().write_all(all.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    for head_request in [false, false, true, false, false, false] {
        let resp = tokio::time::timeout(CLIENT_BOUND, read_response(&mut r, head_request))
            .await
            .expect("response within the bound");
        got.push(resp);
    }
    assert!(got[0].body == bytes[0..10]);
    assert!(got[1].body == bytes[100_000..200_000]);
    assert_eq!(got[2].head[0], "HTTP/1.1 200 OK");
    assert_eq!(got[2].header("content-length"), Some(&*len.to_string()));
    assert!(got[3].body == bytes[10..20]);
    assert_eq!(got[4].head[0], "HTTP/1.1 416 Range Not Satisfiable");
    assert!(got[5].body == bytes[20..30]);
    reaches(&ep, FAST, before + 2.0).await;
    assert_eq!(
        settled(&ep, FAST).await,
        before + 2.0,
        "only the first two were fast"
    );
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_pieces_is_answered_and_counted() {
    let (ep, bytes, path, _) = with_object(600_000, |_| {}).await;
    let (fast, hits) = (settled(&ep, FAST).await, settled(&ep, HITS).await);
    let sent = metric(&ep, SENT).await;
    let s = TcpStream::connect(ep.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut r = BufReader::new(s);
    let request = get(&path, "5-500004", "");
    for piece in request.as_bytes().chunks(7) {
        r.get_mut().write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let resp = tokio::time::timeout(CLIENT_BOUND, read_response(&mut r, false))
        .await
        .expect("response");
    assert!(resp.body == bytes[5..500_005]);
    assert_eq!(
        reaches(&ep, HITS, hits + 1.0).await,
        hits + 1.0,
        "one more 206 hit"
    );
    assert_eq!(
        settled(&ep, FAST).await,
        fast + 1.0,
        "answered by the fast path"
    );
    // Its body counted; /metrics answers count their own bytes too (a few
    // KiB each).
    let more = metric(&ep, SENT).await - sent;
    assert!(
        (500_000.0..1_500_000.0).contains(&more),
        "its body bytes counted: {more}"
    );
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_never_ends_is_cut_at_the_header_read_time_out() {
    let (ep, _, path, _) = with_object(100_000, |c| {
        c.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(ep.addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n").as_bytes())
        .await
        .expect("write");
    assert_closed_without_more(s).await;
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_an_idle_fast_connection_at_once() {
    let (ep, bytes, path, _) = with_object(100_000, |c| {
        // Long enough that only closing the idle connection ends it.
        c.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let s = TcpStream::connect(ep.addr).await.expect("connect");
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(get(&path, "0-9", "").as_bytes())
        .await
        .expect("write");
    let resp = read_response(&mut r, false).await;
    assert!(resp.body == bytes[..10]);
    // The connection idles on the fast path; the drain must not wait for it.
    let stopped = tokio::time::timeout(Duration::from_secs(20), ep.stop()).await;
    assert!(stopped.is_ok(), "serve waited for an idle connection");
    assert_closed_without_more(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_leaves_the_endpoint_serving() {
    let len = 8 << 20;
    let (ep, bytes, path, _) = with_object(len, |_| {}).await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(ep.addr).await.expect("connect");
        s.write_all(get(&path, "0-", "").as_bytes())
            .await
            .expect("write");
        let mut some = [0u8; 1000];
        let _ = s.read(&mut some).await.expect("a first read");
        drop(s); // reset with most of 8 MiB unsent
    }
    let resp = exchange(&ep, &get(&path, "4000000-4000099", "")).await;
    assert!(resp.body == bytes[4_000_000..4_000_100]);
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_answer_in_progress_counts_as_a_reader() {
    let len = 32 << 20;
    let (ep, _, path, _) = with_object(len, |_| {}).await;
    let hash = path.trim_start_matches("/blobs/").to_owned();
    let readers = |ep: &TestEndpoint| {
        let addr = ep.addr;
        let hash = hash.clone();
        async move {
            let body = body_text(addr, "/status").await;
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            v["objects"]
                .as_array()
                .expect("objects")
                .iter()
                .find(|o| o["blake3"].as_str() == Some(&hash))
                .map_or(0, |o| o["readers"].as_u64().expect("readers"))
        }
    };
    // A whole-object range the client does not read: the answer waits on
    // a full socket buffer.
    let mut s = TcpStream::connect(ep.addr).await.expect("connect");
    s.write_all(get(&path, "0-", "").as_bytes())
        .await
        .expect("write");
    let seen = async {
        while readers(&ep).await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(CLIENT_BOUND, seen)
        .await
        .expect("the object shows a reader while the answer is sent");
    drop(s);
    let gone = async {
        while readers(&ep).await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(CLIENT_BOUND, gone)
        .await
        .expect("and none once the client is gone");
    ep.stop().await;
}
