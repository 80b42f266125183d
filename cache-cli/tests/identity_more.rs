//! The rest of issue 9, with the real binary against real nginx origins:
//! failures that cannot heal end after at most one quick retry (a host
//! that does not exist, an https:// URL on a plain-HTTP port among them), `serve --mirror-header` reaches the
//! origin (with the client's query under `pass_query`) and its value is
//! shown nowhere, a SHA-256 mismatch never becomes a name, and evicting or
//! removing one of two shared copies keeps every name of the other.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::nginx::{Nginx, NginxOptions};
use support::*;

/// A generous bound on a failure that must end "at once" (≤ 3 s; the
/// default retry budget would take minutes). The proof that it ends at once
/// is structural — how many attempts it made — not this bound.
const FAST_BOUND: Duration = Duration::from_secs(20);

/// A fetch that must fail without its retry budget: exit 3, one line
/// naming `what` with a hint, after at most one (quick) retry.
fn assert_unhealable(o: &std::process::Output, what: &str, retries: u32) {
    let (code, err) = code_and_err(o);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(what), "names {what:?}: {err}");
    assert!(err.contains("; hint: "), "has a hint: {err}");
    if retries == 0 {
        assert!(!err.contains("retries)"), "not retried: {err}");
    } else {
        assert!(
            err.contains(&format!("(after {retries} retries)")),
            "{retries} retries: {err}"
        );
    }
}

fn fetch_within(store: &Path, args: &[&str], bound: Duration) -> std::process::Output {
    let mut c = bc(store);
    c.arg("fetch").args(args);
    finish_within(spawn(c), bound)
}

#[test]
fn a_host_that_does_not_resolve_fails_at_once_in_one_line() {
    let (_t, store) = store_dir();
    let o = fetch_within(&store, &["http://no-such-host.invalid/x"], FAST_BOUND);
    let (code, err) = code_and_err(&o);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("no-such-host.invalid"),
        "names the host: {err}"
    );
    assert!(err.contains("; hint: "), "has a hint: {err}");
    // A resolver that says "no such name" ends it at the first attempt; a
    // machine without any DNS answer gets one quick retry. Never the
    // default budget of 8.
    if err.contains("no such host") {
        assert!(!err.contains("retries)"), "not retried: {err}");
    } else {
        assert!(err.contains("cannot resolve host"), "{err}");
        assert!(err.contains("(after 1 retries)"), "{err}");
    }
}

#[test]
fn https_to_a_plain_http_port_fails_at_once() {
    let (ng, _data, _want) = origin(None, 1000, 95);
    let (_t, store) = store_dir();
    let url = format!("https://127.0.0.1:{}/disk.img", ng.port());
    let o = fetch_within(&store, &[&url], FAST_BOUND);
    assert_unhealable(&o, "does not answer in TLS", 0);
    assert!(code_and_err(&o).1.contains("https://"), "the hint says why");
}

#[test]
fn client_errors_end_at_once_but_429_is_retried() {
    let ng = Nginx::start_configured(
        NginxOptions::default(),
        "location /forbidden/ { return 403; }\n\
         location /gone/ { return 410; }\n\
         location /busy/ { return 429; }",
    );
    let (_t, store) = store_dir();
    for (path, what, requests) in [
        ("forbidden/disk.img", "HTTP 403", 1),
        ("gone/disk.img", "HTTP 410", 1),
    ] {
        let before = ng.access_log().len();
        let o = fetch_within(&store, &[&ng.url(path), "--retry", "3"], FAST_BOUND);
        assert_unhealable(&o, what, 0);
        let log = settled_log(&ng);
        assert_eq!(
            log.len() - before,
            requests,
            "{path}: {:#?}",
            &log[before..]
        );
    }
    // (nginx answers no 408: it closes the connection instead.)
    let before = ng.access_log().len();
    let o = fetch_within(&store, &[&ng.url("busy/disk.img"), "--retry", "1"], STEP);
    let (code, err) = code_and_err(&o);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("HTTP 429") && err.contains("(after 1 retries)"),
        "{err}"
    );
    let log = settled_log(&ng);
    assert_eq!(log.len() - before, 2, "429 retried: {:#?}", &log[before..]);
}

const MIRROR_SECRET: &str = "mh-secret-7Rk2pQ";

/// One line of the origin's secret-revealing log: `$request_method
/// $request_uri $status "$http_x_token"`.
fn token_log(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (head, token) = l.split_once(" \"")?;
            let mut it = head.split(' ');
            Some((
                it.next()?.to_owned(),
                it.next()?.to_owned(),
                token.trim_end_matches('"').to_owned(),
            ))
        })
        .collect()
}

/// What `/events` sends within `bound` (it never ends by itself).
fn events_for(addr: &str, bound: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to serve");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < deadline && got.len() < (4 << 20) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                if !got.is_empty() {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn mirror_header_and_query_reach_the_origin_and_the_secret_stays_hidden() {
    let t = tempfile::tempdir().expect("temp dir");
    // A second server on its own port logs what reaches it: the request
    // URI with its query, and the header (nginx defines `log_format` only
    // at http level, so the template's server block is closed first).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let extra = format!(
        "}}\n    log_format tok '$request_method $request_uri $status \"$http_x_token\"';\n    \
         server {{\n        listen 127.0.0.1:{port};\n        root @ROOT@;\n        \
         access_log @DIR@/token.log tok;"
    );
    let ng = Nginx::start_configured(NginxOptions::default(), &extra);
    let data = pattern(91, 3 * MIB + 11);
    ng.put("disk.img", &data);
    let origin = format!("http://127.0.0.1:{port}/");
    let token_log_path = ng.root().parent().expect("nginx dir").join("token.log");
    let store = t.path().join("store");
    let access = t.path().join("access.log");
    let conf = t.path().join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "access_log = \"{}\"\n\n[mirrors.q]\nurl = \"{origin}\"\npass_query = true\n\n\
             [mirrors.p]\nurl = \"{origin}\"\n",
            access.display()
        ),
    )
    .expect("config");
    let stderr_path = t.path().join("serve.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let header = format!("q=X-Token: {MIRROR_SECRET}");
    let header_p = format!("p=X-Token: {MIRROR_SECRET}");
    let (mut serve, addr) = start_serve_with(
        &store,
        &[
            "-vvv",
            "--config",
            conf.to_str().expect("utf-8"),
            "--mirror-header",
            &header,
            "--mirror-header",
            &header_p,
        ],
        stderr,
    );

    let (status, _, body) = http_get(&addr, "/m/q/disk.img?sig=abc123&e=9", None);
    assert_eq!(status, 200);
    assert!(body == data, "the image through the pass_query mirror");
    let (status, _, body) = http_get(&addr, "/m/p/disk.img?sig=zzz987", None);
    assert_eq!(status, 200);
    assert!(body == data, "the image through the plain mirror");

    // What the origin saw: every request carries the header; the query of
    // the pass_query mirror's client went along, the other one's did not.
    let deadline = Instant::now() + STEP;
    let seen = loop {
        let seen = token_log(&token_log_path);
        let both = ["/disk.img", "/disk.img?sig=abc123&e=9"]
            .iter()
            .all(|u| seen.iter().any(|(_, s, _)| s == u));
        if both || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!seen.is_empty(), "the origin was asked");
    for (method, uri, token) in &seen {
        assert_eq!(token, MIRROR_SECRET, "{method} {uri}: header reached it");
        assert!(
            uri == "/disk.img?sig=abc123&e=9" || uri == "/disk.img",
            "{method} {uri}"
        );
    }
    assert!(
        seen.iter().any(|(_, u, _)| u == "/disk.img?sig=abc123&e=9"),
        "the client's query reached the origin: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, u, _)| u == "/disk.img"),
        "the plain mirror asked without the query: {seen:?}"
    );

    // The value is shown nowhere: /status, /metrics, /events, the access
    // log, stderr at -vvv, any file under the store.
    let mut shown = String::new();
    for path in ["/status", "/metrics"] {
        let (status, head, body) = http_get(&addr, path, None);
        assert_eq!(status, 200, "{path}: {head}");
        shown += &String::from_utf8_lossy(&body);
    }
    assert!(shown.contains("disk.img"), "/status lists the object");
    let events = events_for(&addr, Duration::from_secs(5));
    assert!(events.contains("data:"), "an event arrived: {events}");
    shown += &events;
    serve.kill();
    let log = std::fs::read_to_string(&access).expect("access log");
    assert!(log.contains("/m/q/disk.img"), "the access log has lines");
    shown += &log;
    let err = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(err.contains("TRACE"), "trace logging was on");
    shown += &err;
    assert!(!shown.contains(MIRROR_SECRET), "secret shown");
    assert_no_secret_in_files(&store, &[MIRROR_SECRET]);
}

/// A `/blobs/...` status of the store's `serve`.
fn blob_status(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http_get(addr, path, None);
    (status, body)
}

#[test]
fn a_sha256_mismatch_never_names_the_object() {
    let ng = Nginx::start();
    let data = pattern(92, 2 * MIB + 5);
    let file = ng.put("disk.img", &data);
    let real = sum_of("sha256sum", &file);
    let want = blake3::hash(&data).to_hex().to_string();
    let wrong = {
        let mut w = real.clone();
        let last = w.pop().expect("hex");
        w.push(if last == 'f' { 'e' } else { 'f' });
        w
    };
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url, "--sha256", &wrong]);
    let (code, err) = code_and_err(&run(c));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains(&wrong) && err.contains(&real), "{err}");

    // No reference names it by the wrong value.
    for r in [
        format!("sha256:{wrong}"),
        wrong.clone(),
        wrong[..12].to_owned(),
    ] {
        let mut c = bc(&store);
        c.args(["cat", &r]);
        let (code, err) = code_and_err(&run(c));
        assert_eq!(code, Some(2), "cat {r}: {err}");
    }
    let (_server, addr) = start_serve(&store, &[]);
    for path in [format!("/blobs/sha256/{wrong}"), format!("/blobs/{wrong}")] {
        assert_eq!(blob_status(&addr, &path).0, 404, "{path}");
    }
    // Its real names serve it.
    for path in [format!("/blobs/sha256/{real}"), format!("/blobs/{want}")] {
        let (status, body) = blob_status(&addr, &path);
        assert_eq!(status, 200, "{path}");
        assert!(body == data, "{path}");
    }
}

/// Every alias file of the store (BLAKE3, SHA-256, SHA-512 names).
fn alias_files(store: &Path) -> Vec<std::path::PathBuf> {
    let objects = store.join("objects");
    files_under(store)
        .into_iter()
        .filter(|p| !p.starts_with(&objects) && !p.starts_with(store.join("tmp")))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() >= 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect()
}

/// Fetches the same bytes from `a.img` and `b.img`: the origin, the bytes,
/// their BLAKE3 and SHA-256.
fn two_copies(store: &Path, seed: u64) -> (Nginx, Vec<u8>, String, String) {
    let ng = Nginx::start();
    let data = pattern(seed, 2 * MIB + 99);
    ng.put("a.img", &data);
    let file = ng.put("b.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    let sha = sum_of("sha256sum", &file);
    for name in ["a.img", "b.img"] {
        let mut c = bc(store);
        c.args(["-q", "fetch", &ng.url(name)]);
        assert_eq!(last_line(ok(&run(c)).as_bytes()), want);
        // Distinct last-used times: the eviction order is a's, then b's.
        std::thread::sleep(Duration::from_millis(1100));
    }
    (ng, data, want, sha)
}

/// Every name of the bytes works: the left URL, `cat <blake3>`,
/// `cat sha256:<hex>`, `/blobs/<blake3>` and `/blobs/sha256/<hex>`.
fn assert_every_name_works(store: &Path, url: &str, data: &[u8], want: &str, sha: &str) {
    for r in [url.to_owned(), want.to_owned(), format!("sha256:{sha}")] {
        let mut c = bc(store);
        c.args(["cat", &r]);
        let o = run(c);
        ok(&o);
        assert!(o.stdout == data, "cat {r}");
    }
    let (mut server, addr) = start_serve(store, &[]);
    for path in [format!("/blobs/{want}"), format!("/blobs/sha256/{sha}")] {
        let (status, body) = blob_status(&addr, &path);
        assert_eq!(status, 200, "{path}");
        assert!(body == data, "{path}");
    }
    server.kill(); // it holds the object open: eviction would skip it
}

/// No copy left: no name resolves and no alias file is left behind.
fn assert_nothing_dangles(store: &Path, want: &str, sha: &str) {
    assert!(ls_json(store).is_empty(), "{:#?}", ls_json(store));
    for r in [want.to_owned(), format!("sha256:{sha}")] {
        let mut c = bc(store);
        c.args(["cat", &r]);
        assert_eq!(run(c).status.code(), Some(2), "cat {r}: no copy left");
    }
    assert_eq!(alias_files(store), Vec::<std::path::PathBuf>::new());
    let data_files: Vec<_> = files_under(store)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("data-"))
        })
        .collect();
    assert!(data_files.is_empty(), "{data_files:?}");
    let (_server, addr) = start_serve(store, &[]);
    for path in [format!("/blobs/{want}"), format!("/blobs/sha256/{sha}")] {
        assert_eq!(blob_status(&addr, &path).0, 404, "{path}");
    }
}

#[test]
fn gc_of_one_of_two_shared_copies_keeps_every_name() {
    let (_t, store) = store_dir();
    let (ng, data, want, sha) = two_copies(&store, 93);
    assert!(!alias_files(&store).is_empty(), "names were written");
    // A limit one byte under the total: exactly one object goes.
    let total: u64 = ls_json(&store)
        .iter()
        .map(|o| o["disk_bytes"].as_u64().expect("disk_bytes"))
        .sum();
    let mut c = bc(&store);
    c.args(["gc", "--max-size", &(total - 1).to_string()]);
    ok(&run(c));
    let left = ls_json(&store);
    assert_eq!(left.len(), 1, "one evicted: {left:#?}");
    assert_eq!(
        left[0]["source"],
        ng.url("b.img"),
        "the least recently used went"
    );
    assert_every_name_works(&store, &ng.url("b.img"), &data, &want, &sha);
    // Both gone: nothing dangles.
    let mut c = bc(&store);
    c.args(["gc", "--max-size", "0"]);
    ok(&run(c));
    assert_nothing_dangles(&store, &want, &sha);
}

#[test]
fn rm_of_one_of_two_shared_copies_keeps_every_name() {
    let (_t, store) = store_dir();
    let (ng, data, want, sha) = two_copies(&store, 94);
    let mut c = bc(&store);
    c.args(["rm", &ng.url("a.img")]);
    ok(&run(c));
    assert_every_name_works(&store, &ng.url("b.img"), &data, &want, &sha);
    let mut c = bc(&store);
    c.args(["rm", &ng.url("b.img")]);
    ok(&run(c));
    assert_nothing_dangles(&store, &want, &sha);
}
