//! The status page's cost in a real browser with a 45 GiB object (46 080
//! chunks of 1 MiB) filling: frame rate, main-thread time and JS heap.
//!
//! An endpoint (in this process) mirrors a generated origin
//! ([`benches::gated::GatedSource`]: every chunk the same bytes, released
//! at `--rate` MiB/s, so the object costs no memory); a few readers demand
//! far ranges (their cells turn "demanded" and stay so). Headless Chromium
//! opens `/`, the page selects the object and draws its chunk map; for
//! `--seconds` the bench records every animation frame
//! (`requestAnimationFrame` intervals), the page's main-thread work
//! (DevTools `Performance.getMetrics`: script, layout, style, task
//! durations) and the JS heap before and after (after a forced GC).
//!
//! ```sh
//! cargo run --release -p benches --example status_page_fps -- --seconds 20 --rate 100
//! ```

#[path = "../../cache-cli/tests/support/cdp.rs"]
mod cdp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::gated::GatedSource;
use cache_core::{Source, Store};
use cache_http::endpoint::{Endpoint, EndpointConfig, MirrorConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: u64 = 1 << 20;
const CHUNKS: u64 = 46_080; // 45 GiB

/// Starts a GET of `range` and keeps reading it in the background.
async fn reader(addr: std::net::SocketAddr, range: String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let req = format!("GET /m/m/big.img HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    });
}

fn metrics(page: &mut cdp::Chromium) -> std::collections::HashMap<String, f64> {
    let r = page.call("Performance.getMetrics", json!({}));
    r["metrics"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["value"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn heap_used(page: &mut cdp::Chromium) -> f64 {
    page.call("HeapProfiler.collectGarbage", json!({}));
    page.call("Runtime.getHeapUsage", json!({}))["usedSize"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

fn main() {
    let seconds = benches::arg("--seconds", 20) as u64;
    let rate = benches::arg("--rate", 100) as u64; // MiB/s
    let rt = benches::runtime();
    let dir = benches::tempdir();
    let store = Store::open(dir.path()).expect("store");
    let source = GatedSource::new("http://origin.invalid/big.img", CHUNK, CHUNKS);
    let src = source.clone();
    let config = EndpointConfig {
        mirrors: vec![MirrorConfig::new(
            "m",
            url::Url::parse("http://origin.invalid/").expect("url"),
        )],
        source_factory: Some(Arc::new(move |_: &str| {
            Ok(Arc::new(src.clone()) as Arc<dyn Source>)
        })),
        ..EndpointConfig::default()
    };
    let addr = rt.block_on(async {
        let bound = Endpoint::bind(store.clone(), config).await.expect("bind");
        let addr = bound.local_addr();
        tokio::spawn(bound.serve(std::future::pending()));
        // The first reader starts the fill; the others demand far ranges.
        reader(addr, "0-".into()).await;
        for k in [9_000u64, 23_000, 37_000, 46_000] {
            reader(addr, format!("{}-{}", k * CHUNK, (k + 3) * CHUNK - 1)).await;
        }
        addr
    });
    // Bytes flow at `rate` MiB/s from offset 0.
    let released = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rel = released.clone();
    let gate = source.clone();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let per_tick = rate * CHUNK / 50;
        loop {
            tick.tick().await;
            let upto = rel.fetch_add(per_tick, std::sync::atomic::Ordering::Relaxed) + per_tick;
            gate.release(upto.min(CHUNK * CHUNKS));
        }
    });

    let mut page = cdp::Chromium::launch(1280, 800);
    page.open(&format!("http://{addr}/"));
    page.call("Performance.enable", json!({}));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chunks = page.eval(
            "document.getElementById('map') && document.getElementById('map').dataset.chunks",
        );
        if chunks.as_str() == Some(&CHUNKS.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never drew the 46 080-chunk map ({chunks})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2)); // past the first full draw
    let heap_before = heap_used(&mut page);
    let before = metrics(&mut page);
    let events_before = page.eval("document.getElementById('map').dataset.events");
    page.eval(
        "window.__frames = []; (function f(t) { window.__frames.push(t); requestAnimationFrame(f); })(performance.now()); 0",
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let frames: Vec<f64> = page
        .eval("JSON.stringify(window.__frames)")
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let wall = started.elapsed().as_secs_f64();
    let after = metrics(&mut page);
    let heap_after = heap_used(&mut page);
    let complete = page.eval("document.getElementById('map').dataset.complete");
    let events_after = page.eval("document.getElementById('map').dataset.events");

    let mut intervals: Vec<f64> = frames.windows(2).map(|w| w[1] - w[0]).collect();
    intervals.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        intervals
            .get(((intervals.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let busy = |name: &str| {
        (after.get(name).unwrap_or(&0.0) - before.get(name).unwrap_or(&0.0)) / wall * 1000.0
    };
    let released_mib = released.load(std::sync::atomic::Ordering::Relaxed) / CHUNK;
    println!(
        "status page, 45 GiB object ({CHUNKS} chunks), origin {rate} MiB/s, {seconds} s window"
    );
    println!("  chunks released during the run: ~{}", rate * seconds);
    println!("  map complete cells at the end: {complete} (released {released_mib} MiB in all)");
    println!(
        "  frames: {} in {wall:.1} s = {:.1} fps; interval median {:.1} ms, p99 {:.1} ms, max {:.1} ms; frames over 20 ms: {}",
        frames.len(),
        frames.len() as f64 / wall,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        intervals.iter().filter(|&&i| i > 20.0).count()
    );
    println!(
        "  main thread per second: tasks {:.1} ms, script {:.1} ms, layout {:.1} ms, style {:.1} ms",
        busy("TaskDuration"),
        busy("ScriptDuration"),
        busy("LayoutDuration"),
        busy("RecalcStyleDuration")
    );
    println!(
        "  JS heap after GC: {:.2} MiB before, {:.2} MiB after ({:+.2} MiB)",
        heap_before / 1048576.0,
        heap_after / 1048576.0,
        (heap_after - heap_before) / 1048576.0
    );
    println!(
        "  DOM nodes: {}; events: {events_before} -> {events_after}",
        after.get("Nodes").copied().unwrap_or(f64::NAN)
    );
    drop(page);
    rt.shutdown_background();
}
