//! The real `blockcache` binary against a real nginx (the harness of
//! cache-http). Every wait is bounded; nothing asserts on timing.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::nginx::{Nginx, NginxOptions};
use support::*;

#[test]
fn two_fetch_processes_download_once() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("4m".into()),
    });
    let len = 24 * MIB + 12_345;
    let data = pattern(1, len);
    let file = ng.put("disk.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    if let Some(b3) = b3sum_of(&file) {
        assert_eq!(b3, want, "b3sum agrees with the blake3 crate");
    }
    let (_t, store) = store_dir();
    let mut a = bc(&store);
    a.args(["fetch", &ng.url("disk.img")]);
    let a = spawn(a);
    std::thread::sleep(Duration::from_millis(500));
    let mut b = bc(&store);
    b.args(["fetch", &ng.url("disk.img")]);
    let b = spawn(b);
    let (oa, ob) = (finish(a), finish(b));
    ok(&oa);
    ok(&ob);
    assert_eq!(last_line(&oa.stdout), want);
    assert_eq!(last_line(&ob.stdout), want);
    let log = settled_log(&ng);
    // One filler: the object's bytes went out exactly once.
    assert_eq!(fill_bytes(&log), len as u64, "{log:#?}");
    // The follower showed progress lines (stderr is not a terminal here).
    let eb = String::from_utf8_lossy(&ob.stderr);
    assert!(eb.contains("disk.img:"), "progress lines: {eb}");
}

#[test]
fn killed_filler_is_taken_over_without_starting_over() {
    let len = 32 * MIB;
    let (ng, _data, want) = origin(Some("2m"), len, 2);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let mut a = bc(&store);
    a.args(["-q", "fetch", &url]);
    let mut a = Bg(spawn(a));
    wait_bytes_done(&store, (len / 4) as u64);
    let mut b = bc(&store);
    b.args(["-q", "fetch", &url]);
    let b = spawn(b);
    std::thread::sleep(Duration::from_millis(500));
    let before_kill = ng.access_log().len();
    a.kill(); // SIGKILL
    let ob = finish(b);
    ok(&ob);
    assert_eq!(last_line(&ob.stdout), want);
    let log = settled_log(&ng);
    let total = fill_bytes(&log);
    // Requests logged after the kill: the killed process's requests that
    // were in flight (cut short, logged when nginx noticed) and the new
    // filler's (complete). The latter are what it fetched.
    let after = complete_fill_bytes(&log[before_kill..]);
    assert!(
        total < 2 * len as u64,
        "total {total} bytes for {len}: {log:#?}"
    );
    assert!(
        after < len as u64,
        "{after} bytes after the kill for {len}: {log:#?}"
    );
}

#[test]
fn interrupted_fetch_resumes_with_only_missing_bytes() {
    let len = 20 * MIB + 777;
    let (ng, _data, want) = origin(Some("2m"), len, 3);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let mut a = bc(&store);
    a.args(["-q", "fetch", &url]);
    let mut a = Bg(spawn(a));
    wait_bytes_done(&store, (len / 4) as u64);
    a.kill(); // SIGKILL
    let have = bytes_done(&store);
    assert!(have > 0 && have < len as u64, "partial: {have}");
    let before = settled_log(&ng).len();
    let mut b = bc(&store);
    b.args(["-q", "fetch", &url]);
    let ob = run(b);
    ok(&ob);
    assert_eq!(last_line(&ob.stdout), want);
    let log = settled_log(&ng);
    assert_eq!(
        fill_bytes(&log[before..]),
        len as u64 - have,
        "only the missing bytes: {:#?}",
        &log[before..]
    );
}

#[test]
fn cat_range_on_a_filling_object() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("1m".into()),
    });
    // One request covers it all (16 MiB is the largest merged request):
    // without the cross-process demand the far end would come last.
    let len = 16 * MIB;
    let data = pattern(4, len);
    ng.put("disk.img", &data);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    // A fill in another process...
    let mut f = bc(&store);
    f.args(["-q", "fetch", &url]);
    let mut filler = Bg(spawn(f));
    wait_bytes_done(&store, 1);
    // ...and a read of the far end while it runs.
    let (s, e) = (len - MIB - 100, len - 1);
    let mut c = bc(&store);
    c.args(["cat", &url, "--range", &format!("{s}-{e}")]);
    let oc = run(c);
    ok(&oc);
    let state = ls_json(&store)[0]["state"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let done = bytes_done(&store);
    assert_eq!(oc.stdout.len(), e - s + 1);
    assert!(oc.stdout == data[s..=e], "the right bytes");
    assert!(
        done < len as u64 && state != "complete",
        "returned before the fill ended ({done} bytes, {state})"
    );
    filler.kill();
    // -N: the last N bytes, and a prefix of the hash is a valid REF once complete.
    let mut f = bc(&store);
    f.args(["-q", "fetch", &url]);
    let hash = last_line(&ok(&run(f)).into_bytes());
    let mut c = bc(&store);
    c.args(["cat", &hash[..8], "--range", "-10"]);
    let o = run(c);
    ok(&o);
    assert_eq!(o.stdout, &data[len - 10..]);
}

#[test]
fn verify_repair_refetches_exactly_one_chunk() {
    let len = 5 * MIB + 4321;
    let (ng, _data, want) = origin(None, len, 5);
    let (_t, store) = store_dir();
    let mut f = bc(&store);
    f.args(["-q", "fetch", &ng.url("disk.img"), "--chunk-size", "256KiB"]);
    assert_eq!(last_line(&ok(&run(f)).into_bytes()), want);
    // Flip a byte in chunk 9.
    let key = ls_json(&store)[0]["key"].as_str().expect("key").to_string();
    let dir = store.join("objects").join(&key);
    let data_file = std::fs::read_dir(&dir)
        .expect("object dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("data-"))
        })
        .expect("data file");
    let mut bytes = std::fs::read(&data_file).expect("read data");
    let at = 9 * 256 * 1024 + 17;
    bytes[at] ^= 0x40;
    std::fs::write(&data_file, &bytes).expect("write data");
    let before = settled_log(&ng).len();

    let mut v = bc(&store);
    v.args(["verify"]);
    let ov = run(v);
    assert_eq!(ov.status.code(), Some(4), "damage found: exit 4");
    let report = String::from_utf8_lossy(&ov.stdout);
    assert!(report.contains("DAMAGED: 1 of 21 chunks: 9 "), "{report}");

    let mut v = bc(&store);
    v.args(["-q", "verify", &want[..12], "--repair"]);
    let out = ok(&run(v));
    assert!(out.contains("repaired"), "{out}");
    let log = settled_log(&ng);
    let new = &log[before..];
    assert_eq!(new.len(), 1, "one request: {new:#?}");
    let start = 9 * 256 * 1024;
    assert_eq!(
        new[0].range,
        format!("bytes={}-{}", start, start + 256 * 1024 - 1)
    );
    assert_eq!(new[0].body_bytes_sent, 256 * 1024);
    let mut v = bc(&store);
    v.args(["verify"]);
    assert!(ok(&run(v)).contains(&format!("{want}: ok, 21 chunks verified")));
}

#[test]
fn gc_evicts_lru_complete_objects_never_busy_ones() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("256k".into()),
    });
    let (t, store) = store_dir();
    let mut hashes = Vec::new();
    for (i, name) in ["r", "b", "c", "a"].iter().enumerate() {
        let p = t.path().join(name);
        let bytes = pattern(10 + i as u64, 4 * MIB);
        std::fs::write(&p, &bytes).expect("write");
        let mut c = bc(&store);
        c.arg("import").arg(&p);
        let hash = last_line(&ok(&run(c)).into_bytes());
        assert_eq!(
            hash,
            blake3::hash(&bytes).to_hex().as_str(),
            "import prints the BLAKE3"
        );
        hashes.push(hash);
        std::thread::sleep(Duration::from_millis(20));
    }
    let [r, b, c, a] = [&hashes[0], &hashes[1], &hashes[2], &hashes[3]];
    // Use `a` (most recent now).
    let mut x = bc(&store);
    x.args(["cat", a, "--range", "0-0"]);
    ok(&run(x));
    // Hold `r` open: a cat blocked on a full pipe nobody reads.
    let mut reader = bc(&store);
    reader
        .args(["cat", r])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let _reader = Bg(reader.spawn().expect("spawn cat"));
    // A fill in progress.
    ng.put("slow.img", &pattern(20, 8 * MIB));
    let mut f = bc(&store);
    f.args(["-q", "fetch", &ng.url("slow.img")]);
    let _filler = Bg(spawn(f));
    std::thread::sleep(Duration::from_millis(700));
    let objs = ls_json(&store);
    assert_eq!(objs.len(), 5);
    let disk = |h: &str| {
        objs.iter()
            .find(|o| o["blake3"].as_str() == Some(h))
            .and_then(|o| o["disk_bytes"].as_u64())
            .expect("object listed")
    };
    let total: u64 = objs
        .iter()
        .map(|o| o["disk_bytes"].as_u64().unwrap_or(0))
        .sum();
    // Room for all but `b`, the least recently used: only `b` goes.
    let mut g = bc(&store);
    g.args(["gc", "--max-size", &(total - disk(b)).to_string()]);
    let out = ok(&run(g));
    assert!(out.contains("(1 evicted)"), "{out}");
    let left: Vec<String> = ls_json(&store)
        .iter()
        .filter_map(|o| o["blake3"].as_str().map(str::to_string))
        .collect();
    assert!(!left.contains(b) && left.contains(c) && left.contains(a) && left.contains(r));
    // Everything evictable goes; the read one and the filling one stay.
    let mut g = bc(&store);
    g.args(["gc", "--max-size", "0"]);
    let out = ok(&run(g));
    assert!(out.contains("in use"), "{out}");
    let left = ls_json(&store);
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(left.iter().any(|o| o["blake3"].as_str() == Some(r)));
    assert!(left
        .iter()
        .any(|o| o["source"].as_str() == Some(ng.url("slow.img").as_str())));
}

#[test]
fn demo_runs_and_checks_itself() {
    let mut c = Command::new(BIN);
    c.env_remove("BLOCKCACHE_STORE")
        .args(["demo", "--size", "24MiB", "--rate", "20MB/s"]);
    let out = ok(&run(c));
    for want in [
        "downloaded once",
        "read while downloading",
        "==",
        "demo: OK",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
}

#[test]
fn errors_are_one_line_with_documented_exit_codes() {
    let (t, store) = store_dir();
    // A store with one object, so the reference below is what is unknown.
    let file = t.path().join("one.img");
    std::fs::write(&file, b"one").expect("write");
    let mut c = bc(&store);
    c.arg("import").arg(&file);
    ok(&run(c));
    let mut c = bc(&store);
    c.args(["cat", "abcdef12"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("abcdef12"), "{err}");
    // A closed port: network failure, naming the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/x.img");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url]);
    let o = run(c);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&url));
    let mut c = bc(&store);
    c.args(["fetch", "--chunk-size", "3M", &url]);
    assert_eq!(run(c).status.code(), Some(2));
    // Every subcommand's help has an example.
    for sub in [
        "fetch", "serve", "ls", "cat", "verify", "rm", "gc", "import", "demo",
    ] {
        let o = Command::new(BIN)
            .args([sub, "--help"])
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Example"), "{sub} --help: {text}");
    }
    let o = Command::new(BIN).arg("--help").output().expect("help");
    assert!(String::from_utf8_lossy(&o.stdout).contains("4  verification"));
}

#[test]
fn fetch_output_file_and_stdout() {
    let len = 3 * MIB + 5;
    let (ng, data, want) = origin(None, len, 6);
    let (t, store) = store_dir();
    let out = t.path().join("copy.img");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("disk.img"), "-o"]).arg(&out);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    assert!(std::fs::read(&out).expect("written") == data);
    // A second -o replaces the file whole; no staging directory is left.
    std::fs::write(&out, b"old contents, longer than nothing").expect("overwrite");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("disk.img"), "-o"]).arg(&out);
    ok(&run(c));
    assert!(std::fs::read(&out).expect("rewritten") == data);
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".blockcache-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("disk.img"), "-o", "-"]);
    let o = run(c);
    ok(&o);
    assert!(o.stdout == data, "stdout is the data");
    assert_eq!(last_line(&o.stderr), want, "the hash goes to stderr");
}

#[test]
fn serve_mirror_range_and_blobs() {
    let len = 12 * MIB + 99;
    let (ng, data, want) = origin(Some("2m"), len, 7);
    let (_t, store) = store_dir();
    let base = ng.url("");
    let mirror = format!("img={base}");
    let (server, addr) = start_serve(&store, &["--mirror", &mirror]);
    // A far range through the mirror, while the object fills.
    let (s, e) = (len - 5000, len - 1);
    let (status, head, body) = http_get(&addr, "/m/img/disk.img", Some(&format!("{s}-{e}")));
    assert_eq!(status, 206, "{head}");
    assert!(body == data[s..=e], "the right bytes");
    // The CLI's fetch of the same URL shares the serve process's object:
    // it follows the serve process's fill instead of downloading.
    let mut f = bc(&store);
    f.args(["fetch", &ng.url("disk.img")]);
    let fetched = run(f);
    assert_eq!(last_line(&ok(&fetched).into_bytes()), want);
    let progress = String::from_utf8_lossy(&fetched.stderr);
    let following = format!("following pid {}", server.0.id());
    assert!(progress.contains(&following), "{following}: {progress}");
    let (status, _, body) = http_get(&addr, &format!("/blobs/{want}"), Some("0-99"));
    assert_eq!(status, 206);
    assert_eq!(body, &data[..100]);
    // Downloaded once. The fill may plan its first prefetch (byte 0 to the
    // end) before the far read's demand reaches it; the demand then cuts
    // that request at the far chunk, and what nginx had already pushed
    // past the cut (at `limit_rate 2m` it sends 2 MiB each second, in one
    // burst) is counted but never committed twice. Requests that ran to
    // their end never overlap, and all of it together stays far below a
    // second download of the 12 MiB image.
    let log = settled_log(&ng);
    assert!(
        complete_fill_bytes(&log) <= len as u64,
        "no range fetched twice: {log:#?}"
    );
    assert!(
        fill_bytes(&log) <= (len + 4 * MIB) as u64,
        "downloaded once (bar a cut request's overshoot): {log:#?}"
    );
}

/// `RUST_LOG=blockcache::requests=debug` gives one `request ended` event
/// per range request of a fill, with its times (the client-side timeline
/// of BENCHMARKS.md's WAN section): as many as nginx logged, each with
/// the bytes nginx sent for it and times in order.
#[test]
fn request_timeline_events_match_the_origins_requests() {
    let len = 40 * MIB + 123;
    let (ng, _data, want) = origin(None, len, 17);
    let (_t, store) = store_dir();
    let before = settled_log(&ng).len();
    let mut c = bc(&store);
    c.env("RUST_LOG", "warn,blockcache::requests=debug").args([
        "-q",
        "fetch",
        "--connections",
        "3",
        &ng.url("disk.img"),
    ]);
    let out = run(c);
    ok(&out);
    assert_eq!(last_line(&out.stdout), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("request ended"))
        .collect();
    let log = settled_log(&ng);
    let fills: Vec<_> = log[before..]
        .iter()
        .filter(|l| l.method == "GET" && !is_probe(l))
        .collect();
    assert_eq!(events.len(), fills.len(), "{events:#?}\n{fills:#?}");
    let field = |line: &str, key: &str| -> u64 {
        line.split(&format!(" {key}="))
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    let mut sent: Vec<u64> = events.iter().map(|l| field(l, "bytes")).collect();
    let mut served: Vec<u64> = fills.iter().map(|l| l.body_bytes_sent).collect();
    sent.sort_unstable();
    served.sort_unstable();
    assert_eq!(sent, served, "bytes per request");
    assert_eq!(sent.iter().sum::<u64>(), len as u64);
    for e in &events {
        let (s, f, d) = (
            field(e, "sent_ms"),
            field(e, "first_byte_ms"),
            field(e, "done_ms"),
        );
        assert!(s <= f && f <= d, "times in order: {e}");
    }
}
