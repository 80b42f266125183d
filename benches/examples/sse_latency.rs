//! Delay from a chunk commit to its `/events` delta, with idle clients.
//!
//! An endpoint (in this process) mirrors an in-memory origin paced like a
//! WAN link; `--clients` (default 100) `/events` clients stay connected
//! and read; one more client timestamps every delta that marks chunks
//! complete. The object's own chunk feed timestamps each commit. Prints
//! the commit → delta delay (median, p99, max) over all chunks.
//!
//! ```sh
//! cargo run --release -p benches --example sse_latency -- --clients 100 --size 64
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testing::MemorySource;
use cache_core::{ChunkChange, Source, Store};
use cache_http::endpoint::{Endpoint, EndpointConfig, MirrorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn events(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clients = benches::arg("--clients", 100);
    let size = benches::arg("--size", 64) << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let url = "http://origin.invalid/x.img";
    // 64 KiB pieces 2 ms apart: ~32 MiB/s per connection.
    let source = Arc::new(
        MemorySource::new(url, benches::pattern(size, 5))
            .with_piece_size(64 << 10)
            .with_piece_delay_ms(2),
    );
    let config = EndpointConfig {
        mirrors: vec![MirrorConfig::new(
            "m",
            url::Url::parse("http://origin.invalid/").expect("url"),
        )],
        source_factory: Some(Arc::new(move |_: &str| {
            Ok(source.clone() as Arc<dyn Source>)
        })),
        ..EndpointConfig::default()
    };
    let bound = Endpoint::bind(store.clone(), config).await.expect("bind");
    let addr = bound.local_addr();
    tokio::spawn(bound.serve(std::future::pending()));

    // Idle clients: connected, reading and discarding.
    for _ in 0..clients {
        let mut s = events(addr).await;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
    // The timed client: chunk -> time its delta arrived.
    let mut timed = events(addr).await;
    let seen = tokio::spawn(async move {
        let mut arrived: HashMap<u32, Instant> = HashMap::new();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let n = match tokio::time::timeout(Duration::from_secs(3), timed.read(&mut chunk)).await
            {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            let now = Instant::now();
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let ev: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&ev);
                let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                let list = v["objects"].as_array().cloned().unwrap_or_default();
                for o in list {
                    for run in o["cells"].as_array().cloned().unwrap_or_default() {
                        if run[2] == 3 {
                            let (a, b) =
                                (run[0].as_u64().unwrap_or(0), run[1].as_u64().unwrap_or(0));
                            for c in a..b {
                                arrived.entry(c as u32).or_insert(now);
                            }
                        }
                    }
                }
            }
        }
        arrived
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Start the fill, then watch commits in process.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /m/m/x.img HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
    let object = store.open_ref(url).expect("object");
    let (map, mut rx) = object.chunk_feed();
    let mut committed: HashMap<u32, Instant> = HashMap::new();
    let total = map.chunk_count;
    let mut done = map.done.len() as u32;
    while done < total {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Ok(ChunkChange::Done(r))) => {
                for c in r {
                    committed.insert(c, Instant::now());
                    done += 1;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("feed: {e}"),
            Err(_) => panic!("fill stalled"),
        }
    }
    let arrived = seen.await.expect("client");
    let mut delays: Vec<Duration> = committed
        .iter()
        .filter_map(|(c, t)| arrived.get(c).map(|a| a.saturating_duration_since(*t)))
        .collect();
    delays.sort();
    let pick = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "{clients} idle clients + 1 timed; {} of {} commits seen in deltas; commit -> delta: median {:?}, p99 {:?}, max {:?}",
        delays.len(),
        committed.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
}
