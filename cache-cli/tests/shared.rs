//! The shared S3 tier with real parts: SeaweedFS as the bucket, nginx as
//! the origin, `blockcache fetch --shared` processes as the nodes of a
//! fleet, each with its own store. Origin bytes are counted from nginx's
//! access log. Images are 48–64 MiB instead of the 512 MiB: the
//! shared 2-core test machine runs these next to the other suites, and the
//! ratios asserted do not depend on the size. Bounded waits only.

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::relay::{black_hole, relay, Gate, Relay};
use support::seaweed::{aws_env, Seaweed};
use support::*;

const BUCKET: &str = "fleet";

/// A `blockcache fetch --shared` node.
fn node(s3: &Seaweed, store: &std::path::Path, url: &str, extra: &[&str]) -> Command {
    let mut c = bc(store);
    s3.env(&mut c);
    c.args(["fetch", url, "--shared"])
        .arg(format!("s3://{BUCKET}/ci"))
        .args(extra);
    c
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An origin serving `len` bytes, a bucket, and a first node's fetch
/// that published the image there.
struct Published {
    ng: Nginx,
    s3: Seaweed,
    url: String,
    want: String,
    _first: tempfile::TempDir,
}

fn published(len: usize, seed: u64) -> Published {
    let (ng, _data, want) = origin(None, len, seed);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    let (t, first) = store_dir();
    let o = run(node(&s3, &first, &url, &[]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    assert!(stderr_of(&o).contains("published"), "{}", stderr_of(&o));
    Published {
        ng,
        s3,
        url,
        want,
        _first: t,
    }
}

#[test]
fn sequential_nodes_take_the_image_from_the_origin_once() {
    let len = 48 * MIB + 123;
    let (ng, _data, want) = origin(Some("40m"), len, 71);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    let mut temps = Vec::new();
    for i in 0..4 {
        let (t, store) = store_dir();
        let o = run(node(&s3, &store, &url, &[]));
        let out = ok(&o);
        assert_eq!(last_line(out.as_bytes()), want, "node {i}");
        if i == 0 {
            assert!(stderr_of(&o).contains("published"), "{}", stderr_of(&o));
        }
        temps.push(t);
    }
    let sent = fill_bytes(&settled_log(&ng));
    assert_eq!(
        sent, len as u64,
        "the origin sent {sent} bytes for four nodes of a {len}-byte image"
    );
    // The documented layout.
    let keys = s3.assert_published(BUCKET, "ci/", &want);
    let pointer_key = keys.iter().find(|k| k.starts_with("ci/src/")).unwrap();
    let pointer: serde_json::Value =
        serde_json::from_slice(&s3.get(BUCKET, pointer_key)).expect("pointer is JSON");
    assert_eq!(pointer["blake3"], want.as_str());
    assert_eq!(pointer["len"], len as u64);
}

#[test]
fn a_tampered_chunk_is_refused_and_a_foreign_manifest_refused_whole() {
    let len = 8 * MIB + 5;
    let Published {
        ng, s3, url, want, ..
    } = published(len, 72);
    let before = fill_bytes(&settled_log(&ng));
    assert_eq!(before, len as u64);

    // One byte of chunk 3 changed in the bucket's copy.
    let key = format!("ci/b3/{want}");
    let mut object = s3.get(BUCKET, &key);
    object[3 * MIB + 77] ^= 0x40;
    s3.put(BUCKET, &key, &object);
    let (_t2, second) = store_dir();
    let o = run(node(&s3, &second, &url, &[]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    assert!(
        err.contains("chunk 3 (bytes 3145728..4194304) does not match the manifest"),
        "{err}"
    );
    assert!(err.contains("refused 1 chunk(s)"), "{err}");
    // Chunks 0-2 came from the bucket; the origin sent the rest.
    let sent = fill_bytes(&settled_log(&ng)) - before;
    eprintln!("{err}\norigin sent {sent} bytes after the tampered chunk");
    assert!(
        sent <= (len - 3 * MIB) as u64,
        "the origin sent {sent} bytes; chunks 0..3 should have come from the bucket"
    );

    // A well-formed manifest of other bytes under this name: refused whole,
    // nothing read from the bucket, the origin sends everything.
    let other = pattern(9, len);
    let cs = 1u32 << 20;
    let cvs: Vec<[u8; 32]> = other
        .chunks(cs as usize)
        .enumerate()
        .map(|(i, c)| cache_core::hash::chunk_cv(c, i as u32, cs, len as u64))
        .collect();
    let foreign = cache_core::Manifest::new(len as u64, cs, cvs).unwrap();
    s3.put(BUCKET, &format!("ci/b3/{want}.manifest"), &foreign.encode());
    let before = fill_bytes(&settled_log(&ng));
    let (_t3, third) = store_dir();
    let o = run(node(&s3, &third, &url, &["--blake3", &want]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    assert!(err.contains("refused: manifest does not match"), "{err}");
    assert!(!err.contains("refused 1 chunk"), "{err}");
    assert_eq!(fill_bytes(&settled_log(&ng)) - before, len as u64);
}

#[test]
fn the_bucket_stopped_mid_download_leaves_the_rest_to_the_origin() {
    // `_ng`: the origin must keep running.
    let Published {
        ng: _ng,
        mut s3,
        url,
        want,
        ..
    } = published(48 * MIB, 73);

    // The second node reads the bucket through a relay that passes 4 MiB
    // per connection, then holds: it cannot have read the whole image
    // (48 MiB) from the bucket before the bucket stops.
    let gate = Gate::new();
    let relay = relay(
        s3.port,
        Relay {
            hold_after: Some((4 * MIB, gate.clone())),
            ..Relay::default()
        },
    );
    let (_t2, second) = store_dir();
    let mut c = node(&s3, &second, &url, &[]);
    c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{relay}"));
    // Info: the bucket's retries and the fill's switch are in its output.
    c.env("RUST_LOG", "info");
    let child = spawn(c);
    wait_bytes_done(&second, 2 * MIB as u64);
    s3.kill();
    gate.open();
    let o = finish(child);
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    eprintln!("{err}");
    assert!(err.contains("shared-tier error(s)"), "{err}");
    assert!(err.contains("not published"), "{err}");
}

#[test]
fn a_bucket_that_never_answers_costs_one_timeout_then_the_origin_serves() {
    let len = 5 * MIB + 9;
    let (ng, _data, want) = origin(None, len, 85);
    // A bucket that accepts connections and never answers.
    let port = black_hole();
    let (_t, store) = store_dir();
    let mut c = bc(&store);
    aws_env(&mut c, &format!("http://127.0.0.1:{port}"));
    c.args(["fetch", &ng.url("disk.img"), "--shared", "s3://fleet/ci"])
        .args(["--shared-timeout", "1s"]);
    // Bounded by STEP, as every run: the client's own time-out (120 s
    // per request) would not finish within it.
    let o = run(c);
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    eprintln!("{err}");
    // The pointer lookup waited 1 s; the lease's probe right after it
    // was not sent (3 s of cool-down), nor publish's HEAD when the fill
    // took less than that. Each counts as a bucket error.
    assert!(err.contains("src/"), "the pointer: {err}");
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(
        err.contains("skipped: the bucket left a request unanswered"),
        "{err}"
    );
    assert!(err.contains("not published"), "{err}");
    assert!(err.contains("shared-tier error(s)"), "{err}");
    assert_eq!(fill_bytes(&settled_log(&ng)), len as u64);
}

#[test]
fn a_bucket_that_answers_403_leaves_the_image_to_the_origin() {
    let len = 6 * MIB + 3;
    let (ng, _data, want) = origin(None, len, 79);
    // Signatures checked: the first node's key pair is the bucket's.
    let s3 = Seaweed::start_signed(BUCKET);
    let url = ng.url("disk.img");
    let (_t1, first) = store_dir();
    let o = run(node(&s3, &first, &url, &[]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    assert!(stderr_of(&o).contains("published"), "{}", stderr_of(&o));
    // A node with the wrong secret: every request is refused with 403.
    let (_t2, second) = store_dir();
    let mut c = node(&s3, &second, &url, &[]);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let o = run(c);
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    eprintln!("{err}");
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("403"),
        "{err}"
    );
    assert!(err.contains("shared-tier error(s)"), "{err}");
    assert!(err.contains("not published"), "{err}");
    // The pointer was refused like everything else: the origin sent it again.
    assert_eq!(fill_bytes(&settled_log(&ng)), 2 * len as u64);
}

#[test]
fn a_truncated_bucket_body_falls_back_to_the_origin() {
    let len = 24 * MIB;
    let Published {
        ng, s3, url, want, ..
    } = published(len, 80);
    let before = fill_bytes(&settled_log(&ng));
    // Every connection to the bucket is cut after 5 MiB and a bit: the
    // small requests (pointer, manifest, HEAD) pass, an object GET is cut
    // in the middle of its body.
    let port = relay(
        s3.port,
        Relay {
            cut_after: 5 * MIB + 12_345,
            ..Relay::default()
        },
    );
    let (_t2, second) = store_dir();
    let mut c = node(&s3, &second, &url, &[]);
    c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    let o = run(c);
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    eprintln!("{err}");
    assert!(err.contains("shared tier: s3://fleet/ci/b3/"), "{err}");
    assert!(err.contains("shared-tier error(s)"), "{err}");
    let sent = fill_bytes(&settled_log(&ng)) - before;
    eprintln!("the origin sent {sent} of {len} bytes after the cut");
    assert!(sent > 0, "the rest came from the origin");
    assert!(
        sent < len as u64,
        "the bytes before the cut came from the bucket: {sent}"
    );
}

/// The bytes the origin sent, asserted to be at most `times` the image
/// (and printed: the measurement of the test).
fn origin_bytes_at_most(ng: &Nginx, len: usize, times: f64) -> u64 {
    let sent = fill_bytes(&settled_log(ng));
    eprintln!(
        "origin sent {sent} bytes: {:.3}x the image",
        sent as f64 / len as f64
    );
    assert!(
        sent as f64 <= times * len as f64,
        "the origin sent {sent} bytes for a {len}-byte image (more than {times}x)"
    );
    sent
}

/// The stores' first objects' bytes done, per node.
fn progress_of(stores: &[std::path::PathBuf]) -> Vec<u64> {
    stores.iter().map(|s| bytes_done(s)).collect()
}

/// `n` nodes started at once, talking to the bucket through `endpoint`.
fn start_nodes(
    s3: &Seaweed,
    url: &str,
    n: usize,
    extra: &[&str],
    endpoint: u16,
) -> (
    Vec<tempfile::TempDir>,
    Vec<std::path::PathBuf>,
    Vec<Option<Child>>,
) {
    let mut temps = Vec::new();
    let mut stores = Vec::new();
    let mut children = Vec::new();
    for _ in 0..n {
        let (t, store) = store_dir();
        let mut c = node(s3, &store, url, extra);
        c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{endpoint}"));
        children.push(Some(spawn(c)));
        temps.push(t);
        stores.push(store);
    }
    (temps, stores, children)
}

/// A relay to the bucket that holds every write of a pointer (`src/`)
/// until the gate opens: while it is shut, no node can find the image
/// published, so which node waits for which no longer depends on how fast
/// the holder downloads on a loaded machine.
/// With `hide_if_none_match`, the relayed store also ignores create-only
/// writes.
fn pointer_gate(s3: &Seaweed, hide_if_none_match: bool) -> (u16, std::sync::Arc<Gate>) {
    let gate = Gate::new();
    let port = relay(
        s3.port,
        Relay {
            hold_request: Some((format!("PUT /{BUCKET}/ci/src/"), gate.clone())),
            hide_if_none_match,
            ..Relay::default()
        },
    );
    (port, gate)
}

#[test]
fn concurrent_nodes_share_one_origin_download_through_the_lease() {
    let len = 32 * MIB;
    let (ng, _data, want) = origin(Some("2m"), len, 74);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    let (port, gate) = pointer_gate(&s3, false);
    let (_temps, _stores, children) = start_nodes(&s3, &url, 4, &[], port);
    let mut children: Vec<Child> = children.into_iter().flatten().collect();
    let live: Vec<_> = children
        .iter_mut()
        .map(|c| collect(c.stderr.take().expect("stderr")))
        .collect();
    let text = |i: usize| String::from_utf8_lossy(&live[i].lock().unwrap()).into_owned();
    let waiting = || {
        (0..live.len())
            .filter(|&i| text(i).contains("waiting for it to publish"))
            .count()
    };
    // However late a node starts, it finds the lease, not the pointer.
    let deadline = Instant::now() + STEP;
    while waiting() < 3 {
        let all: Vec<String> = (0..live.len()).map(text).collect();
        assert!(
            Instant::now() < deadline,
            "three nodes wait for the lease holder:\n{}",
            all.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gate.open();
    for child in children {
        let o = finish(child);
        assert_eq!(last_line(ok(&o).as_bytes()), want);
    }
    let all: Vec<String> = (0..live.len()).map(text).collect();
    assert_eq!(
        waiting(),
        3,
        "one holder, three waiters:\n{}",
        all.join("\n---\n")
    );
    origin_bytes_at_most(&ng, len, 1.05);
}

#[test]
fn a_killed_lease_holder_is_taken_over_after_expiry() {
    let len = 48 * MIB;
    let (ng, _data, want) = origin(Some("3m"), len, 75);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    // The holder cannot publish before it is killed, however fast it is.
    let (port, gate) = pointer_gate(&s3, false);
    let (_temps, stores, mut children) = start_nodes(&s3, &url, 4, &["--shared-lease", "3s"], port);
    // The holder is the node whose store fills; kill -9 it part-way.
    let deadline = Instant::now() + STEP;
    let holder = loop {
        let done = progress_of(&stores);
        if let Some(i) = done.iter().position(|&d| d >= 8 * MIB as u64) {
            break i;
        }
        assert!(Instant::now() < deadline, "no node downloads: {done:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut killed = children[holder].take().unwrap();
    killed.kill().expect("kill -9 the holder");
    let _ = killed.wait();
    gate.open();
    for child in children.into_iter().flatten() {
        let o = finish(child);
        assert_eq!(last_line(ok(&o).as_bytes()), want, "{}", stderr_of(&o));
    }
    let sent = origin_bytes_at_most(&ng, len, 2.0);
    assert!(
        sent > len as u64,
        "the killed holder's part and the taker's whole download: {sent}"
    );
}

#[test]
fn an_object_deleted_from_the_bucket_falls_back_and_is_published_again() {
    let len = 4 * MIB + 9;
    let Published {
        ng, s3, url, want, ..
    } = published(len, 76);
    // A lifecycle rule removed the object; its pointer is still there.
    let key = format!("ci/b3/{want}");
    assert_eq!(
        s3.request("DELETE", &format!("/{BUCKET}/{key}"), b"", &[])
            .0,
        204
    );
    let (_t2, second) = store_dir();
    let o = run(node(&s3, &second, &url, &[]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    assert!(err.contains("not in the bucket"), "{err}");
    assert!(
        err.contains("published"),
        "the second node publishes it again: {err}"
    );
    assert_eq!(fill_bytes(&settled_log(&ng)), 2 * len as u64);
    assert_eq!(s3.get(BUCKET, &key).len(), len);
}

#[test]
fn a_store_that_ignores_create_only_writes_runs_without_the_lease() {
    let len = 32 * MIB;
    let (ng, _data, want) = origin(Some("2m"), len, 77);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    // A store that ignores create-only writes, and no pointer before both
    // nodes have looked for it (they download once they have).
    let (port, gate) = pointer_gate(&s3, true);
    let (_temps, stores, children) = start_nodes(&s3, &url, 2, &[], port);
    let deadline = Instant::now() + STEP;
    while progress_of(&stores).contains(&0) {
        assert!(
            Instant::now() < deadline,
            "both nodes download: {:?}",
            progress_of(&stores)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gate.open();
    for child in children.into_iter().flatten() {
        let o = finish(child);
        assert_eq!(last_line(ok(&o).as_bytes()), want);
        let err = stderr_of(&o);
        assert!(err.contains("ignores create-only writes"), "{err}");
        assert!(!err.contains("waiting for it to publish"), "{err}");
    }
    // Both nodes downloaded it: nothing coordinated them.
    assert_eq!(fill_bytes(&settled_log(&ng)), 2 * len as u64);
}

#[test]
fn a_bad_shared_url_is_one_usage_line() {
    let (_t, store) = store_dir();
    for (bad, says) in [
        ("http://bucket/x", "expected s3://BUCKET[/PREFIX]"),
        ("s3://", "no bucket name"),
    ] {
        let mut c = bc(&store);
        c.args(["fetch", "http://127.0.0.1:1/disk.img", "--shared", bad]);
        let (code, err) = code_and_err(&run(c));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("--shared") && err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn a_store_that_has_the_image_seeds_the_bucket_without_downloading() {
    let len = 6 * MIB + 1;
    let (ng, _data, want) = origin(None, len, 78);
    let s3 = Seaweed::start(BUCKET);
    let url = ng.url("disk.img");
    let (_t1, first) = store_dir();
    let mut plain = bc(&first);
    plain.args(["fetch", &url]);
    assert_eq!(last_line(ok(&run(plain)).as_bytes()), want);
    // The same store, now with --shared: a local hit, published as it is.
    let o = run(node(&s3, &first, &url, &[]));
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let err = stderr_of(&o);
    assert!(err.contains("already stored"), "{err}");
    assert!(err.contains("published"), "{err}");
    let (_t2, second) = store_dir();
    assert_eq!(
        last_line(ok(&run(node(&s3, &second, &url, &[]))).as_bytes()),
        want
    );
    assert_eq!(fill_bytes(&settled_log(&ng)), len as u64);
}
