//! Many clients streaming different ranges from one `blockcache serve`:
//! the server's memory and the fairness between clients.
//!
//! `--clients` connections (default 1000) are spread over the `--target`s
//! (round-robin; a target ending in `@N` gets exactly N of them); client k of a target's n starts at offset k·LEN/n and
//! reads `--range`-byte ranges (default 4 MiB) one after the other from
//! there (wrapping at the end), each a keep-alive `GET` with `Range`, for
//! `--seconds` (default 20) after the last client connected. Meanwhile the
//! server's `/proc/PID/status` is sampled every 100 ms. Prints, per
//! target, the per-client throughput min / median / max and max/min, and
//! the server's VmHWM, peak VmRSS, peak RssAnon and peak RssFile, then one
//! `RESULT` line per target and an `RSS` line for scripts.
//!
//! ```sh
//! cargo run --release -p benches --example many_readers -- --pid PID \
//!     --target complete=http://127.0.0.1:8472/blobs/HASH:LEN \
//!     --target partial=http://127.0.0.1:8472/m/slow/image.raw:LEN@100
//! ```
//!
//! `--rcvbuf BYTES` sets each client's `SO_RCVBUF` (default: the kernel's
//! autotuning). 127.0.0.1 only (the example refuses other hosts). Raises its own
//! `RLIMIT_NOFILE` soft limit to the hard limit; the server needs as many
//! descriptors (`ulimit -n` before starting it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

struct Target {
    name: String,
    host: String,
    path: String,
    len: u64,
    clients: Option<usize>,
}

fn parse_target(s: &str) -> Target {
    let (s, clients) = match s.rsplit_once('@') {
        Some((s, n)) => (s, Some(n.parse().expect("--target ...@CLIENTS"))),
        None => (s, None),
    };
    let (name, rest) = s
        .split_once('=')
        .expect("--target NAME=http://127.0.0.1:PORT/PATH:LEN");
    let (url, len) = rest.rsplit_once(':').expect("--target ...:LEN");
    let url = url::Url::parse(url).expect("target URL");
    assert_eq!(
        url.host_str(),
        Some("127.0.0.1"),
        "only 127.0.0.1 targets (loopback benchmark)"
    );
    Target {
        name: name.to_owned(),
        host: format!("127.0.0.1:{}", url.port().expect("target port")),
        path: url.path().to_owned(),
        len: len.parse().expect("target length"),
        clients,
    }
}

#[derive(Default, Clone, Copy)]
struct Mem {
    hwm: u64,
    rss: u64,
    anon: u64,
    file: u64,
}

/// `VmHWM`, `VmRSS`, `RssAnon`, `RssFile` of `pid` in KiB.
fn memory(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        hwm: field("VmHWM:"),
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    })
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One client: its connection, reading ranges from `start` until `stop`.
/// Adds the body bytes it receives to `bytes`; errors end it (counted).
async fn client(
    t: Arc<Target>,
    start: u64,
    range: u64,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    connected: Arc<tokio::sync::Barrier>,
    rcvbuf: u32,
) -> Result<u64, String> {
    let addr: std::net::SocketAddr = t.host.parse().map_err(|e| format!("{e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if rcvbuf > 0 {
        socket
            .set_recv_buffer_size(rcvbuf)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    connected.wait().await;
    let mut pos = start;
    let mut requests = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let end = (pos + range).min(t.len);
        let req = Request::get(&t.path)
            .header("host", &t.host)
            .header("range", format!("bytes={}-{}", pos, end - 1))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        send.ready().await.map_err(|e| format!("ready: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if resp.status() != 206 {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                got += d.len() as u64;
                bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(requests);
            }
        }
        if got != end - pos {
            return Err(format!("short body: {got} of {}", end - pos));
        }
        requests += 1;
        pos = if end >= t.len { 0 } else { end };
    }
    Ok(requests)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut pid = None;
    let mut clients = 1000usize;
    let mut seconds = 20u64;
    let mut range = 4u64 << 20;
    let mut rcvbuf = 0u32;
    let mut targets = Vec::new();
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--pid" => pid = Some(val().parse::<u32>().expect("--pid")),
            "--clients" => clients = val().parse().expect("--clients"),
            "--seconds" => seconds = val().parse().expect("--seconds"),
            "--range" => range = val().parse().expect("--range"),
            "--rcvbuf" => rcvbuf = val().parse().expect("--rcvbuf"),
            "--target" => targets.push(Arc::new(parse_target(&val()))),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!targets.is_empty(), "at least one --target");
    assert!(clients >= targets.len() && seconds > 0 && range > 0);
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(pid, clients, seconds, range, rcvbuf, targets));
}

async fn run(
    pid: Option<u32>,
    clients: usize,
    seconds: u64,
    range: u64,
    rcvbuf: u32,
    targets: Vec<Arc<Target>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(parking_lot::Mutex::new((Mem::default(), 0u32)));
    let sampler = pid.map(|pid| {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(m) = memory(pid) {
                    let mut p = peak.lock();
                    p.0.hwm = p.0.hwm.max(m.hwm);
                    p.0.rss = p.0.rss.max(m.rss);
                    p.0.anon = p.0.anon.max(m.anon);
                    p.0.file = p.0.file.max(m.file);
                    p.1 += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let before = pid.and_then(memory);
    // Every client connects, then all start together (the barrier has one
    // more party: this task, which starts the clock).
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut per_target: Vec<Vec<usize>> = vec![Vec::new(); targets.len()];
    let fixed: usize = targets.iter().filter_map(|t| t.clients).sum();
    let free: Vec<usize> = (0..targets.len())
        .filter(|&t| targets[t].clients.is_none())
        .collect();
    assert!(
        fixed <= clients && (fixed == clients || !free.is_empty()),
        "@N counts exceed --clients"
    );
    let mut i = 0;
    for (t, target) in targets.iter().enumerate() {
        for _ in 0..target.clients.unwrap_or(0) {
            per_target[t].push(i);
            i += 1;
        }
    }
    for (k, i) in (i..clients).enumerate() {
        per_target[free[k % free.len()]].push(i);
    }
    let counters: Vec<Arc<AtomicU64>> = (0..clients).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut tasks = Vec::with_capacity(clients);
    for (ti, members) in per_target.iter().enumerate() {
        let t = &targets[ti];
        for (k, &i) in members.iter().enumerate() {
            let start = t.len * k as u64 / members.len() as u64;
            tasks.push((
                ti,
                tokio::spawn(client(
                    t.clone(),
                    start,
                    range,
                    counters[i].clone(),
                    stop.clone(),
                    barrier.clone(),
                    rcvbuf,
                )),
            ));
        }
    }
    match tokio::time::timeout(Duration::from_secs(60), barrier.wait()).await {
        Ok(_) => {}
        Err(_) => panic!("not every client connected within 60 s"),
    }
    let t0 = Instant::now();
    let at_start: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let at_end: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    let mut errors: Vec<Vec<String>> = vec![Vec::new(); targets.len()];
    let mut requests = vec![0u64; targets.len()];
    // A client waiting for a chunk of a filling object only sees the stop
    // with its next bytes: give them a few seconds, then abort.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut waiting = vec![0usize; targets.len()];
    for (ti, mut task) in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(n))) => requests[ti] += n,
            Ok(Ok(Err(e))) => errors[ti].push(e),
            Ok(Err(e)) => errors[ti].push(format!("task: {e}")),
            Err(_) => {
                task.abort();
                waiting[ti] += 1;
            }
        }
    }
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let (peak, samples) = *peak.lock();
    let after = pid.and_then(memory);

    println!(
        "{clients} clients, {} target(s), {range}-byte ranges, {elapsed:.1} s",
        targets.len()
    );
    for (ti, t) in targets.iter().enumerate() {
        let mut rates: Vec<f64> = per_target[ti]
            .iter()
            .map(|&i| (at_end[i] - at_start[i]) as f64 / elapsed / 1e6)
            .collect();
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        let (min, med, max) = (rates[0], rates[n / 2], rates[n - 1]);
        let total: f64 = rates.iter().sum();
        let ratio = if min > 0.0 { max / min } else { f64::INFINITY };
        println!(
            "  {}: {n} clients, per-client MB/s min {min:.3} median {med:.3} max {max:.3} (max/min {ratio:.2}), total {total:.1} MB/s, {} ranges done, {} still waiting at the stop, {} errors{}",
            t.name,
            requests[ti],
            waiting[ti],
            errors[ti].len(),
            errors[ti].first().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!(
            "RESULT {} clients={n} min={min:.4} median={med:.4} max={max:.4} ratio={ratio:.3} total={total:.2} errors={}",
            t.name,
            errors[ti].len()
        );
    }
    if pid.is_some() {
        let mib = |k: u64| k as f64 / 1024.0;
        let b = before.unwrap_or_default();
        let a = after.unwrap_or_default();
        println!(
            "  server memory, MiB: before VmRSS {:.1} (anon {:.1}, file {:.1}); peak VmRSS {:.1}, RssAnon {:.1}, RssFile {:.1} ({samples} samples); VmHWM {:.1}; after VmRSS {:.1}",
            mib(b.rss),
            mib(b.anon),
            mib(b.file),
            mib(peak.rss),
            mib(peak.anon),
            mib(peak.file),
            mib(a.hwm.max(peak.hwm)),
            mib(a.rss)
        );
        println!(
            "RSS before={:.1} peak={:.1} anon={:.1} file={:.1} hwm={:.1}",
            mib(b.rss),
            mib(peak.rss),
            mib(peak.anon),
            mib(peak.file),
            mib(a.hwm.max(peak.hwm))
        );
    }
}
