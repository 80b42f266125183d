//! Pull-through mirror behaviour, refusals and hardening, status/metrics,
//! graceful shutdown.

mod support;

use std::time::Duration;

use support::endpoint::{curl, data, run, Origin, TestEndpoint, BASE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CS: u64 = 256 << 10;

/// (status code, body) of a curl GET with extra args.
async fn status_of(url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut args = vec!["-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args).await;
    let s = out.stdout;
    let nl = s.iter().rposition(|&b| b == b'\n').unwrap();
    let code = std::str::from_utf8(&s[nl + 1..]).unwrap().parse().unwrap();
    (code, s[..nl].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_at_once_fetch_each_byte_once() {
    let origin = Origin::default();
    let len = 10 * CS as usize + 5;
    let bytes = data(20, len);
    let src = origin.put("same.img", bytes.clone(), 10);
    let ep = TestEndpoint::start(&origin, |_| {}).await;
    let url = ep.mirror_url("same.img");
    let (a, b) = tokio::join!(status_of(&url, &[]), status_of(&url, &["-r", "1000-"]));
    assert_eq!(a, (200, bytes.clone()));
    assert_eq!(b, (206, bytes[1000..].to_vec()));
    assert!(
        src.chunk_request_counts(CS).iter().all(|&n| n == 1),
        "every chunk fetched exactly once: {:?}",
        src.chunk_request_counts(CS)
    );
    assert_eq!(
        origin.probes(),
        1,
        "the second request attached without a probe"
    );
    let (_, m) = status_of(&ep.url("/metrics"), &[]).await;
    let m = String::from_utf8(m).unwrap();
    // Either request may be the one that started the fill.
    assert_eq!(
        metric_sum(&m, "blockcache_http_requests_total", "result=\"miss\""),
        1,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "blockcache_http_requests_total", "result=\"coalesced\""),
        1,
        "{m}"
    );
    let served = 2 * len as u64 - 1000;
    assert_eq!(
        metric_sum(&m, "blockcache_http_response_bytes_total", ""),
        served,
        "{m}"
    );
    assert!(
        m.contains(&format!("blockcache_upstream_bytes_total {len}\n")),
        "{m}"
    );
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_window_origin_down_and_404() {
    let origin = Origin::default();
    let bytes = data(21, 3 * CS as usize);
    origin.put("r.bin", bytes.clone(), 0);
    // Window of an hour: one probe however many requests.
    let ep = TestEndpoint::start(&origin, |c| c.revalidate = Duration::from_secs(3600)).await;
    let url = ep.mirror_url("r.bin");
    for _ in 0..3 {
        assert_eq!(status_of(&url, &[]).await, (200, bytes.clone()));
    }
    assert_eq!(origin.probes(), 1);
    ep.stop().await;

    // No window: every request of a complete object revalidates...
    let origin = Origin::default();
    origin.put("r.bin", bytes.clone(), 0);
    let ep = TestEndpoint::start(&origin, |c| c.revalidate = Duration::ZERO).await;
    let url = ep.mirror_url("r.bin");
    assert_eq!(status_of(&url, &[]).await, (200, bytes.clone()));
    let key = ep.store.resolve(&format!("{BASE}r.bin")).unwrap();
    let obj = ep.store.open_ref(&key).unwrap();
    tokio::time::timeout(support::STEP, obj.wait_complete())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&url, &[]).await, (200, bytes.clone()));
    // The stored copy is served at once; the origin is asked in the
    // background.
    let deadline = std::time::Instant::now() + support::STEP;
    while origin.probes() < 2 {
        assert!(std::time::Instant::now() < deadline, "no revalidation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and an unreachable origin still gets the complete copy served.
    origin.set_down(true);
    assert_eq!(
        status_of(&url, &["-r", "0-9"]).await,
        (206, bytes[..10].to_vec())
    );
    // Something never cached, origin down: 502.
    assert_eq!(status_of(&ep.mirror_url("nope.bin"), &[]).await.0, 502);
    origin.set_down(false);
    // Origin 404 → 404.
    let (code, body) = status_of(&ep.mirror_url("missing.bin"), &[]).await;
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_while_serving_others() {
    let origin = Origin::default();
    let bytes = data(22, 2 * CS as usize + 3);
    origin.put("ok.bin", bytes.clone(), 1);
    let ep = TestEndpoint::start(&origin, |c| {
        c.header_read_timeout = Duration::from_millis(800);
    })
    .await;

    // Slowloris: partial headers, one byte at a time, slowly.
    let addr = ep.addr;
    let slow = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /m/o/ok.bin HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..600 {
            // Until the server closes (write error or EOF on read).
            if s.write_all(b"X").await.is_err() {
                return true;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {
                    // A 408 or similar answer, then EOF.
                    continue;
                }
                Err(_) => {}
            }
        }
        false
    });

    // Meanwhile, the right refusals — and normal service.
    let u = |p: &str| ep.url(p);
    for (path, code) in [
        ("/m/o/../etc/passwd", 400),
        ("/m/o/a/%2e%2e/%2e%2e/x", 400),
        ("/m/o/..%2fx", 400),
        ("/m/o/%252e%252e/x", 400),
        ("/m/nosuch/x.bin", 404),
        ("/blobs/xyz", 400),
        (
            "/blobs/0000000000000000000000000000000000000000000000000000000000000000",
            404,
        ),
        ("/elsewhere", 404),
    ] {
        let (got, body) = status_of(&u(path), &["--path-as-is"]).await;
        assert_eq!(got, code, "{path}: {}", String::from_utf8_lossy(&body));
        if path.contains("nosuch") {
            assert!(String::from_utf8_lossy(&body).contains("nosuch"));
        }
    }
    let (code, _) = status_of(&u("/m/o/ok.bin"), &["-X", "POST"]).await;
    assert_eq!(code, 405);

    // 1000 ranges: served as the full body (200), not amplified.
    let many: Vec<String> = (0..1000).map(|i| format!("{}-{}", i * 7, i * 7)).collect();
    let (code, body) = status_of(&u("/m/o/ok.bin"), &["-r", &many.join(",")]).await;
    assert_eq!(code, 200);
    assert_eq!(body, bytes);

    // An oversized header: refused (431), the server lives on.
    let huge = format!("X-Big: {}", "a".repeat(100 << 10));
    let out = run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &huge,
            &u("/status"),
        ],
    )
    .await;
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code == "431" || code == "000",
        "oversized header got {code}"
    );

    assert!(
        tokio::time::timeout(Duration::from_secs(60), slow)
            .await
            .unwrap()
            .unwrap(),
        "the slow header sender was disconnected"
    );
    assert_eq!(status_of(&u("/m/o/ok.bin"), &[]).await, (200, bytes));
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_and_graceful_shutdown() {
    let origin = Origin::default();
    let len = 40 * CS as usize;
    let bytes = data(23, len);
    // Slow enough that the status sees it filling.
    origin.put("s.img", bytes.clone(), 30);
    let ep = TestEndpoint::start(&origin, |c| {
        c.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let (code, head) = status_of(&ep.mirror_url("s.img"), &["-r", "0-99"]).await;
    assert_eq!((code, head), (206, bytes[..100].to_vec()));
    let (code, json) = status_of(&ep.url("/status"), &[]).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let objs = v["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 1, "{v}");
    let o = &objs[0];
    assert_eq!(o["url"], format!("{BASE}s.img"));
    assert_eq!(o["length"], len as u64);
    assert_eq!(o["chunk_size"], CS);
    assert_eq!(o["chunks_total"], 40);
    for k in [
        "chunks_done",
        "bytes_per_second",
        "readers",
        "blake3",
        "state",
    ] {
        assert!(o.get(k).is_some(), "{k} in {o}");
    }
    let state = o["state"].as_str().unwrap();
    assert!(["filling", "complete"].contains(&state), "{state}");

    // A long download in flight, then shutdown: serve returns (bounded),
    // and the endpoint no longer accepts.
    let url = ep.mirror_url("s.img");
    let addr = ep.addr;
    let dl = tokio::spawn(async move { run("curl", &["-s", "-o", "/dev/null", &url]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    ep.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(60), dl).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_with_idle_connection_reclaimed_by_header_timeout() {
    let origin = Origin::default();
    let ep = TestEndpoint::start(&origin, |c| {
        c.max_connections = 1;
        c.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    // Holds the only connection slot without ever sending a request.
    let mut idle = tokio::net::TcpStream::connect(ep.addr).await.unwrap();
    // A second client waits for the slot, which the header time-out frees.
    let (code, body) = status_of(&ep.url("/status"), &[]).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let mut buf = Vec::new();
    // Whatever it reads (maybe a 408), the server ends it: no hang.
    let _ = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut buf))
        .await
        .expect("idle connection closed by the server");
    ep.stop().await;
}

/// The sum of the samples of `name` whose labels contain `label` (all of
/// them when it is empty), from Prometheus text.
fn metric_sum(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
