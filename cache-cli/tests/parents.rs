//! Manifests and parent caches with real processes: `blockcache serve` as
//! the parent (a mirror of a real nginx), `blockcache fetch --parent` as the
//! child, a byte-flipping proxy as a lying parent. Bounded waits only.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cache_core::Manifest;
use support::relay::{relay, Gate, Relay};
use support::*;

#[test]
fn manifest_endpoint_and_cli_give_the_same_verified_bytes() {
    let len = 5 * MIB + 7;
    let (ng, _data, want) = origin(None, len, 31);
    let (t, store) = store_dir();
    let mut f = bc(&store);
    f.args(["-q", "fetch", &ng.url("disk.img")]);
    assert_eq!(last_line(&ok(&run(f)).into_bytes()), want);

    let file = t.path().join("disk.manifest");
    let mut m = bc(&store);
    m.args(["manifest", &want[..8], "-o"]).arg(&file);
    let o = run(m);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("6 chunks"));
    let bytes = std::fs::read(&file).expect("manifest written");
    let manifest = Manifest::decode(&bytes).expect("decodes");
    let root = blake3::Hash::from_hex(&want).unwrap();
    manifest.verify_root(&root).expect("merges to the name");
    assert_eq!(manifest.len(), len as u64);

    let (_server, addr) = start_serve(&store, &["--mirror", &format!("img={}", ng.url(""))]);
    let (status, head, body) = http_get(&addr, &format!("/blobs/{want}/manifest"), None);
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, bytes, "endpoint and CLI give the same manifest");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("immutable"), "{head}");
    assert!(
        head.contains(&format!("etag: \"{want}.manifest.1048576\"")),
        "{head}"
    );
    let other = "0".repeat(64);
    let (status, _, _) = http_get(&addr, &format!("/blobs/{other}/manifest"), None);
    assert_eq!(status, 404);
    // The parent route serves only URLs under a configured mirror.
    let (status, _, body) = http_get(&addr, "/u?url=http%3A%2F%2Fexample.com%2Fx", None);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // Another port of the same host is not under the mirror either.
    let other_port = "http://127.0.0.1:1/disk.img";
    let query = format!(
        "/u?url={}",
        other_port.replace(':', "%3A").replace('/', "%2F")
    );
    assert_eq!(http_get(&addr, &query, None).0, 403);
    let (status, _, metrics) = http_get(&addr, "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&metrics).contains("blockcache_chunk_verify_failures_total 0\n")
    );
    // A manifest on a terminal-less stdout works too; a bad reference is one line.
    let mut m = bc(&store);
    m.args(["manifest", "ffff"]);
    let o = run(m);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Serves `base`'s `disk.img` through a parent `blockcache serve` and
/// starts its download with a one-byte read.
fn parent_of(base: &str) -> (tempfile::TempDir, std::path::PathBuf, Bg, String) {
    let (t, store) = store_dir();
    let (server, addr) = start_serve(&store, &["--mirror", &format!("img={base}")]);
    let (status, _, _) = http_get(&addr, "/m/img/disk.img", Some("0-0"));
    assert_eq!(status, 206);
    (t, store, server, addr)
}

#[test]
fn a_child_fetches_from_a_parent_still_downloading_and_the_origin_sends_the_image_once() {
    let len = 256 * MIB;
    let (ng, data, want) = origin(Some("16m"), len, 32);
    // Parent and child reach the origin through a gate: each connection
    // passes 16 MiB, then waits until the child has started. So the
    // parent is certainly still downloading when the child starts (it
    // cannot hold more than its 8 connections x 16 MiB before that).
    let gate = Gate::new();
    let port = relay(
        ng.port(),
        Relay {
            hold_after: Some((16 * MIB, gate.clone())),
            ..Relay::default()
        },
    );
    let base = format!("http://127.0.0.1:{port}/");
    let url = format!("{base}disk.img");
    let (_pt, parent_store, _parent, parent) = parent_of(&base);
    wait_bytes_done(&parent_store, 8 * MIB as u64);
    assert!(
        bytes_done(&parent_store) < len as u64,
        "the parent is still downloading when the child starts"
    );
    let (t, store) = store_dir();
    let out = t.path().join("disk.img");
    let mut c = bc(&store);
    c.args([
        "fetch",
        &url,
        "--parent",
        &format!("http://{parent}/"),
        "-o",
    ])
    .arg(&out);
    let child = spawn(c);
    // The child reads the parent's chunks; then the parent may go on.
    wait_bytes_done(&store, MIB as u64);
    assert!(
        bytes_done(&parent_store) < len as u64,
        "the parent was held at the gate"
    );
    gate.open();
    let o = finish(child);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(last_line(&ok(&o).into_bytes()), want);
    assert!(std::fs::read(&out).expect("written") == data);
    let log = settled_log(&ng);
    assert_eq!(
        fill_bytes(&log),
        len as u64,
        "the origin sent the image exactly once (1.00x); child: {stderr}; origin log: {:?}",
        log.iter()
            .map(|l| (&l.range, l.body_bytes_sent))
            .collect::<Vec<_>>()
    );
    // The child's bytes came from the parent. A request is counted once
    // its answer is sent, a moment after the child read the last byte:
    // read until it is (bounded).
    let served = || {
        let (_, _, metrics) = http_get(&parent, "/metrics", None);
        String::from_utf8_lossy(&metrics)
            .lines()
            .filter(|l| l.starts_with("blockcache_http_response_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut got = served();
    while got < len as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        got = served();
    }
    assert!(got >= len as u64, "parent served {got} bytes");
}

/// A proxy in front of a parent that flips one byte at object offset
/// `flip_at` in every `/blobs/<h>` body passing it (not in manifests, not
/// in `/u` answers): a parent whose stored copy went bad. One request per
/// connection.
struct LyingProxy {
    addr: String,
    flipped: Arc<AtomicU64>,
}

fn lying_proxy(upstream: String, flip_at: u64) -> LyingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().unwrap().to_string();
    let flipped = Arc::new(AtomicU64::new(0));
    let count = flipped.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (up, count) = (upstream.clone(), count.clone());
            std::thread::spawn(move || {
                let _ = lie_relay(client, &up, flip_at, &count);
            });
        }
    });
    LyingProxy { addr, flipped }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(p + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&byte[..n]);
    }
}

fn lie_relay(
    mut client: TcpStream,
    upstream: &str,
    flip_at: u64,
    count: &AtomicU64,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(STEP))?;
    let (head, _) = read_head(&mut client)?;
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(STEP))?;
    write!(up, "{head}Connection: close\r\n\r\n")?;
    let (resp_head, mut body) = read_head(&mut up)?;
    up.read_to_end(&mut body)?;
    let lying = path.starts_with("/blobs/") && !path.ends_with("/manifest");
    let start = resp_head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            let v = l.strip_prefix("content-range: bytes ")?;
            v.split('-').next()?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    if lying && flip_at >= start && flip_at < start + body.len() as u64 {
        body[(flip_at - start) as usize] ^= 0x01;
        count.fetch_add(1, Ordering::SeqCst);
    }
    client.write_all(resp_head.as_bytes())?;
    client.write_all(&body)?;
    client.flush()
}

#[test]
fn a_lying_parent_is_caught_at_the_chunk_when_the_root_is_known() {
    let len = 24 * MIB + 5;
    let (ng, data, want) = origin(None, len, 33);
    let url = ng.url("disk.img");
    let (_pt, parent_store, _parent, parent) = parent_of(&ng.url(""));
    wait_bytes_done(&parent_store, len as u64);
    let origin_before = fill_bytes(&settled_log(&ng));
    assert_eq!(origin_before, len as u64);
    // Chunk 5 of the parent's copy is wrong on the wire.
    let proxy = lying_proxy(parent, 5 * MIB as u64 + 1000);

    let (t, store) = store_dir();
    let out = t.path().join("disk.img");
    let mut c = bc(&store);
    c.args(["fetch", &url, "--blake3", &want, "-o"]).arg(&out);
    c.env("BLOCKCACHE_PARENTS", format!("http://{}/", proxy.addr));
    let o = run(c);
    let stdout = ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(last_line(stdout.as_bytes()), want, "{stderr}");
    assert!(std::fs::read(&out).expect("written") == data);
    assert!(proxy.flipped.load(Ordering::SeqCst) >= 1, "the proxy lied");
    assert!(
        stderr.contains("chunk 5 of object") && stderr.contains("does not match its manifest"),
        "the bad chunk is named: {stderr}"
    );
    assert!(stderr.contains("refused 1 chunk(s)"), "{stderr}");
    // Refetched from the next source (the same parent by URL, which the
    // proxy passes unchanged): the origin sent nothing more.
    assert_eq!(fill_bytes(&settled_log(&ng)), origin_before);
    // Nothing bad was stored.
    let mut v = bc(&store);
    v.args(["verify", &want]);
    let verified = ok(&run(v));
    assert!(verified.contains("ok"), "{verified}");
}

#[test]
fn a_parent_that_is_down_falls_through_to_the_origin_and_a_bad_one_is_a_usage_error() {
    let len = 3 * MIB + 1;
    let (ng, _data, want) = origin(None, len, 34);
    let url = ng.url("disk.img");
    // Nothing listens on port 1: refused at once.
    let (_t, store) = store_dir();
    let mut c = bc(&store);
    c.args([
        "-q",
        "fetch",
        &url,
        "--blake3",
        &want,
        "--parent",
        "http://127.0.0.1:1/",
    ]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    assert_eq!(fill_bytes(&settled_log(&ng)), len as u64);

    let (_t2, store2) = store_dir();
    let mut c = bc(&store2);
    c.args(["fetch", &url]);
    c.env("BLOCKCACHE_PARENTS", "ftp://parent.example/");
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--parent \"ftp://parent.example/\""),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_serve_with_a_parent_fills_its_mirror_from_the_parent() {
    let len = 40 * MIB + 3;
    let (ng, data, want) = origin(Some("8m"), len, 35);
    let base = format!("img={}", ng.url(""));
    let (_pt, parent_store) = store_dir();
    let (_parent, parent) = start_serve(&parent_store, &["--mirror", &base]);
    let (_ct, child_store) = store_dir();
    let parent_url = format!("http://{parent}/");
    let (_child, child) = start_serve(&child_store, &["--mirror", &base, "--parent", &parent_url]);
    // A client of the child; neither cache has the image yet.
    let (status, head, body) = http_get(&child, "/m/img/disk.img", None);
    assert_eq!(status, 200, "{head}");
    assert!(body == data, "the right bytes");
    // The parent completes its own fill after its last commit (a final
    // flush, the digests, the names): the child may have read the last
    // bytes just before. Bounded wait for the object to be there by hash.
    let deadline = std::time::Instant::now() + STEP;
    let blob = loop {
        let (status, head, blob) = http_get(&parent, &format!("/blobs/{want}"), Some("0-9"));
        if status == 206 {
            break blob;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the parent never completed: {status} {head}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(blob, &data[..10], "the parent holds it too");
    assert_eq!(
        fill_bytes(&settled_log(&ng)),
        len as u64,
        "the origin sent the image once for both caches"
    );
}
