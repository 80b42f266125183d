//! SHA-256 and SHA-512 (issue 9): right, wrong, from a SHA256SUMS file
//! served by nginx and from a BSD-style file, for the lengths where chunk
//! arithmetic goes wrong, a multi-chunk object filled out of order, and a
//! fill killed with SIGKILL and resumed. Every digest is compared with what
//! `sha256sum` / `sha512sum` print.

mod support;

use std::path::Path;
use std::time::Duration;

use support::nginx::Nginx;
use support::*;

const CHUNK: usize = 64 * 1024;

/// The SHA-256 and SHA-512 hex that coreutils print for `path`.
fn coreutils_sums(path: &Path) -> (String, String) {
    (sum_of("sha256sum", path), sum_of("sha512sum", path))
}

fn fetch(store: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    let mut c = bc(store);
    c.args(["-q", "fetch", url, "--chunk-size", "64KiB"])
        .args(extra);
    run(c)
}

/// Every check of the issue for one object length.
fn check_length(len: usize) {
    let ng = Nginx::start();
    let data = pattern(40 + len as u64, len);
    let file = ng.put("disk.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    let (sha256, sha512) = coreutils_sums(&file);
    ng.put(
        "SHA256SUMS",
        format!("{sha256}  disk.img\n{}  other.img\n", "0".repeat(64)).as_bytes(),
    );
    let url = ng.url("disk.img");
    let t = tempfile::tempdir().expect("temp dir");
    let bsd = t.path().join("SHA512SUMS");
    std::fs::write(&bsd, format!("SHA512 (disk.img) = {sha512}\n")).expect("write sums");

    // Right, from the SHA256SUMS nginx serves: the fill computes SHA-256.
    let store = t.path().join("s1");
    let sums_url = ng.url("SHA256SUMS");
    let o = fetch(&store, &url, &["--checksums-file", &sums_url]);
    assert_eq!(last_line(&ok(&o).into_bytes()), want, "len {len}");
    let listed_digests = listed(&store, &url)["digests"].clone();
    assert_eq!(
        listed_digests["sha256"].as_str(),
        Some(sha256.as_str()),
        "len {len}"
    );
    assert_eq!(listed_digests["blake3"].as_str(), Some(want.as_str()));
    // Right, SHA-512 from a BSD-style file (computed from the stored copy).
    let o = fetch(
        &store,
        &url,
        &["--checksums-file", bsd.to_str().expect("utf-8")],
    );
    assert_eq!(last_line(&ok(&o).into_bytes()), want, "len {len}");
    assert_eq!(
        listed(&store, &url)["digests"]["sha512"].as_str(),
        Some(sha512.as_str()),
        "len {len}"
    );
    // Names: sha256:HEX and a prefix of it.
    for r in [
        format!("sha256:{sha256}"),
        format!("sha256:{}", &sha256[..8]),
    ] {
        let mut c = bc(&store);
        c.args(["cat", &r]);
        let out = run(c);
        ok(&out);
        assert!(out.stdout == data, "cat {r}");
    }

    // Right, SHA-512 expected up front: computed during the fill.
    let store = t.path().join("s2");
    let o = fetch(&store, &url, &["--checksum", &format!("sha512={sha512}")]);
    assert_eq!(last_line(&ok(&o).into_bytes()), want, "len {len}");
    let d = listed(&store, &url)["digests"].clone();
    assert_eq!(d["sha512"].as_str(), Some(sha512.as_str()), "len {len}");
    assert_eq!(d["sha256"].as_str(), Some(sha256.as_str()), "len {len}");

    // Wrong: exit 4 naming both, the object kept under its URL.
    let store = t.path().join("s3");
    let mut bad256 = sha256.clone();
    let last = bad256.pop().expect("hex");
    bad256.push(if last == '0' { '1' } else { '0' });
    let (code, err) = code_and_err(&fetch(&store, &url, &["--sha256", &bad256]));
    assert_eq!(code, Some(4), "len {len}: {err}");
    assert!(err.contains(&bad256) && err.contains(&sha256), "{err}");
    let bad512 = "a".repeat(128);
    let (code, err) = code_and_err(&fetch(
        &store,
        &url,
        &["--checksum", &format!("sha512={bad512}")],
    ));
    assert_eq!(code, Some(4), "len {len}: {err}");
    assert!(err.contains(&bad512) && err.contains(&sha512), "{err}");
    assert!(!format!("{:?}", ls_json(&store)).contains(&bad256));
    let o = fetch(&store, &url, &["--sha256", &sha256]);
    assert_eq!(last_line(&ok(&o).into_bytes()), want, "len {len}");
}

#[test]
fn empty_object() {
    check_length(0);
}

#[test]
fn one_byte() {
    check_length(1);
}

#[test]
fn one_chunk_minus_one() {
    check_length(CHUNK - 1);
}

#[test]
fn one_chunk_plus_one() {
    check_length(CHUNK + 1);
}

#[test]
fn multi_chunk_filled_out_of_order() {
    let len = 200 * CHUNK + 4321;
    let (ng, data, want) = origin(Some("512k"), len, 41);
    let (sha256, sha512) = coreutils_sums(&ng.root().join("disk.img"));
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    let mut f = bc(&store);
    // SHA-512 expected up front: both SHA-2 digests follow the prefix.
    let expect512 = format!("sha512={sha512}");
    f.args(["-q", "fetch", &url, "--chunk-size", "64KiB"])
        .args(["--checksum", &expect512]);
    let mut filler = Bg(spawn(f));
    wait_bytes_done(&store, 1);
    // A far demand read first (another process): those chunks jump ahead.
    let mut c = bc(&store);
    c.args(["cat", &url, "--range", "-1000"]);
    let oc = run(c);
    ok(&oc);
    assert!(oc.stdout == data[len - 1000..]);
    assert_ne!(listed(&store, &url)["state"], "complete", "read came first");
    let deadline = std::time::Instant::now() + STEP;
    while listed(&store, &url)["state"] != "complete" {
        assert!(
            std::time::Instant::now() < deadline,
            "fill did not complete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    filler.kill();
    let d = listed(&store, &url)["digests"].clone();
    assert_eq!(d["sha256"].as_str(), Some(sha256.as_str()));
    assert_eq!(d["sha512"].as_str(), Some(sha512.as_str()));
    assert_eq!(d["blake3"].as_str(), Some(want.as_str()));
}

/// Whether the store's one object has its `prefix` file.
fn prefix_checkpoint_exists(store: &Path) -> bool {
    std::fs::read_dir(store.join("objects"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("prefix").exists())
}

#[test]
fn killed_and_resumed_fetch_ends_with_the_right_sha256() {
    let len = 20 * MIB + 999;
    let (ng, _data, want) = origin(Some("2m"), len, 42);
    let (sha256, _) = coreutils_sums(&ng.root().join("disk.img"));
    let (_t, store) = store_dir();
    let url = ng.url("disk.img");
    // One connection: front to back at 2 MB/s, so the prefix grows
    // steadily and its checkpoint is there for seconds before the end.
    let mut a = bc(&store);
    a.args(["-q", "fetch", &url, "--connections", "1"]);
    let mut a = Bg(spawn(a));
    // Killed once the SHA-256 state of a prefix is saved with the object
    // (every 2.5 MiB here, once those chunks are durable).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !prefix_checkpoint_exists(&store) {
        assert!(std::time::Instant::now() < deadline, "no prefix checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill(); // SIGKILL
    let have = bytes_done(&store);
    assert!(have > 0 && have < len as u64, "partial: {have}");
    let mut b = bc(&store);
    b.args(["-v", "fetch", &url, "--sha256", &sha256]);
    let o = run(b);
    assert_eq!(last_line(&ok(&o).into_bytes()), want);
    let err = String::from_utf8_lossy(&o.stderr);
    // The SHA-256 state of the prefix was saved with the object (every
    // 2.5 MiB here): the resume takes it up instead of hashing again
    // what the killed fetch had hashed.
    assert!(err.contains("took up the SHA-2 state"), "{err}");
    assert_eq!(
        listed(&store, &url)["digests"]["sha256"].as_str(),
        Some(sha256.as_str())
    );
}

#[test]
fn endpoint_serves_by_sha256_with_repr_digest() {
    let len = 3 * MIB + 1;
    let (ng, data, want) = origin(None, len, 43);
    let (sha256, sha512) = coreutils_sums(&ng.root().join("disk.img"));
    let (_t, store) = store_dir();
    let o = fetch(
        &store,
        &ng.url("disk.img"),
        &["--checksum", &format!("sha512={sha512}")],
    );
    assert_eq!(last_line(&ok(&o).into_bytes()), want);
    let (_server, addr) = start_serve(&store, &[]);
    let repr = format!(
        "repr-digest: sha-256=:{}:, sha-512=:{}:",
        hex_to_base64(&sha256),
        hex_to_base64(&sha512)
    );
    for path in [format!("/blobs/sha256/{sha256}"), format!("/blobs/{want}")] {
        let (status, head, body) = http_get(&addr, &path, Some("0-99"));
        assert_eq!(status, 206, "{path}: {head}");
        assert_eq!(body, &data[..100]);
        assert!(head.contains(&repr), "{path}: {head}");
    }
    let (status, _, _) = http_get(&addr, &format!("/blobs/sha256/{}", "0".repeat(64)), None);
    assert_eq!(status, 404);
}
