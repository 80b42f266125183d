//! `blockcache demo`: the README's main job, offline.
//!
//! This process starts the origin, fetches the image (becoming its filler)
//! and reads its far end while it downloads; a second OS process of this
//! same binary (`blockcache fetch`) fetches the same URL into the same
//! store and follows the first process's fill instead of downloading
//! again. At the end the demo checks three things and prints them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cache_core::{FetchOptions, Store, StoreOptions};
use cache_http::HttpSource;

use crate::cli::{DemoArgs, Global};
use crate::commands::{http_config, source_factory};
use crate::origin::{Image, Origin};
use crate::progress::{Mode, Reporter};
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

    let store = Store::open_with(
        &dir,
        StoreOptions {
            source_factory: Some(source_factory(http_config(None))),
            ..StoreOptions::default()
        },
    )
    .map_err(|e| Failure::core(&dir.display().to_string(), e))?;
    let source = HttpSource::new(&url, http_config(None))
        .map_err(|e| Failure::new(exit::NETWORK, e.to_string()))?;
    let t0 = Instant::now();
    let object = store
        .fetch(Arc::new(source), FetchOptions::default())
        .await
        .map_err(|e| Failure::core(&url, e))?;
    let reporter = Reporter::start(&object, "consumer 1".into(), Mode::detect(g.quiet));

    // Consumer 2: another OS process, same store, same URL.
    let exe = std::env::current_exe().map_err(|e| Failure::io("demo: own executable", e))?;
    let child = tokio::process::Command::new(exe)
        .arg("--store")
        .arg(&dir)
        .args(["-q", "fetch", &url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::io("demo: start consumer 2", e))?;
    let child_pid = child.id().unwrap_or(0);

    // The far end, while the image downloads.
    let far_len = (1u64 << 20).min(image.len);
    let far_start = image.len - far_len;
    let far = object
        .read_at(far_start, far_len)
        .await
        .map_err(|e| Failure::core(&url, e))?;
    let far_secs = t0.elapsed().as_secs_f64();
    let at_far = object.progress();
    let far_ok = far[..] == image.bytes(far_start, image.len)[..];

    let h1 = object.wait_complete().await;
    let fill_secs = t0.elapsed().as_secs_f64();
    reporter.finish().await;
    let h1 = h1.map_err(|e| Failure::core(&url, e))?;
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Failure::io("demo: consumer 2", e))?;
    let h2 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    if !out.status.success() {
        return Err(Failure::new(
            exit::NETWORK,
            format!(
                "demo: consumer 2 (pid {child_pid}) failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let generated = tokio::task::spawn_blocking(move || image.blake3())
        .await
        .map_err(|e| Failure::new(exit::LOCAL_IO, format!("demo: hash task: {e}")))?;

    let sent = origin.stats.body_bytes.load(Ordering::Relaxed);
    let probes = origin.stats.probes.load(Ordering::Relaxed);
    let requests = origin.stats.requests.load(Ordering::Relaxed);
    // A request the scheduler cuts short (to serve a demand first) may
    // have a piece in flight past the cut: allow one chunk per connection.
    let slack = u64::from(object.chunk_size()) * (cache_core::fill::DEFAULT_CONNECTIONS as u64 + 1);
    let once = sent >= image.len && sent - image.len <= slack;
    let early = far_ok && at_far.bytes_done < image.len;
    let verified = h1 == generated && h2 == generated.to_hex().as_str();
    println!(
        "consumers: this process (pid {}) filled; process {child_pid} followed its fill",
        std::process::id()
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
        "verified:  BLAKE3 {} (both consumers) {} generator's {}",
        h1.to_hex(),
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
