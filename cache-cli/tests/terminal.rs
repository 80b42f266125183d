//! The terminal output under a real pseudo-terminal of 80 columns
//! (`script` from util-linux runs the command on a pty): no visible line is
//! wider than the terminal, Ctrl-C leaves a one-line summary, a cache hit
//! says so. And a follower names the pid whose download it follows.
//! Every wait is bounded; nothing asserts on timing.

#[path = "support/data.rs"]
mod data;
#[path = "../../cache-http/tests/support/nginx.rs"]
mod nginx;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use data::pattern;
use nginx::{Nginx, NginxOptions};

const BIN: &str = env!("CARGO_BIN_EXE_blockcache");
const MIB: usize = 1 << 20;
const STEP: Duration = Duration::from_secs(120);

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `shell` (a command line) on an 80x24 pseudo-terminal and returns
/// everything the terminal received.
fn on_pty(shell: &str) -> String {
    let mut child = Command::new("script")
        .args([
            "-qfec",
            &format!("stty cols 80 rows 24; {shell}"),
            "/dev/null",
        ])
        .env_remove("RUST_LOG")
        .env_remove("BLOCKCACHE_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + STEP;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{shell} did not end within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    String::from_utf8_lossy(&reader.join().expect("reader")).into_owned()
}

/// The visible lines: escape sequences removed, split at CR and LF (each
/// redraw of the bar starts with CR).
fn visible_lines(raw: &str) -> Vec<String> {
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        text.push(c);
    }
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn assert_fits(lines: &[String]) {
    for l in lines {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l:?}");
    }
}

fn fetch_cmd(store: &Path, url: &str) -> String {
    format!(
        "{} --store {} fetch {}",
        quote(BIN),
        quote(&store.display().to_string()),
        quote(url)
    )
}

#[test]
fn progress_fits_80_columns_ctrl_c_summarises_and_a_hit_says_so() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("1m".into()),
    });
    ng.put(
        "a-rather-long-file-name-for-a-disk-image.qcow2",
        &pattern(64 * MIB, 1),
    );
    ng.put("small.img", &pattern(2 * MIB + 5, 2));
    let t = tempfile::tempdir().expect("temp dir");
    let store = t.path().join("store");

    // Ctrl-C (SIGINT from `timeout`) during a download.
    let big = ng.url("a-rather-long-file-name-for-a-disk-image.qcow2");
    let raw = on_pty(&format!("timeout -s INT 4 {}", fetch_cmd(&store, &big)));
    let lines = visible_lines(&raw);
    assert_fits(&lines);
    assert!(
        lines
            .iter()
            .any(|l| l.contains('[') && l.contains("downloading")),
        "a bar was drawn: {lines:?}"
    );
    let last = lines.last().expect("output");
    assert!(
        last.starts_with("blockcache: interrupted at ")
            && last.ends_with(" kept; run the same command to resume"),
        "one summary line at the end: {lines:?}"
    );

    // A complete object: the second fetch is a hit.
    let small = ng.url("small.img");
    let first = visible_lines(&on_pty(&fetch_cmd(&store, &small)));
    assert_fits(&first);
    let again = visible_lines(&on_pty(&fetch_cmd(&store, &small)));
    assert_fits(&again);
    assert!(
        again
            .iter()
            .any(|l| l == "small.img: already stored, 3 verified chunks, not re-downloaded"),
        "{again:?}"
    );
    assert!(
        !again.iter().any(|l| l.contains("/s")),
        "no rate for a hit: {again:?}"
    );
}

#[test]
fn a_follower_names_the_pid_it_follows_and_says_when_it_took_over() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("1m".into()),
    });
    ng.put("disk.img", &pattern(32 * MIB, 3));
    let t = tempfile::tempdir().expect("temp dir");
    let store = t.path().join("store");
    let fetch = || {
        let mut c = Command::new(BIN);
        c.env_remove("RUST_LOG")
            .arg("--store")
            .arg(&store)
            .args(["fetch", &ng.url("disk.img")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn fetch")
    };
    let mut leader = fetch();
    // The leader holds the lock once its pid file names it.
    let deadline = Instant::now() + STEP;
    while !std::fs::read_dir(store.join("objects"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| d.path().join("filler.pid").exists())
    {
        assert!(Instant::now() < deadline, "the leader never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut follower = fetch();
    let mut err = follower.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut acc = String::new();
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            acc.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(acc.clone());
        }
    });
    let want = format!("following pid {}", leader.id());
    let mut seen = String::new();
    while !seen.contains(&want) {
        seen = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("no {want:?} in {seen}"));
    }
    // The leader dies: the follower takes over and says so.
    let _ = leader.kill();
    let _ = leader.wait();
    while !seen.contains("downloading (took over)") {
        seen = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("no take-over in {seen}"));
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

fn bc_out(store: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .env_remove("RUST_LOG")
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run blockcache");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ls_ref_is_accepted_rm_and_gc_name_what_they_remove_cat_guards_the_terminal() {
    let t = tempfile::tempdir().expect("temp dir");
    let store = t.path().join("store");
    let bin_file = t.path().join("disk.raw");
    let text_file = t.path().join("notes.txt");
    std::fs::write(&bin_file, pattern(3 * MIB, 9)).expect("write");
    std::fs::write(&text_file, "hello from a text object\n".repeat(100)).expect("write");
    let mut hashes = Vec::new();
    for f in [&bin_file, &text_file] {
        let (code, out, err) = bc_out(&store, &["import", &f.display().to_string()]);
        assert_eq!(code, 0, "{err}");
        hashes.push(out.trim().to_owned());
    }
    let (_, table, _) = bc_out(&store, &["ls"]);
    let mut lines = table.lines();
    assert!(
        lines.next().is_some_and(|h| h.starts_with("REF ")),
        "{table}"
    );
    let refs: Vec<String> = lines
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    for h in &hashes {
        assert!(
            refs.iter().any(|r| h.starts_with(r.as_str())),
            "{h} in {table}"
        );
    }
    let bin_ref = refs
        .iter()
        .find(|r| hashes[0].starts_with(r.as_str()))
        .expect("ref of the binary object")
        .clone();
    let text_ref = refs
        .iter()
        .find(|r| hashes[1].starts_with(r.as_str()))
        .expect("ref of the text object")
        .clone();

    // cat on a terminal: binary refused without --force, text written.
    let cat = |args: &str| {
        visible_lines(&on_pty(&format!(
            "{} --store {} cat {args}; s=$?; echo; echo exit=$s",
            quote(BIN),
            quote(&store.display().to_string())
        )))
    };
    let refused = cat(&bin_ref);
    assert!(refused.iter().any(|l| l.contains("--force")), "{refused:?}");
    assert!(refused.iter().any(|l| l == "exit=2"), "{refused:?}");
    let text = cat(&text_ref);
    assert!(
        text.iter().any(|l| l == "hello from a text object"),
        "{text:?}"
    );
    assert!(text.iter().any(|l| l == "exit=0"), "{text:?}");
    let forced = cat(&format!("--force --range 0-9 {bin_ref}"));
    assert!(forced.iter().any(|l| l == "exit=0"), "{forced:?}");

    // ls --watch redraws the table until Ctrl-C, which ends it quietly.
    let watched = visible_lines(&on_pty(&format!(
        "timeout --preserve-status -s INT 3 {} --store {} ls --watch; echo exit=$?",
        quote(BIN),
        quote(&store.display().to_string())
    )));
    let frames = watched.iter().filter(|l| l.starts_with("REF ")).count();
    assert!(frames >= 2, "redrawn: {watched:?}");
    assert!(watched.iter().any(|l| l.contains("RATE")), "{watched:?}");
    assert_eq!(
        watched.last().map(String::as_str),
        Some("exit=0"),
        "{watched:?}"
    );

    // gc --dry-run names what would go and removes nothing.
    let (code, out, err) = bc_out(&store, &["gc", "--max-size", "0", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    for h in &hashes {
        assert!(
            out.contains("would evict import:") && out.contains(h.as_str()),
            "{out}"
        );
    }
    assert!(out.contains("nothing removed"), "{out}");
    let (_, table, _) = bc_out(&store, &["ls"]);
    assert_eq!(table.lines().count(), 3, "nothing was removed: {table}");

    // rm by the REF column; it names URL and hash.
    let (code, out, err) = bc_out(&store, &["rm", &text_ref]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "removed import:{} BLAKE3 {}",
            text_file.display(),
            hashes[1]
        )
    );
    let (code, out, _) = bc_out(&store, &["gc", "--max-size", "0"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "evicted import:{} BLAKE3 {}",
            bin_file.display(),
            hashes[0]
        )),
        "{out}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["blockcache", "fetch", "serve", "watch", "dry-run"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = Command::new(BIN).arg("man").output().expect("man");
    assert!(out.status.success());
    let roff = String::from_utf8_lossy(&out.stdout);
    assert!(roff.contains(".TH blockcache 1"), "{roff}");
    assert!(roff.contains("fetch"), "subcommands are listed");
    if Command::new("man").arg("--version").output().is_ok() {
        let t = tempfile::tempdir().expect("temp dir");
        let page = t.path().join("blockcache.1");
        std::fs::write(&page, &out.stdout).expect("write page");
        let rendered = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man -l");
        assert!(rendered.status.success(), "man renders the page");
    }
}
