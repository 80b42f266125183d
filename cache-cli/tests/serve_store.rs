//! `blockcache serve` and its store, the real binary against a real nginx
//! and curl: the access log, `/metrics` read by a real Prometheus parser,
//! `/status`, and the size limit. Every wait is bounded; nothing asserts
//! on timing.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::serve::*;
use support::{pattern, BIN, STEP};

/// A `serve` of `ng` as mirror `o` on a loopback port, with `extra` flags.
fn serve_mirror(store: &Path, ng: &Nginx, extra: &[&str]) -> Serve {
    serve_mirror_with(store, ng, extra, &[])
}

/// [`serve_mirror`] with environment variables `envs`.
fn serve_mirror_with(store: &Path, ng: &Nginx, extra: &[&str], envs: &[(&str, &str)]) -> Serve {
    let mirror = format!("o={}", ng.url(""));
    let mut args = vec!["--listen", "127.0.0.1:0", "--mirror", &mirror];
    args.extend_from_slice(extra);
    Serve::start(store, &args, envs)
}

#[test]
fn access_log_results_and_metrics_parse() {
    let ng = origin(Some("4m"));
    let data = pattern(9, 16 * MIB as usize);
    ng.put("d.img", &data);
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = serve_mirror(&store, &ng, &[]);
    let url = format!("{}/m/o/d.img", serve.base);
    // miss (starts the fill) and coalesced (joins it), at once.
    let a = curl(&["-o", "/dev/null", &url]).spawn().expect("curl");
    std::thread::sleep(Duration::from_millis(300));
    let b = curl(&["-o", "/dev/null", &url]).spawn().expect("curl");
    for mut c in [a, b] {
        assert!(c.wait().expect("curl").success());
    }
    // hit (once the fill has finished: it checks the root after the last
    // byte went out), and an error (unknown mirror).
    let deadline = Instant::now() + STEP;
    loop {
        let status = curl(&[&format!("{}/status", serve.base)])
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
        let complete = v["objects"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["state"] == "complete"));
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "d.img did not complete: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(curl(&["-o", "/dev/null", "-r", "0-99", &url])
        .status()
        .expect("curl")
        .success());
    let _ = curl(&["-o", "/dev/null", &format!("{}/m/nope/x", serve.base)]).status();
    // partial: another process fills, serve follows.
    ng.put("e.img", &pattern(10, 8 * MIB as usize));
    let mut fetch = Command::new(BIN)
        .env_remove("BLOCKCACHE_STORE")
        .args([
            "-q",
            "--store",
            store.to_str().expect("p"),
            "fetch",
            "--limit-rate",
            "1M",
        ])
        .arg(ng.url("e.img"))
        .stdout(Stdio::null())
        .spawn()
        .expect("fetch");
    let deadline = Instant::now() + STEP;
    while !store
        .join("objects")
        .read_dir()
        .is_ok_and(|d| d.count() >= 2)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let e = curl(&[
        "-o",
        "/dev/null",
        "-r",
        "0-999",
        &format!("{}/m/o/e.img", serve.base),
    ])
    .status()
    .expect("curl");
    assert!(e.success());
    let _ = fetch.kill();
    let _ = fetch.wait();

    let metrics = curl(&[&format!("{}/metrics", serve.base)])
        .output()
        .expect("curl");
    let raw = serve.stderr_lines();
    // The whole shape of one line, as the access module documents it.
    let hit = raw
        .iter()
        .find(|l| l.contains("\"GET /m/o/d.img HTTP/1.1\" 206 100 "))
        .expect("the ranged hit is logged");
    assert!(hit.starts_with("127.0.0.1 - - ["), "{hit}");
    assert!(hit.contains(" +0000] \"GET "), "{hit}");
    assert!(hit.contains(" 206 100 \"-\" \"curl/"), "{hit}");
    assert!(hit.contains("\" range=\"bytes=0-99\" duration="), "{hit}");
    assert!(hit.ends_with(" cache=hit mirror=o"), "{hit}");
    for key in ["duration=", "ttfb="] {
        let v = hit.split(key).nth(1).and_then(|r| r.split(' ').next());
        let (secs, frac) = v.and_then(|v| v.split_once('.')).expect("seconds");
        assert!(
            secs.parse::<u64>().is_ok() && frac.len() == 6 && frac.parse::<u32>().is_ok(),
            "{key} has six decimals: {hit}"
        );
    }
    let lines: Vec<_> = raw.into_iter().filter_map(|l| combined(&l)).collect();
    let cache_of = |path: &str, status: u16| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.0 == path && l.1 == status)
            .map(|l| l.3.clone())
            .collect()
    };
    let full = cache_of("/m/o/d.img", 200);
    assert!(
        full.contains(&"miss".to_owned()) && full.contains(&"coalesced".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.0 == "/m/o/d.img" && l.1 == 206 && l.2 == 100 && l.3 == "hit"),
        "{lines:?}"
    );
    assert_eq!(cache_of("/m/nope/x", 404), ["error"], "{lines:?}");
    assert_eq!(cache_of("/m/o/e.img", 206), ["partial"], "{lines:?}");

    // A real Prometheus parser reads /metrics, and the counters moved.
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
v = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "".join(sorted(f"|{k}={x}" for k, x in s.labels.items()))
        v[key] = s.value
print(v.get("blockcache_http_requests_total|mirror=o|result=miss|status=200", 0))
print(v.get("blockcache_http_response_bytes_total|mirror=o", 0))
print(v.get("blockcache_upstream_bytes_total", 0))
print(v.get("blockcache_http_request_duration_seconds_count", 0))
print(v.get("blockcache_upstream_requests_total|mirror=o|status=2xx", 0))
print(v.get("blockcache_http_requests_total|mirror=o|result=coalesced|status=200", 0))
print(v.get("blockcache_http_requests_total|mirror=o|result=hit|status=206", 0))
print(v.get("blockcache_http_requests_total|mirror=o|result=partial|status=206", 0))
print(v.get("blockcache_http_requests_total|mirror=|result=error|status=404", 0))
print(v.get("blockcache_http_time_to_first_byte_seconds_count", 0))
print(v.get("blockcache_chunk_verify_failures_total", -1))
print(v.get("blockcache_upstream_retries_total", -1))
print(v.get("blockcache_evictions_total", -1))
print(v.get("blockcache_fills_in_progress", -1))
"#;
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(py.stdin.as_mut().expect("stdin"), &metrics.stdout).expect("pipe");
    let py = py.wait_with_output().expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let nums: Vec<f64> = String::from_utf8_lossy(&py.stdout)
        .lines()
        .map(|l| l.parse().expect("number"))
        .collect();
    assert_eq!(nums[0], 1.0, "one miss");
    assert!(
        nums[1] >= 2.0 * data.len() as f64,
        "response bytes {}",
        nums[1]
    );
    assert!(nums[2] >= data.len() as f64, "upstream bytes {}", nums[2]);
    assert!(nums[3] >= 4.0, "request durations {}", nums[3]);
    assert!(nums[4] >= 1.0, "upstream requests {}", nums[4]);
    assert_eq!(nums[5], 1.0, "one coalesced");
    assert!(nums[6] >= 1.0, "hit 206 {}", nums[6]);
    assert_eq!(nums[7], 1.0, "one partial");
    assert_eq!(
        nums[8], 1.0,
        "one error, under no mirror label (unknown names add no series)"
    );
    assert_eq!(nums[9], nums[3], "a time to first byte per request");
    assert_eq!(nums[10], 0.0, "no chunk failed its check");
    assert_eq!(nums[11], 0.0, "no retries against a healthy origin");
    assert_eq!(nums[12], 0.0, "no limit, no eviction");
    assert!(nums[13] >= 0.0, "fills in progress is exported");

    // The store gauges are refreshed off the request path (every 5 s):
    // they reach the two objects, d.img complete.
    let deadline = Instant::now() + STEP;
    loop {
        let m = curl(&[&format!("{}/metrics", serve.base)])
            .output()
            .expect("curl");
        let m = String::from_utf8_lossy(&m.stdout).to_string();
        let value = |name: &str| -> f64 {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let complete = value("blockcache_store_objects{state=\"complete\"}");
        let bytes = value("blockcache_store_bytes ");
        if complete >= 1.0 && bytes >= data.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store gauges never showed d.img: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn max_size_evicts_lru_and_never_an_image_being_read() {
    // Images larger than every buffer between serve and a stalled client
    // (pipe, socket buffers: ~10 MiB on loopback), so that a reader that
    // stops reading keeps serve reading the object.
    let ng = origin(Some("16m"));
    let n = 16 * MIB as usize;
    for (i, name) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        ng.put(name, &pattern(20 + i as u64, n));
    }
    ng.put("huge.img", &pattern(30, 26 * MIB as usize));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = serve_mirror(&store, &ng, &["--max-size", "24M", "--access-log", "off"]);
    let get = |name: &str| {
        curl(&[&format!("{}/m/o/{name}", serve.base)])
            .output()
            .expect("curl")
    };
    let store_bytes = || -> u64 {
        let out = Command::new(BIN)
            .env_remove("BLOCKCACHE_STORE")
            .args(["--store", store.to_str().expect("p"), "ls", "--json"])
            .output()
            .expect("ls");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array()
            .map(|a| a.iter().filter_map(|o| o["bytes_done"].as_u64()).sum())
            .unwrap_or(0)
    };
    // Each image fits; two do not: each fetch evicts the one before.
    for (i, name) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        assert!(get(name).stdout == pattern(20 + i as u64, n), "{name}");
        assert!(store_bytes() <= 24 * MIB, "{} bytes stored", store_bytes());
    }
    // An image being read is not evicted: a reader of c.img that stalls
    // (nobody empties its stdout pipe) holds it while a.img is asked for
    // again; a.img cannot fit, so it gets 507.
    let mut slow = curl(&[&format!("{}/m/o/c.img", serve.base)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/m/o/a.img", serve.base),
    ])
    .output()
    .expect("curl");
    assert_eq!(String::from_utf8_lossy(&code.stdout), "507");
    let mut body = Vec::new();
    slow.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut body)
        .expect("read c.img");
    assert!(
        slow.wait().expect("curl").success(),
        "the reader of c.img finished"
    );
    assert!(
        body == pattern(22, n),
        "c.img read whole while a.img waited"
    );
    // Larger than the limit: 507 with a clear reason.
    let o = curl(&[
        "-w",
        "%{http_code}",
        &format!("{}/m/o/huge.img", serve.base),
    ])
    .output()
    .expect("curl");
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.ends_with("507") && body.contains("larger than the size limit"),
        "{body}"
    );
    let m = curl(&[&format!("{}/metrics", serve.base)])
        .output()
        .expect("curl");
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(
        m.lines()
            .any(|l| l.starts_with("blockcache_evictions_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    // The status page shows the limit with the store totals.
    let status = curl(&[&format!("{}/status", serve.base)])
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["store"]["max_bytes"], 24 * MIB, "{v}");
}

/// How many complete objects in `store` have a source ending in `name`.
fn complete_named(store: &Path, name: &str) -> usize {
    let out = Command::new(BIN)
        .env_remove("BLOCKCACHE_STORE")
        .args(["--store", store.to_str().expect("p"), "ls", "--json"])
        .output()
        .expect("ls");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|o| {
                    o["state"] == "complete"
                        && o["source"].as_str().is_some_and(|s| s.ends_with(name))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A fill that cannot fit even after evicting every object nobody uses is
/// refused before anything is evicted: a 507 never costs the store the
/// objects it would have displaced.
#[test]
fn a_fill_that_cannot_fit_evicts_nothing() {
    let ng = origin(Some("16m"));
    let n = 16 * MIB as usize;
    ng.put("a.img", &pattern(40, n));
    ng.put("c.img", &pattern(42, n));
    ng.put("d.img", &pattern(43, 26 * MIB as usize));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = serve_mirror(&store, &ng, &["--max-size", "40M", "--access-log", "off"]);
    let url = |name: &str| format!("{}/m/o/{name}", serve.base);
    for name in ["a.img", "c.img"] {
        let o = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url(name)])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{name}");
    }
    assert_eq!(complete_named(&store, "a.img"), 1);
    // c.img is held by a reader that stalls; d.img (26 MiB) needs 26 MiB
    // of the 40: evicting a.img (16 of the 32 stored) is not enough.
    let mut slow = curl(&[&url("c.img")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    let o = curl(&["-w", "%{http_code}", &url("d.img")])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(body.ends_with("507"), "{body}");
    assert_eq!(
        complete_named(&store, "a.img"),
        1,
        "a refused fill evicted a.img all the same"
    );
    let mut rest = Vec::new();
    slow.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut rest)
        .expect("read c.img");
    assert!(slow.wait().expect("curl").success());
    // a.img is still served from the store: the origin is not asked again.
    let before = ng.access_log().len();
    let o = curl(&[&url("a.img")]).output().expect("curl");
    assert!(o.stdout == pattern(40, n), "a.img served whole");
    let sent: u64 = ng.access_log()[before..]
        .iter()
        .map(|l| l.body_bytes_sent)
        .sum();
    assert!(sent < MIB, "a.img was fetched again: {sent} bytes");
}

/// A burst of `/status` requests answers from one listing of the store:
/// no index is read per request (the listing is logged at debug level on
/// `blockcache::status`).
#[test]
fn a_burst_of_status_requests_lists_the_store_once_per_interval() {
    let ng = origin(None);
    ng.put("s.img", &pattern(50, 2 * MIB as usize));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = serve_mirror_with(
        &store,
        &ng,
        &["--access-log", "off"],
        &[("RUST_LOG", "warn,blockcache::status=debug")],
    );
    let o = curl(&[&format!("{}/m/o/s.img", serve.base)])
        .output()
        .expect("curl");
    assert_eq!(o.stdout.len(), 2 * MIB as usize);
    let started = Instant::now();
    let requests = 40;
    for _ in 0..requests {
        let o = curl(&[&format!("{}/status", serve.base)])
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
        assert_eq!(v["objects"][0]["name"], "s.img", "{v}");
    }
    let elapsed = started.elapsed();
    let listings = serve
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("listed the store"))
        .count();
    // At most one listing per LIST_EVERY (2 s) of the burst, plus the
    // first one and one for the interval the burst ends in.
    let bound = 2 + (elapsed.as_secs_f64() / 2.0).ceil() as usize;
    assert!(listings >= 1, "no listing logged (is the target right?)");
    assert!(
        listings <= bound && listings < requests,
        "{listings} listings for {requests} requests in {elapsed:?}"
    );
}
