//! `blockcache serve --shared` with real parts: SeaweedFS as the bucket,
//! nginx as the origin, `serve` processes (each with its own store) as
//! the nodes, plain HTTP clients reading mirrored images through them.
//! Origin bytes are counted from nginx's access log. Bounded waits only.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::relay::black_hole;
use support::seaweed::{aws_env, Seaweed};
use support::*;

const BUCKET: &str = "fleet";

/// A running `serve --shared` node and its stderr so far.
struct Node {
    _server: Bg,
    addr: String,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Node {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let (status, head, body) = http_get(&self.addr, path, None);
        assert_eq!(status, 200, "{head}\n{}", self.stderr());
        body
    }

    fn metric(&self, name: &str) -> u64 {
        let text = String::from_utf8_lossy(&self.get("/metrics")).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Waits (bounded) until `name` on /metrics reaches `n`.
    fn wait_metric(&self, name: &str, n: u64) {
        let deadline = Instant::now() + STEP;
        while self.metric(name) < n {
            assert!(
                Instant::now() < deadline,
                "{name} did not reach {n}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `serve --shared s3://fleet/ci` on `store` with mirror `img` of `ng`.
fn serve_node(s3: &Seaweed, store: &Path, ng: &Nginx) -> Node {
    let mut c = bc(store);
    s3.env(&mut c);
    c.args([
        "-v",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "off",
    ])
    .args(["--mirror", &format!("img={}", ng.url(""))])
    .args(["--shared", &format!("s3://{BUCKET}/ci")]);
    let (mut server, addr) = serve_started(c);
    let stderr = collect(server.0.stderr.take().expect("stderr"));
    Node {
        _server: server,
        addr,
        stderr,
    }
}

/// An origin, a bucket, and serve node A that filled `disk.img` for a
/// client and published it.
struct Fleet {
    ng: Nginx,
    s3: Seaweed,
    data: Vec<u8>,
    want: String,
    a: Node,
    _store: tempfile::TempDir,
}

fn published_by_serve(len: usize, seed: u64) -> Fleet {
    let (ng, data, want) = origin(None, len, seed);
    let s3 = Seaweed::start(BUCKET);
    let (t, store) = store_dir();
    let a = serve_node(&s3, &store, &ng);
    assert!(a.get("/m/img/disk.img") == data, "A serves the image");
    // Publishing runs in the background once the root is verified.
    a.wait_metric("blockcache_shared_publishes_total", 1);
    // The documented layout; A's lease is released after publishing.
    s3.assert_published(BUCKET, "ci/", &want);
    assert!(a.stderr().contains("published to the shared tier"));
    Fleet {
        ng,
        s3,
        data,
        want,
        a,
        _store: t,
    }
}

#[test]
fn a_second_server_serves_the_image_from_the_bucket_and_the_origin_sends_it_once() {
    let len = 24 * MIB + 7;
    let f = published_by_serve(len, 81);
    assert_eq!(f.a.metric("blockcache_shared_read_bytes_total"), 0);
    let (_t, store) = store_dir();
    let b = serve_node(&f.s3, &store, &f.ng);
    let body = b.get("/m/img/disk.img");
    assert!(body == f.data, "B serves the same bytes as the origin");
    let sent = fill_bytes(&settled_log(&f.ng));
    eprintln!(
        "origin sent {sent} bytes for two servers: {:.3}x the image",
        sent as f64 / len as f64
    );
    assert_eq!(sent, len as u64, "the origin sent the image once (1.00x)");
    let read = b.metric("blockcache_shared_read_bytes_total");
    assert!(
        read >= len as u64,
        "B read every byte from the bucket: {read}"
    );
    assert_eq!(b.metric("blockcache_shared_errors_total"), 0);
    assert_eq!(b.metric("blockcache_chunk_verify_failures_total"), 0);
    // B's copy is complete and verified: it serves it by hash too.
    assert!(b.get(&format!("/blobs/{}", f.want)) == f.data);
}

#[test]
fn a_tampered_bucket_chunk_is_refused_by_the_second_server() {
    let len = 8 * MIB + 5;
    let f = published_by_serve(len, 82);
    let before = fill_bytes(&settled_log(&f.ng));
    assert_eq!(before, len as u64);
    // One byte of chunk 3 changed in the bucket's copy.
    let key = format!("ci/b3/{}", f.want);
    let mut object = f.s3.get(BUCKET, &key);
    object[3 * MIB + 77] ^= 0x40;
    f.s3.put(BUCKET, &key, &object);

    let (_t, store) = store_dir();
    let b = serve_node(&f.s3, &store, &f.ng);
    let body = b.get("/m/img/disk.img");
    assert!(body == f.data, "B serves correct bytes");
    assert_eq!(b.metric("blockcache_chunk_verify_failures_total"), 1);
    assert!(b.metric("blockcache_shared_errors_total") >= 1);
    let err = b.stderr();
    assert!(
        err.contains("chunk 3 (bytes 3145728..4194304) does not match the manifest"),
        "{err}"
    );
    // The bucket is dropped for this fill at the bad chunk: chunks 0..3
    // came from it, the bad chunk (and what had not arrived yet) from the
    // origin.
    let sent = fill_bytes(&settled_log(&f.ng)) - before;
    let read = b.metric("blockcache_shared_read_bytes_total");
    eprintln!("origin sent {sent} bytes, the bucket {read}, after the tampered chunk");
    assert!(
        sent >= MIB as u64,
        "the bad chunk came from the origin: {sent}"
    );
    assert!(
        sent <= (len - 3 * MIB) as u64,
        "the origin sent {sent} bytes; chunks 0..3 should have come from the bucket"
    );
    assert!(read >= 3 * MIB as u64, "{read}");
}

#[test]
fn a_server_never_waits_for_another_nodes_lease() {
    let len = 16 * MIB;
    // Slow (8 x 512 KB/s): the fetch node holds its lease for seconds.
    let (ng, data, want) = origin(Some("512k"), len, 83);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    // A `fetch --shared` node takes the lease and is killed holding it.
    let (_t1, first) = store_dir();
    let mut c = bc(&first);
    s3.env(&mut c);
    c.args(["fetch", &url, "--shared", &format!("s3://{BUCKET}/ci")]);
    let mut fetch = Bg(spawn(c));
    let deadline = Instant::now() + STEP;
    let lease = loop {
        // Not the create-only probe (`lease/probe-…`): each process writes
        // and deletes one before its first lease, and a test that took it
        // for the lease let the server claim the real one.
        let keys = s3.list(BUCKET, "ci/lease/");
        if let Some(k) = keys.into_iter().find(|k| !k.starts_with("ci/lease/probe-")) {
            break k;
        }
        assert!(Instant::now() < deadline, "the fetch node took no lease");
        std::thread::sleep(Duration::from_millis(50));
    };
    fetch.kill();
    assert!(
        s3.list(BUCKET, "ci/src/").is_empty(),
        "killed before it published"
    );
    // Its lease, as if that node were alive for another hour.
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    let record = format!(r#"{{"holder":"elsewhere:1:0000beef","expires_unix_ms":{expires}}}"#);
    s3.put(BUCKET, &lease, record.as_bytes());

    // A server missing the image answers from the origin at once (a
    // waiting one would hold the request for an hour: http_get's bound
    // fails the test first).
    let (_t2, store) = store_dir();
    let node = serve_node(&s3, &store, &ng);
    assert!(node.get("/m/img/disk.img") == data);
    let err = node.stderr();
    assert!(
        err.contains("elsewhere:1:0000beef holds the lease of this image"),
        "{err}"
    );
    // It still publishes what it verified, so the fleet's waiters find it.
    node.wait_metric("blockcache_shared_publishes_total", 1);
    assert!(s3.list(BUCKET, "ci/").contains(&format!("ci/b3/{want}")));
    assert_eq!(s3.list(BUCKET, "ci/src/").len(), 1);
    // The other node's lease is not this server's to delete.
    assert!(s3.list(BUCKET, "ci/lease/").contains(&lease));
}

#[test]
fn check_config_shows_the_shared_tier() {
    let (t, store) = store_dir();
    let check = |args: &[&str], env: Option<&str>| {
        let mut c = bc(&store);
        c.env_remove("BLOCKCACHE_SHARED")
            .env_remove("BLOCKCACHE_SHARED_LEASE")
            .env_remove("BLOCKCACHE_SHARED_TIMEOUT")
            .env("XDG_CONFIG_HOME", t.path())
            .args(["serve", "--check-config"])
            .args(args);
        if let Some(v) = env {
            c.env("BLOCKCACHE_SHARED", v);
        }
        run(c)
    };
    let o = check(
        &[
            "--shared",
            "s3://fleet/ci",
            "--shared-lease",
            "90s",
            "--shared-timeout",
            "2.5s",
        ],
        None,
    );
    let out = ok(&o);
    assert!(out.contains("shared = \"s3://fleet/ci\"\n"), "{out}");
    assert!(out.contains("shared_lease = \"90s\"\n"), "{out}");
    assert!(out.contains("shared_timeout = \"2.5s\"\n"), "{out}");
    let out = ok(&check(&[], Some("s3://env-bucket")));
    assert!(out.contains("shared = \"s3://env-bucket\"\n"), "{out}");
    assert!(!out.contains("shared_lease"), "{out}");
    assert!(!out.contains("shared_timeout"), "{out}");
    let out = ok(&check(&[], None));
    assert!(
        !out.contains("shared ="),
        "no tier unless configured: {out}"
    );

    // The config file's keys; the flag wins over the file.
    let file = t.path().join("serve.toml");
    std::fs::write(
        &file,
        "shared = \"s3://images/fleet\"\nshared_lease = 45\nshared_timeout = \"1m\"\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let out = ok(&check(&["--config", file_arg], None));
    assert!(out.contains("shared = \"s3://images/fleet\"\n"), "{out}");
    assert!(out.contains("shared_lease = \"45s\"\n"), "{out}");
    assert!(out.contains("shared_timeout = \"60s\"\n"), "{out}");
    let out = ok(&check(
        &[
            "--config",
            file_arg,
            "--shared",
            "s3://other",
            "--shared-timeout",
            "7",
        ],
        None,
    ));
    assert!(out.contains("shared = \"s3://other\"\n"), "{out}");
    assert!(out.contains("shared_timeout = \"7s\"\n"), "{out}");

    // A bad duration names the file, line and key, and why.
    for (value, why) in [("\"soon\"", "expected a duration"), ("0", "above zero")] {
        let text = format!("shared = \"s3://images/fleet\"\nshared_timeout = {value}\n");
        std::fs::write(&file, text).unwrap();
        let (code, err) = code_and_err(&check(&["--config", file_arg], None));
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!("{file_arg}:2: shared_timeout:")) && err.contains(why),
            "{err}"
        );
    }

    // A bad value is one line naming the file, line and key.
    std::fs::write(&file, "revalidate = 5\nshared = \"http://images/fleet\"\n").unwrap();
    let (code, err) = code_and_err(&check(&["--config", file_arg], None));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{file_arg}:2: shared:"))
            && err.contains("expected s3://BUCKET[/PREFIX]"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = code_and_err(&check(&["--shared", "s3://"], None));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--shared") && err.contains("no bucket name"),
        "{err}"
    );
}

#[test]
fn a_server_whose_bucket_is_down_answers_from_the_origin() {
    // Nothing listens on port 1: every bucket request is refused at once.
    a_server_whose_bucket_fails_answers_from_the_origin("http://127.0.0.1:1", &[], 84, None);
}

#[test]
fn a_server_whose_bucket_never_answers_answers_from_the_origin() {
    // Every bucket request is accepted, then nothing: each costs the
    // configured second (and the next ones are skipped).
    let hole = format!("http://127.0.0.1:{}", black_hole());
    a_server_whose_bucket_fails_answers_from_the_origin(
        &hole,
        &["--shared-timeout", "1s"],
        86,
        Some("no answer within 1s"),
    );
}

#[test]
fn a_server_asks_a_silent_bucket_again_after_its_cool_down() {
    let (ng, first, _want) = origin(None, MIB + 1, 87);
    let second = pattern(88, MIB + 2);
    ng.put("disk2.img", &second);
    let (_t, store) = store_dir();
    let mut c = bc(&store);
    aws_env(&mut c, &format!("http://127.0.0.1:{}", black_hole()));
    c.args(["serve", "--listen", "127.0.0.1:0", "--access-log", "off"])
        .args(["--mirror", &format!("img={}", ng.url(""))])
        .args(["--shared", &format!("s3://{BUCKET}/ci")])
        .args(["--shared-timeout", "1s"]);
    let (mut server, addr) = serve_started(c);
    let stderr = collect(server.0.stderr.take().expect("stderr"));
    let log = || String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    let unanswered = || log().matches("no answer within 1s").count();
    // The first image's pointer lookup waits its second, then the origin
    // serves; its publish right after is skipped (3 s of cool-down).
    let (status, head, body) = http_get(&addr, "/m/img/disk.img", None);
    assert_eq!(status, 200, "{head}");
    assert!(body == first);
    assert!(unanswered() >= 1, "{}", log());
    // Past the cool-down, the bucket is asked again (it may have come
    // back): the second image's lookup waits its second too.
    std::thread::sleep(Duration::from_millis(3500));
    let before = unanswered();
    let (status, head, body) = http_get(&addr, "/m/img/disk2.img", None);
    assert_eq!(status, 200, "{head}");
    assert!(body == second);
    let deadline = Instant::now() + STEP;
    while unanswered() <= before {
        assert!(Instant::now() < deadline, "{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log().contains("skipped: the bucket left a request unanswered"),
        "{}",
        log()
    );
}

/// A `serve --shared` node whose bucket at `endpoint` fails: a client
/// still gets the image (from the origin), the errors are counted, and
/// the background publish fails; `says`: what the log must name.
fn a_server_whose_bucket_fails_answers_from_the_origin(
    endpoint: &str,
    extra: &[&str],
    seed: u64,
    says: Option<&str>,
) {
    let len = 3 * MIB + 11;
    let (ng, data, _want) = origin(None, len, seed);
    let (_t, store) = store_dir();
    let mut c = bc(&store);
    aws_env(&mut c, endpoint);
    c.args(["serve", "--listen", "127.0.0.1:0", "--access-log", "off"])
        .args(["--mirror", &format!("img={}", ng.url(""))])
        .args(["--shared", &format!("s3://{BUCKET}/ci")])
        .args(extra);
    let (mut server, addr) = serve_started(c);
    let stderr = collect(server.0.stderr.take().expect("stderr"));
    let (status, head, body) = http_get(&addr, "/m/img/disk.img", None);
    assert_eq!(status, 200, "{head}");
    assert!(body == data, "the client gets the image from the origin");
    assert_eq!(fill_bytes(&settled_log(&ng)), len as u64);
    let node = Node {
        _server: server,
        addr,
        stderr,
    };
    assert!(node.metric("blockcache_shared_errors_total") >= 1);
    assert_eq!(node.metric("blockcache_shared_read_bytes_total"), 0);
    // The background publish fails too (logged), and counts nothing.
    let deadline = Instant::now() + STEP;
    while !node.stderr().contains("not published to the shared tier") {
        assert!(Instant::now() < deadline, "{}", node.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.metric("blockcache_shared_publishes_total"), 0);
    if let Some(says) = says {
        assert!(node.stderr().contains(says), "{}", node.stderr());
    }
}
