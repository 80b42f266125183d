//! The `stream_while_downloading` example, run as a user would against a
//! throttled real nginx: its tail arrives before the download ends, and the
//! streamed object hashes to the file's BLAKE3.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::nginx::{Nginx, NginxOptions};
use support::pattern;

/// `cargo test --all-targets` builds the examples beside the test binaries
/// (`target/<profile>/examples/`).
fn example_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("current exe");
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

#[test]
fn example_reads_the_tail_first_and_streams_the_image() {
    // `cargo test --all-targets` (what .ci/run runs) has built it already;
    // building again is then a no-op, and it keeps a narrower
    // `cargo test --test example_stream` from running a stale binary.
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "cache-http",
            "--example",
            "stream_while_downloading",
        ])
        .status()
        .expect("cargo build --example");
    assert!(status.success(), "building the example failed");
    let bin = example_binary("stream_while_downloading");
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("20m".into()),
    });
    let len = 24 << 20;
    let data = pattern(len as u64, len);
    ng.put("image.raw", &data);
    let store = tempfile::tempdir().expect("store dir");

    let out = Command::new(&bin)
        .arg(ng.url("image.raw"))
        .arg(store.path())
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tail: Vec<String> = data[len - 16..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let first = stdout.lines().next().expect("a tail line");
    assert!(
        first.starts_with(&format!("tail [{}]", tail.join(", "))),
        "{first}"
    );
    // At 4 connections x 20 MiB/s the 24 chunks take ~0.3 s; the tail is
    // demanded first, so it is read while most of them are still missing.
    let done: u64 = first
        .split(" read with ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("chunk count in the tail line");
    assert!(done < 24, "the tail waited for the whole download: {first}");
    let want = format!("streamed {len} bytes, BLAKE3 {}", blake3::hash(&data));
    assert_eq!(stdout.lines().nth(1), Some(want.as_str()));
}
