//! A WAN in userspace: a TCP proxy that gives every connection a round
//! trip time and a rate cap, and all of them together one link cap (`tc
//! netem` is not available on the machines the benches run on).
//!
//! Each direction of a connection is a reader and a writer joined by a
//! bounded queue of pieces stamped with their arrival time: the writer
//! sends a piece half an RTT after it arrived, and downstream (origin →
//! client) no sooner than both the connection's pacer and the link's
//! pacer allow. The bounded queue is the connection's window: a reader
//! that is ahead waits, as a TCP sender waits for acks.
//!
//! ```sh
//! cargo run --release -p benches --example wan_link -- \
//!     --upstream 127.0.0.1:8080 --rtt-ms 40 --conn-mb 20 --link-mb 100
//! ```
//! prints `listening on 127.0.0.1:PORT` and serves until killed. Rates are
//! in MB/s (10^6 bytes).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest piece moved at once: small enough that pacing is smooth at
/// 20 MB/s (one piece = 0.8 ms).
const PIECE: usize = 16 << 10;

/// A pacer for a rate in bytes per second: hands out send times so that
/// the bytes reserved through it never exceed the rate.
struct Pacer {
    bytes_per_sec: f64,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(bytes_per_sec: f64) -> Arc<Pacer> {
        Arc::new(Pacer {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
        })
    }

    /// The time at which `n` bytes may go, not earlier than `not_before`.
    fn reserve(&self, n: usize, not_before: Instant) -> Instant {
        let mut next = self.next.lock();
        let start = (*next).max(not_before);
        *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        start
    }
}

struct Shape {
    one_way: Duration,
    /// Pacers a piece must pass (none upstream; connection and link
    /// downstream).
    pacers: Vec<Arc<Pacer>>,
    /// Pieces in flight per direction (the window).
    window: usize,
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shape: Shape) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(shape.window);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; PIECE];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now(), buf)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some((arrived, piece)) = rx.recv().await {
        let mut at = arrived + shape.one_way;
        for p in &shape.pacers {
            at = p.reserve(piece.len(), at);
        }
        tokio::time::sleep_until(at).await;
        if to.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let upstream = args
        .iter()
        .position(|a| a == "--upstream")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .expect("--upstream HOST:PORT");
    let rtt = Duration::from_millis(benches::arg("--rtt-ms", 40) as u64);
    let conn_rate = benches::arg("--conn-mb", 20) as f64 * 1e6;
    let link = Pacer::new(benches::arg("--link-mb", 100) as f64 * 1e6);
    // The window of one connection: its bandwidth-delay product, at least
    // 256 KiB (a TCP receive window of a default Linux socket).
    let bdp = (conn_rate * rtt.as_secs_f64()) as usize;
    let window = (bdp.max(256 << 10) / PIECE).max(4);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        let link = link.clone();
        tokio::spawn(async move {
            // The connect itself costs one round trip.
            tokio::time::sleep(rtt).await;
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = Shape {
                one_way: rtt / 2,
                pacers: Vec::new(),
                window,
            };
            let down = Shape {
                one_way: rtt / 2,
                pacers: vec![Pacer::new(conn_rate), link],
                window,
            };
            tokio::join!(pipe(cr, sw, up), pipe(sr, cw, down));
        });
    }
}
