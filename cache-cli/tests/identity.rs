//! What names an object, and what never does (issue 9, bugs 1–5): each
//! test reproduces a bug of an earlier build with the real binary against
//! a real nginx origin.

mod support;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::nginx::Nginx;
use support::*;

/// Inode numbers of the data files of every object in `store`.
fn data_inodes(store: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for obj in std::fs::read_dir(store.join("objects"))
        .expect("objects")
        .flatten()
    {
        for f in std::fs::read_dir(obj.path()).expect("object dir").flatten() {
            if f.file_name().to_string_lossy().starts_with("data-") {
                out.push(f.metadata().expect("stat").ino());
            }
        }
    }
    out
}

#[test]
fn a_wrong_expected_hash_never_poisons_the_url() {
    let len = 3 * MIB + 5;
    let (ng, data, want) = origin(None, len, 31);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    // A SHA-256 pasted where a BLAKE3 was expected.
    let wrong = sum_of("sha256sum", &ng.root().join("disk.img"));
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url, "--blake3", &wrong]);
    let (code, err) = code_and_err(&run(c));
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains(&wrong) && err.contains(&want),
        "names both: {err}"
    );
    // The bytes stay, under the URL and their real hash only.
    let o = listed(&store, &url);
    assert_eq!(o["state"], "complete");
    assert_eq!(o["blake3"].as_str(), Some(want.as_str()));
    // (It is this object's SHA-256, so it may be listed as that — never
    // as its BLAKE3 address.)
    assert!(ls_json(&store)
        .iter()
        .all(|o| o["blake3"].as_str() != Some(wrong.as_str())));
    let mut c = bc(&store);
    c.args(["rm", &wrong[..12]]);
    assert_eq!(
        run(c).status.code(),
        Some(2),
        "the wrong hash names nothing"
    );
    let before = settled_log(&ng).len();
    // Without an expectation: at once, nothing downloaded again.
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    // With the right one: not even a request.
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url, "--blake3", &want]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    let log = settled_log(&ng);
    assert_eq!(fill_bytes(&log[before..]), 0, "{:#?}", &log[before..]);
    // The endpoint never serves the wrong hash.
    let (_server, addr) = start_serve(&store, &[]);
    let (status, _, _) = http_get(&addr, &format!("/blobs/{}", &wrong[..64]), None);
    assert_eq!(status, 404);
    let (status, _, body) = http_get(&addr, &format!("/blobs/{want}"), None);
    assert_eq!(status, 200);
    assert!(body == data);
}

#[test]
fn removing_one_of_two_copies_keeps_every_name() {
    let ng = Nginx::start();
    let data = pattern(32, 2 * MIB + 77);
    ng.put("a.img", &data);
    let b_path = ng.put("b.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    let sha = sum_of("sha256sum", &b_path);
    let (_t, store) = store_dir();
    for name in ["a.img", "b.img"] {
        let mut c = bc(&store);
        c.args(["-q", "fetch", &ng.url(name)]);
        assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    }
    // Stored once: both objects name one data file.
    let inodes = data_inodes(&store);
    assert_eq!(inodes.len(), 2);
    assert_eq!(inodes[0], inodes[1], "one shared data file");
    // Remove the copy the hash alias names first, then the other: every
    // name resolves while a copy exists.
    let mut c = bc(&store);
    c.args(["rm", &want]);
    ok(&run(c));
    for reference in [
        want.clone(),
        format!("sha256:{sha}"),
        format!("sha256:{}", &sha[..8]),
    ] {
        let mut c = bc(&store);
        c.args(["cat", &reference]);
        let out = run(c);
        ok(&out);
        assert!(out.stdout == data, "cat {reference}");
    }
    let left = ls_json(&store);
    assert_eq!(left.len(), 1);
    let (mut server, addr) = start_serve(&store, &[]);
    for path in [format!("/blobs/{want}"), format!("/blobs/sha256/{sha}")] {
        let (status, head, body) = http_get(&addr, &path, None);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(body == data, "{path}");
    }
    server.kill(); // it holds the object open: removal would be refused
    let mut c = bc(&store);
    c.args(["rm", left[0]["source"].as_str().expect("source")]);
    ok(&run(c));
    let mut c = bc(&store);
    c.args(["cat", &want]);
    assert_eq!(run(c).status.code(), Some(2), "no copy left");
}

#[test]
fn an_expected_hash_already_stored_asks_the_origin_nothing() {
    let ng = Nginx::start();
    let data = pattern(33, MIB + 3);
    ng.put("a.img", &data);
    ng.put("b.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    let (t, store) = store_dir();
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("a.img")]);
    ok(&run(c));
    let sha = listed(&store, &ng.url("a.img"))["digests"]["sha256"]
        .as_str()
        .expect("sha256 listed")
        .to_string();
    let before = settled_log(&ng).len();
    let out = t.path().join("copy.img");
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("b.img"), "--blake3", &want, "-o"])
        .arg(&out);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    assert!(std::fs::read(&out).expect("written") == data);
    let mut c = bc(&store);
    c.args(["-q", "fetch", &ng.url("b.img"), "--sha256", &sha]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    assert_eq!(settled_log(&ng).len(), before, "no request at all");
    // --revalidate asks the origin.
    let mut c = bc(&store);
    c.args([
        "-q",
        "fetch",
        &ng.url("b.img"),
        "--blake3",
        &want,
        "--revalidate",
    ]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    assert!(settled_log(&ng).len() > before);
}

#[test]
fn read_only_commands_never_create_a_store() {
    let t = tempfile::tempdir().expect("temp dir");
    let missing = t.path().join("nothing-here");
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for dir in [&missing, &empty] {
        for args in [
            &["ls"][..],
            &["ls", "--json"],
            &["cat", "abcd1234"],
            &["verify"],
            &["rm", "abcd1234"],
            &["gc"],
        ] {
            let mut c = bc(dir);
            c.args(args);
            let (code, err) = code_and_err(&run(c));
            assert_eq!(code, Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!("no store at {}", dir.display())),
                "{args:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
    assert!(!missing.exists(), "nothing created");
    assert_eq!(
        std::fs::read_dir(&empty).expect("ls").count(),
        0,
        "nothing written"
    );
}

/// `fetch URL -o -` into a pipe, once its first 10 bytes were read.
fn fetch_to_pipe(store: &Path, url: &str) -> (Bg, std::process::ChildStdout, [u8; 10]) {
    let mut c = bc(store);
    c.args(["-q", "fetch", url, "-o", "-"]);
    let mut child = Bg(spawn(c));
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).expect("first bytes");
    (child, stdout, head)
}

/// Byte ranges (`start..end`) of a request's `Range`, `None` when absent.
fn range_of(l: &LogLine) -> Option<std::ops::Range<u64>> {
    let (a, b) = l.range.strip_prefix("bytes=")?.split_once('-')?;
    Some(a.parse().ok()?..b.parse::<u64>().ok()? + 1)
}

#[test]
fn a_closed_stdout_stops_the_fetch_and_keeps_what_arrived() {
    let len = 48 * MIB;
    let (ng, data, want) = origin(Some("1m"), len, 34);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let (mut child, mut stdout, head) = fetch_to_pipe(&store, &url);
    assert_eq!(head[..], data[..10]);
    // The reader takes the first 3 MiB, then goes away (like `| head -c`).
    // What it got had arrived: that is what must stay durable (not merely
    // whatever the index says after the stop).
    let received = 3 * MIB;
    let mut rest = vec![0u8; received - head.len()];
    stdout.read_exact(&mut rest).expect("first 3 MiB");
    assert!(rest[..] == data[head.len()..received]);
    drop(stdout);
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "fetch went on after stdout closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let o = listed(&store, &url);
    assert_ne!(o["state"], "complete", "the fill stopped: {o}");
    let have = o["bytes_done"].as_u64().expect("bytes_done");
    let chunk = o["chunk_size"].as_u64().expect("chunk_size");
    // Every chunk the reader got in full.
    let arrived = received as u64 / chunk * chunk;
    assert!(arrived > 0 && have >= arrived, "{have} < {arrived}");
    // A later fetch resumes: it asks only for what is missing, never again
    // for a chunk that arrived before the stop, and never twice for the
    // same bytes.
    let before = settled_log(&ng).len();
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url]);
    assert_eq!(last_line(&ok(&run(c)).into_bytes()), want);
    let log = settled_log(&ng);
    let resumed = &log[before..];
    let fetched = fill_bytes(resumed);
    assert!(fetched < len as u64, "resumed, not started over: {fetched}");
    assert_eq!(fetched, len as u64 - have, "{resumed:#?}");
    let mut ranges: Vec<_> = resumed
        .iter()
        .filter(|l| l.method == "GET" && !is_probe(l))
        .map(|l| range_of(l).unwrap_or_else(|| panic!("a ranged read: {l:?}")))
        .collect();
    ranges.sort_by_key(|r| r.start);
    assert!(
        ranges.iter().all(|r| r.start >= arrived),
        "what arrived was fetched again: {ranges:?}"
    );
    assert!(
        ranges.windows(2).all(|w| w[0].end <= w[1].start),
        "no byte asked twice: {ranges:?}"
    );
}

#[test]
fn a_closed_stdout_leaves_the_fill_to_another_consumer() {
    let len = 24 * MIB;
    let (ng, _data, want) = origin(Some("2m"), len, 35);
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let (mut piped, stdout, _) = fetch_to_pipe(&store, &url);
    // Another process wants the whole object.
    let mut c = bc(&store);
    c.args(["-q", "fetch", &url]);
    let follower = spawn(c);
    std::thread::sleep(Duration::from_millis(300));
    drop(stdout);
    let o = finish(follower);
    assert_eq!(last_line(&ok(&o).into_bytes()), want);
    piped.kill();
}

/// Whether `help` lists `flag` as an option (at the start of a line, not
/// merely mentioned in another option's text).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|l| {
        let l = l.trim_start();
        let l = l
            .strip_prefix('-')
            .filter(|r| r.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
            .and_then(|r| r.split_once(", "))
            .map_or(l, |(_, long)| long);
        l.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=', '\t']))
    })
}

#[test]
fn help_lists_every_flag_of_the_issue() {
    let help = |cmd: &str| {
        let o = std::process::Command::new(BIN)
            .args([cmd, "--help"])
            .output()
            .expect("help");
        assert!(o.status.success(), "{cmd} --help");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let fetch = help("fetch");
    for flag in [
        "--checksum",
        "--sha256",
        "--blake3",
        "--checksums-file",
        "--header",
        "--user",
        "--netrc",
        "--netrc-file",
        "--ignore-query",
        "--cacert",
        "--retry",
        "--connect-timeout",
        "--revalidate",
    ] {
        assert!(
            lists_flag(&fetch, flag),
            "fetch --help lists {flag}:\n{fetch}"
        );
    }
    let serve = help("serve");
    assert!(
        lists_flag(&serve, "--mirror-header"),
        "serve --help lists --mirror-header:\n{serve}"
    );
    assert!(!lists_flag(&serve, "--no-such-flag"), "the check can fail");
}
