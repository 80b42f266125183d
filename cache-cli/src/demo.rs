//! `blockcache demo`: the README's main job, offline.
//!
//! This process starts the origin and watches; the consumers are OS
//! processes of this same binary sharing one store: `fetch` (it
//! downloads), `cat --range` of the last MiB (its demand crosses to the
//! downloading process, which fetches that part first), and a second
//! `fetch` half a second later (it follows the download instead of
//! starting another). At the end the demo checks three things and prints
//! them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use std::process::Stdio;

use cache_core::{Object, ObjectState, Store};

use crate::cli::{DemoArgs, Global};
use crate::origin::{Image, Origin};
use crate::size::human;
use crate::{exit, Failure};

pub async fn run(g: &Global, a: DemoArgs) -> Result<(), Failure> {
    if a.size == 0 {
        return Err(Failure::usage("demo: --size must be above zero"));
    }
    let image = Image {
        len: a.size,
        seed: 0x0b10_c0ca_c4e0,
    };
    let origin = Origin::start(image, a.rate)
        .await
        .map_err(|e| Failure::io("demo: start origin", e))?;
    let url = format!("http://{}/image.raw", origin.addr);
    let (dir, _tmp) = match &g.store {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("blockcache-demo-")
                .tempdir()
                .map_err(|e| Failure::io("demo: temporary store", e))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!(
        "origin:    {url} serves a generated {} image at {}/s (shared by all connections)",
        human(image.len),
        human(a.rate)
    );
    println!("store:     {}", dir.display());

    let store = Store::open(&dir).map_err(|e| Failure::core(&dir.display().to_string(), e))?;
    let exe = std::env::current_exe().map_err(|e| Failure::io("demo: own executable", e))?;
    let consumer = |args: &[&str], show: bool| {
        let mut c = tokio::process::Command::new(&exe);
        c.arg("--store")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if show {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .kill_on_drop(true);
        c.spawn()
    };
    let t0 = Instant::now();
    // Consumer 1: the first to ask; it downloads (shows its progress).
    let mut args1 = vec!["fetch", url.as_str()];
    if g.quiet {
        args1.insert(0, "-q");
    }
    let c1 = consumer(&args1, true).map_err(|e| Failure::io("demo: start consumer 1", e))?;
    let object = wait_filling(&store, &url).await?;
    // A far reader, in its own process: the last MiB, while it downloads.
    let far_len = (1u64 << 20).min(image.len);
    let far_start = image.len - far_len;
    let range = format!("{far_start}-{}", image.len - 1);
    let reader = consumer(&["-q", "cat", &url, "--range", &range], false)
        .map_err(|e| Failure::io("demo: start the far reader", e))?;
    // Consumer 2, half a second later: it follows consumer 1's download.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let c2 = consumer(&["-q", "fetch", &url], false)
        .map_err(|e| Failure::io("demo: start consumer 2", e))?;
    let pids = [c1.id(), c2.id(), reader.id()].map(|p| p.unwrap_or(0));

    let far = reader
        .wait_with_output()
        .await
        .map_err(|e| Failure::io("demo: far reader", e))?;
    let far_secs = t0.elapsed().as_secs_f64();
    let at_far = object.progress();
    check_child("far reader", &far)?;
    let far_ok = far.stdout[..] == image.bytes(far_start, image.len)[..];
    let o1 = c1
        .wait_with_output()
        .await
        .map_err(|e| Failure::io("demo: consumer 1", e))?;
    let fill_secs = t0.elapsed().as_secs_f64();
    let o2 = c2
        .wait_with_output()
        .await
        .map_err(|e| Failure::io("demo: consumer 2", e))?;
    check_child("consumer 1", &o1)?;
    check_child("consumer 2", &o2)?;
    let (h1, h2) = (last_line(&o1.stdout), last_line(&o2.stdout));
    let generated = tokio::task::spawn_blocking(move || image.blake3())
        .await
        .map_err(|e| Failure::new(exit::LOCAL_IO, format!("demo: hash task: {e}")))?;

    let sent = origin.stats.body_bytes.load(Ordering::Relaxed);
    let probes = origin.stats.probes.load(Ordering::Relaxed);
    let requests = origin.stats.requests.load(Ordering::Relaxed);
    // A request the scheduler cuts short (to serve a demand first) may
    // have a piece in flight past the cut: allow one chunk per connection.
    let slack = u64::from(object.chunk_size()) * (cache_core::DEFAULT_CONNECTIONS as u64 + 1);
    let once = sent >= image.len && sent - image.len <= slack;
    let early = far_ok && at_far.bytes_done < image.len;
    let verified = h1 == generated.to_hex().as_str() && h2 == h1;
    println!(
        "consumers: process {} downloaded; process {} followed its download; process {} read the far end",
        pids[0], pids[1], pids[2]
    );
    println!(
        "once:      origin sent {sent} body bytes for a {}-byte image in {requests} requests (+{probes} one-byte probes): {}",
        image.len,
        match (once, sent - sent.min(image.len)) {
            (true, 0) => "downloaded once".to_string(),
            (true, extra) => format!("downloaded once ({} cut off in flight when a request was re-planned)", human(extra)),
            (false, _) => "NOT downloaded once".to_string(),
        }
    );
    println!(
        "early:     last {} read after {far_secs:.2} s, with {:.1}% of the image downloaded (download took {fill_secs:.2} s): {}",
        human(far_len),
        at_far.bytes_done as f64 * 100.0 / image.len as f64,
        if early { "read while downloading" } else if far_ok { "NOT before the download ended" } else { "WRONG BYTES" }
    );
    println!(
        "verified:  BLAKE3 {h1} (both consumers) {} generator's {}",
        if verified { "==" } else { "!=" },
        generated.to_hex()
    );
    if once && early && verified {
        println!("demo: OK");
        Ok(())
    } else {
        Err(Failure::new(
            exit::VERIFICATION,
            "demo: a check failed (see above)",
        ))
    }
}

fn last_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn check_child(what: &str, out: &std::process::Output) -> Result<(), Failure> {
    if out.status.success() {
        return Ok(());
    }
    Err(Failure::new(
        out.status.code().map_or(exit::NETWORK, |c| c as u8),
        format!(
            "demo: {what} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Waits (at most a minute) until the object of `url` is registered and
/// being filled, and opens it to watch its progress.
async fn wait_filling(store: &Store, url: &str) -> Result<Object, Failure> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(list) = store.list() {
            if list.iter().any(|o| {
                o.info.source == url && (o.state.is_filling() || o.state == ObjectState::Complete)
            }) {
                return store.open_ref(url).map_err(|e| Failure::core(url, e));
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::new(
                exit::NETWORK,
                format!("demo: {url}: the download did not start within a minute"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
