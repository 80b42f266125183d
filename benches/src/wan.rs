//! A WAN in userspace (`examples/wan_link.rs`, `wan.sh`): a TCP proxy
//! that gives every connection a round trip time and a rate cap, and all
//! of them together one link cap (`tc netem` is not available on the
//! machines the benches run on).
//!
//! # The model
//!
//! Each direction of a connection is a reader and a writer joined by a
//! bounded queue of pieces stamped with their arrival time. Downstream
//! (origin → client) a piece passes three stages in order, like a packet
//! on its way through a WAN:
//!
//! 1. propagation: it is held until half an RTT after it arrived;
//! 2. the connection's pacer (its rate cap);
//! 3. the link's pacer, shared by all connections: first come, first
//!    served, which is a bottleneck router's FIFO queue.
//!
//! A piece asks a stage for its slot only once it has reached that stage.
//! That rule is what keeps the link work-conserving: a piece that reserved
//! the link when it *arrived* would hold the link for everyone until it got
//! there, and the link would idle for half an RTT every time a body starts
//! on a connection whose queue was empty (the bug this module was split out
//! to fix and test; BENCHMARKS.md, WAN, "The simulator's own stall").
//!
//! Each stage hands out slots from the earliest time the piece could be
//! there (not from when its writer woke up), so a timer that fires late
//! costs no link time: the next pieces catch up.
//!
//! The bounded queue is the connection's window: a reader that is ahead
//! waits, as a TCP sender waits for acks. Upstream (client → origin) only
//! the propagation delay applies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    /// Time this stage had no piece to send, in µs (every pacer counts
    /// it; [`Link::idle`] reads the link's).
    idle_us: AtomicU64,
}

impl Pacer {
    fn new(bytes_per_sec: f64) -> Arc<Pacer> {
        Arc::new(Pacer {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
            idle_us: AtomicU64::new(0),
        })
    }

    /// The time at which `n` bytes that reached this stage at `ready` may
    /// go: `ready` itself when the stage is free, else when it frees up.
    fn reserve(&self, n: usize, ready: Instant) -> Instant {
        let mut next = self.next.lock();
        if ready > *next {
            let idle = ready - *next;
            self.idle_us
                .fetch_add(idle.as_micros() as u64, Ordering::Relaxed);
        }
        let start = (*next).max(ready);
        *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        start
    }
}

/// The shape of the WAN: what every connection gets and what they share.
#[derive(Clone, Debug)]
pub struct WanShape {
    pub rtt: Duration,
    /// Rate cap of one connection, bytes per second.
    pub conn_rate: f64,
    /// Rate cap of all connections together, bytes per second.
    pub link_rate: f64,
}

impl WanShape {
    /// Pieces in flight per direction of one connection: its
    /// bandwidth-delay product, at least 256 KiB (the receive window of a
    /// default Linux socket).
    fn window(&self) -> usize {
        let bdp = (self.conn_rate * self.rtt.as_secs_f64()) as usize;
        (bdp.max(256 << 10) / PIECE).max(4)
    }
}

/// The shared part of the WAN: the link and what went through it.
pub struct Link {
    shape: WanShape,
    pacer: Arc<Pacer>,
    /// Bytes delivered downstream.
    bytes: AtomicU64,
}

impl Link {
    pub fn new(shape: WanShape) -> Arc<Link> {
        Arc::new(Link {
            pacer: Pacer::new(shape.link_rate),
            shape,
            bytes: AtomicU64::new(0),
        })
    }

    /// Bytes delivered downstream so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Link time so far when no connection had a piece ready for it.
    pub fn idle(&self) -> Duration {
        Duration::from_micros(self.pacer.idle_us.load(Ordering::Relaxed))
    }

    /// Carries one connection both ways: `client` ↔ `server`, shaped.
    /// Returns when both directions have ended.
    pub async fn carry<C, S>(self: &Arc<Self>, client: C, server: S)
    where
        C: AsyncRead + AsyncWrite + Send + 'static,
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (cr, cw) = tokio::io::split(client);
        let (sr, sw) = tokio::io::split(server);
        let one_way = self.shape.rtt / 2;
        let up = Direction {
            one_way,
            pacers: Vec::new(),
            link: None,
        };
        let down = Direction {
            one_way,
            pacers: vec![Pacer::new(self.shape.conn_rate), self.pacer.clone()],
            link: Some(self.clone()),
        };
        let window = self.shape.window();
        tokio::join!(pipe(cr, sw, up, window), pipe(sr, cw, down, window));
    }

    /// Accepts connections on `listener` and carries each to `upstream`
    /// (the connect itself costs one round trip). Runs until the task is
    /// dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, upstream: String) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let link = self.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(link.shape.rtt).await;
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                link.carry(client, server).await;
            });
        }
    }
}

/// One direction of a connection.
struct Direction {
    one_way: Duration,
    /// The stages a piece passes after propagation, in order (none
    /// upstream; the connection's pacer, then the link's, downstream).
    pacers: Vec<Arc<Pacer>>,
    /// Where delivered bytes are counted (downstream).
    link: Option<Arc<Link>>,
}

async fn pipe<R, W>(mut from: R, mut to: W, dir: Direction, window: usize)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(window);
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
        let mut at = arrived + dir.one_way;
        for stage in &dir.pacers {
            // Reserve a stage only once the piece is there (see the
            // module doc: a reservation made earlier holds the link).
            tokio::time::sleep_until(at).await;
            at = stage.reserve(piece.len(), at);
        }
        tokio::time::sleep_until(at).await;
        if to.write_all(&piece).await.is_err() {
            break;
        }
        if let Some(link) = &dir.link {
            link.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    //! On tokio's paused clock over in-memory pipes: time moves only when
    //! every task waits, so the rates below are exact, not timed.
    use super::*;
    use tokio::io::{duplex, DuplexStream};

    const MB: f64 = 1e6;

    fn shape() -> WanShape {
        WanShape {
            rtt: Duration::from_millis(40),
            conn_rate: 20.0 * MB,
            link_rate: 100.0 * MB,
        }
    }

    /// A connection through `link`: the origin's end and the client's end.
    fn connect(link: &Arc<Link>) -> (DuplexStream, DuplexStream) {
        let (client, client_side) = duplex(1 << 20);
        let (server_side, origin) = duplex(1 << 20);
        let link = link.clone();
        tokio::spawn(async move { link.carry(client_side, server_side).await });
        (origin, client)
    }

    /// The origin writes `bodies` bodies of `len` bytes, one after
    /// another, each only after the client asked for it (a request goes up
    /// the link, so every body after the first starts a round trip after
    /// the previous one ended, as with HTTP/1.1 keep-alive).
    async fn serve_bodies(mut origin: DuplexStream, bodies: usize, len: usize) {
        let body = vec![7u8; len];
        let mut ask = [0u8; 1];
        for _ in 0..bodies {
            if origin.read_exact(&mut ask).await.is_err() {
                return;
            }
            origin.write_all(&body).await.expect("origin write");
        }
    }

    /// The client asks for `bodies` bodies one after another and reads
    /// each to its end; returns when it has all of them.
    async fn fetch_bodies(mut client: DuplexStream, bodies: usize, len: usize) -> Instant {
        let mut buf = vec![0u8; PIECE];
        for _ in 0..bodies {
            client.write_all(b"?").await.expect("client write");
            let mut left = len;
            while left > 0 {
                let n = client
                    .read(&mut buf[..left.min(PIECE)])
                    .await
                    .expect("read");
                assert!(n > 0, "link closed early");
                left -= n;
            }
        }
        Instant::now()
    }

    /// Runs `conns` clients that each fetch `bodies` sequential bodies of
    /// `len` bytes; returns the throughput in MB/s from the first request
    /// to the last byte, and the link.
    async fn run(conns: usize, bodies: usize, len: usize) -> (f64, Arc<Link>) {
        let link = Link::new(shape());
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..conns {
            let (origin, client) = connect(&link);
            tokio::spawn(serve_bodies(origin, bodies, len));
            clients.push(tokio::spawn(fetch_bodies(client, bodies, len)));
        }
        let mut end = start;
        for c in clients {
            end = end.max(c.await.expect("client"));
        }
        let secs = (end - start).as_secs_f64();
        ((conns * bodies * len) as f64 / secs / MB, link)
    }

    /// What `conns` single bodies of `len` bytes get at best: the bytes
    /// at `min(link, conns x conn cap)`, after one round trip to the first
    /// byte. A run must come within 1 % of it (timer ticks of 1 ms).
    fn assert_ideal(rate: f64, conns: usize, len: usize) {
        let s = shape();
        let cap = s.link_rate.min(conns as f64 * s.conn_rate);
        let total = (conns * len) as f64;
        let ideal = total / (total / cap + s.rtt.as_secs_f64()) / MB;
        assert!(
            rate <= ideal * 1.001 && rate >= ideal * 0.99,
            "{conns} connections: {rate:.2} MB/s, ideal {ideal:.2}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_connection_gets_its_own_cap() {
        let (rate, link) = run(1, 1, 16 << 20).await;
        assert_ideal(rate, 1, 16 << 20);
        assert_eq!(link.bytes(), 16 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_together_get_the_link_cap() {
        let (rate, link) = run(8, 1, 8 << 20).await;
        assert_ideal(rate, 8, 8 << 20);
        assert_eq!(link.bytes(), 8 * (8 << 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_starting_on_one_connection_does_not_stall_the_others() {
        // Connection A streams a long body; connection B asks for a body
        // at 200 ms, whose first piece reaches the proxy at 220 ms. The
        // old model reserved the link for that piece when it arrived, for
        // the time it would be sent (240 ms), so A got nothing from 220 to
        // 240 ms; every request boundary cost the link that much.
        let link = Link::new(shape());
        let t0 = Instant::now();
        let (origin_a, mut client_a) = connect(&link);
        tokio::spawn(serve_bodies(origin_a, 1, 16 << 20));
        let (origin_b, client_b) = connect(&link);
        tokio::spawn(serve_bodies(origin_b, 1, 4 << 20));
        let b = tokio::spawn(async move {
            tokio::time::sleep_until(t0 + Duration::from_millis(200)).await;
            fetch_bodies(client_b, 1, 4 << 20).await
        });
        client_a.write_all(b"?").await.expect("ask");
        let mut buf = vec![0u8; PIECE];
        let mut reads = Vec::new();
        let mut got = 0;
        while got < 16 << 20 {
            let n = client_a.read(&mut buf).await.expect("read");
            assert!(n > 0, "link closed early");
            got += n;
            reads.push((Instant::now() - t0, n));
        }
        b.await.expect("client b");
        let in_window = |from: u64, to: u64| -> usize {
            let (from, to) = (Duration::from_millis(from), Duration::from_millis(to));
            reads
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, n)| n)
                .sum()
        };
        // 20 MB/s for 30 ms is 600 KB; A and B together stay far below
        // the link's 100 MB/s, so A must keep its pace.
        let around_b = in_window(215, 245);
        let before = in_window(100, 130);
        assert!(before >= 550_000, "A before B: {before} bytes in 30 ms");
        assert!(
            around_b >= 550_000,
            "A while B's first piece waits: {around_b} bytes in 30 ms"
        );
        assert_eq!(got, 16 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_connections_than_the_link_needs_leave_it_idle() {
        // 4 x 20 MB/s cannot fill 100 MB/s: the link reports the rest idle.
        let (rate, link) = run(4, 1, 8 << 20).await;
        assert_ideal(rate, 4, 8 << 20);
        let busy = 4.0 * (8 << 20) as f64 / (100.0 * MB);
        assert!(
            link.idle().as_secs_f64() > busy / 5.0,
            "idle {:?}",
            link.idle()
        );
    }
}
