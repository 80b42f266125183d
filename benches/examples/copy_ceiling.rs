//! The CPU ceiling of a fill, without blockcache: how fast can this
//! machine move a file from a loopback HTTP origin into a data file,
//! BLAKE3 each 1 MiB chunk and SHA-256 the whole in order, with the
//! bytes copied through user space (`recv` + `pwrite`, what any HTTP
//! client library allows) and with them moved in the kernel (`splice`
//! socket → pipe → file, the hashes read through a map of the file)?
//!
//! ```sh
//! cargo run --release -p benches --example copy_ceiling -- \
//!     --url http://127.0.0.1:8080/image.raw --len 1073741824 \
//!     --dir /var/tmp [--rounds 3] [--connections 8]
//! ```
//!
//! Both sides use the same work plan as `blockcache fetch` (16 MiB range
//! requests, eight at a time, an `fdatasync` every 64 MiB, one thread
//! that SHA-256es the completed prefix) and run in alternating rounds.
//! Each round prints when the last byte arrived, when SHA-256 finished
//! and when the final `fdatasync` returned, and the process's CPU time
//! per GiB; the last line gives the medians and splice/copy as a ratio
//! of synced throughputs. `benches/disk_sync.sh --ceiling` runs it
//! against the same nginx as its rounds (BENCHMARKS.md, item 7).
//!
//! Linux only (splice). The origin must answer `Range` with 206 and a
//! head that fits in 4 KiB; the example stops with a message otherwise.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;

const CHUNK: u64 = 1 << 20;
const REQUEST: u64 = 16 << 20;
const FLUSH_EVERY: u64 = 64 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `recv` into a buffer, BLAKE3 it, `pwrite` it; SHA-256 by `pread`.
    Copy,
    /// `splice` socket → pipe → file; BLAKE3 and SHA-256 through a map.
    Splice,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Copy => "recv+pwrite",
            Mode::Splice => "splice",
        }
    }
}

struct Plan {
    host: String,
    path: String,
    len: u64,
    dir: std::path::PathBuf,
    connections: usize,
}

/// Which chunks are committed, and a wake for the SHA-256 thread and the
/// flusher.
struct Progress {
    done: Mutex<(Vec<bool>, u64)>,
    changed: Condvar,
}

struct Round {
    downloaded: Duration,
    hashed: Duration,
    synced: Duration,
    cpu: Duration,
    sha256: [u8; 32],
}

fn main() {
    let url = benches::arg_str("--url").expect("--url http://HOST:PORT/PATH");
    let rest = url
        .strip_prefix("http://")
        .expect("--url must be a plain http:// URL (splice needs the socket)");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let plan = Plan {
        host: host.to_string(),
        path: if path.is_empty() { "/" } else { path }.to_string(),
        len: benches::arg("--len", 1 << 30) as u64,
        dir: benches::arg_str("--dir")
            .unwrap_or_else(|| std::env::temp_dir().display().to_string())
            .into(),
        connections: benches::arg("--connections", 8) as usize,
    };
    let rounds = benches::arg("--rounds", 3) as usize;
    assert!(
        plan.len.is_multiple_of(CHUNK),
        "--len must be a multiple of 1 MiB"
    );
    let mut results: Vec<(Mode, Round)> = Vec::new();
    for i in 1..=rounds {
        for mode in [Mode::Copy, Mode::Splice] {
            let r = run(&plan, mode);
            println!(
                "round {i} {:>11}: last byte {:>5.0} ms, SHA-256 done {:>5.0} ms, synced {:>5.0} ms \
                 ({:.0} MB/s), CPU {:.2} s/GiB",
                mode.name(),
                ms(r.downloaded),
                ms(r.hashed),
                ms(r.synced),
                plan.len as f64 / r.synced.as_secs_f64() / 1e6,
                r.cpu.as_secs_f64() / (plan.len as f64 / f64::from(1 << 30)),
            );
            results.push((mode, r));
        }
    }
    // Both sides must have hashed the same bytes.
    let first = results[0].1.sha256;
    assert!(
        results.iter().all(|(_, r)| r.sha256 == first),
        "the two paths hashed different bytes"
    );
    let median = |mode: Mode, f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, r)| f(r))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = |mode: Mode| plan.len as f64 / median(mode, &|r| r.synced.as_secs_f64()) / 1e6;
    let cpu = |mode: Mode| {
        median(mode, &|r| r.cpu.as_secs_f64()) / (plan.len as f64 / f64::from(1 << 30))
    };
    println!(
        "recv+pwrite {:.0} MB/s, {:.2} CPU s/GiB | splice {:.0} MB/s, {:.2} CPU s/GiB | \
         splice/copy {:.2}x | {} x {} MiB, {} cores",
        rate(Mode::Copy),
        cpu(Mode::Copy),
        rate(Mode::Splice),
        cpu(Mode::Splice),
        rate(Mode::Splice) / rate(Mode::Copy),
        rounds,
        plan.len >> 20,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Warms the page allocator the way `benches/lib.sh` does (free memory
/// that stayed free goes back to the host and costs ~3x to touch again).
fn warm_memory(plan: &Plan) {
    let path = std::path::Path::new("/dev/shm/copy_ceiling.warm");
    if let Ok(mut f) = File::create(path) {
        let block = vec![0u8; 1 << 20];
        for _ in 0..plan.len / (1 << 20) {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        drop(f);
        let _ = std::fs::remove_file(path);
    }
}

fn run(plan: &Plan, mode: Mode) -> Round {
    let data_path = plan
        .dir
        .join(format!("copy_ceiling.{}.data", std::process::id()));
    let _ = std::fs::remove_file(&data_path);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    warm_memory(plan);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&data_path)
        .expect("create the data file");
    file.set_len(plan.len).expect("size the data file");
    // SAFETY: the file is this function's own and is not truncated while
    // mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map the data file");
    let (file, map) = (Arc::new(file), Arc::new(map));
    let chunks = (plan.len / CHUNK) as usize;
    let progress = Arc::new(Progress {
        done: Mutex::new((vec![false; chunks], 0)),
        changed: Condvar::new(),
    });
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let sha = {
        let (progress, file, map) = (progress.clone(), file.clone(), map.clone());
        std::thread::spawn(move || hash_prefix(mode, &progress, &file, &map))
    };
    let flusher = {
        let (progress, file) = (progress.clone(), file.clone());
        let len = plan.len;
        std::thread::spawn(move || flush_loop(&progress, &file, len))
    };
    let workers: Vec<_> = (0..plan.connections)
        .map(|_| {
            let (next, file, map, progress) =
                (next.clone(), file.clone(), map.clone(), progress.clone());
            let (host, path, len) = (plan.host.clone(), plan.path.clone(), plan.len);
            std::thread::spawn(move || {
                let mut conn = Connection::open(&host, mode);
                loop {
                    let start = next.fetch_add(REQUEST, Ordering::Relaxed);
                    if start >= len {
                        break;
                    }
                    let end = (start + REQUEST).min(len);
                    conn.request(&host, &path, start..end);
                    for off in (start..end).step_by(CHUNK as usize) {
                        conn.chunk_into(&file, &map, off);
                        let mut done = progress.done.lock().expect("progress lock");
                        done.0[(off / CHUNK) as usize] = true;
                        done.1 += CHUNK;
                        progress.changed.notify_all();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a transfer thread panicked");
    }
    let downloaded = t0.elapsed();
    let sha256 = sha.join().expect("the SHA-256 thread panicked");
    let hashed = t0.elapsed();
    flusher.join().expect("the flusher panicked");
    file.sync_data().expect("final fdatasync");
    let synced = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    drop(map);
    let _ = std::fs::remove_file(&data_path);
    Round {
        downloaded,
        hashed,
        synced,
        cpu,
        sha256,
    }
}

/// SHA-256 over the chunks in order, each as soon as it is committed.
fn hash_prefix(mode: Mode, progress: &Progress, file: &File, map: &memmap2::Mmap) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let chunks = map.len() / CHUNK as usize;
    for c in 0..chunks {
        let mut done = progress.done.lock().expect("progress lock");
        while !done.0[c] {
            done = progress.changed.wait(done).expect("progress lock");
        }
        drop(done);
        let off = c as u64 * CHUNK;
        match mode {
            Mode::Copy => {
                file.read_exact_at(&mut buf, off).expect("pread a chunk");
                h.update(&buf);
            }
            Mode::Splice => h.update(&map[off as usize..(off + CHUNK) as usize]),
        }
    }
    h.finalize().into()
}

/// `fdatasync` every [`FLUSH_EVERY`] committed bytes, as the fill's
/// durability batches do.
fn flush_loop(progress: &Progress, file: &File, len: u64) {
    let mut flushed = 0;
    while flushed < len {
        let mut done = progress.done.lock().expect("progress lock");
        while done.1 < (flushed + FLUSH_EVERY).min(len) {
            done = progress.changed.wait(done).expect("progress lock");
        }
        let now = done.1;
        drop(done);
        file.sync_data().expect("fdatasync");
        flushed = now;
    }
}

/// One keep-alive connection to the origin and, for splice, its pipe.
struct Connection {
    sock: TcpStream,
    mode: Mode,
    buf: Vec<u8>,
    pipe: [libc::c_int; 2],
}

impl Connection {
    fn open(host: &str, mode: Mode) -> Connection {
        let sock = TcpStream::connect(host).expect("connect to the origin");
        let mut pipe = [0; 2];
        if mode == Mode::Splice {
            // SAFETY: pipe(2) fills the two descriptors it is given.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0, "pipe");
            // A pipe as large as a chunk: one splice pair per chunk when
            // the socket has it.
            unsafe { libc::fcntl(pipe[1], libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        }
        Connection {
            sock,
            mode,
            buf: vec![0; CHUNK as usize],
            pipe,
        }
    }

    /// Sends a range request and consumes the response head (peeked, so
    /// no body byte is read into user space).
    fn request(&mut self, host: &str, path: &str, range: std::ops::Range<u64>) {
        write!(
            self.sock,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={}-{}\r\n\r\n",
            range.start,
            range.end - 1
        )
        .expect("send the request");
        let mut peek = [0u8; 4096];
        let head_len = loop {
            // SAFETY: recv writes at most peek.len() bytes into peek.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    peek.as_mut_ptr().cast(),
                    peek.len(),
                    libc::MSG_PEEK,
                )
            };
            assert!(n > 0, "the origin closed the connection");
            if let Some(p) = peek[..n as usize].windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!((n as usize) < peek.len(), "response head over 4 KiB");
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut head = vec![0u8; head_len];
        self.sock
            .read_exact(&mut head)
            .expect("read the response head");
        let status = String::from_utf8_lossy(&head[..head.len().min(12)]).into_owned();
        assert!(
            status.starts_with("HTTP/1.1 206"),
            "the origin answered {status:?}, not 206"
        );
    }

    /// Moves the next chunk of the body into the file at `off` and
    /// computes its BLAKE3 (the fill's chaining value stands in here).
    fn chunk_into(&mut self, file: &File, map: &memmap2::Mmap, off: u64) {
        match self.mode {
            Mode::Copy => {
                self.sock
                    .read_exact(&mut self.buf)
                    .expect("read a chunk of the body");
                std::hint::black_box(blake3::hash(&self.buf));
                file.write_all_at(&self.buf, off).expect("pwrite a chunk");
            }
            Mode::Splice => {
                let mut left = CHUNK as usize;
                let mut at = off as libc::loff_t;
                while left > 0 {
                    // SAFETY: plain descriptors this struct owns; null
                    // offsets for the socket and the pipe.
                    let got = unsafe {
                        libc::splice(
                            self.sock.as_raw_fd(),
                            std::ptr::null_mut(),
                            self.pipe[1],
                            std::ptr::null_mut(),
                            left,
                            libc::SPLICE_F_MOVE,
                        )
                    };
                    assert!(
                        got > 0,
                        "splice from the socket: {}",
                        std::io::Error::last_os_error()
                    );
                    let mut in_pipe = got as usize;
                    while in_pipe > 0 {
                        // SAFETY: as above; `at` is this chunk's file offset.
                        let put = unsafe {
                            libc::splice(
                                self.pipe[0],
                                std::ptr::null_mut(),
                                file.as_raw_fd(),
                                &mut at,
                                in_pipe,
                                libc::SPLICE_F_MOVE,
                            )
                        };
                        assert!(
                            put > 0,
                            "splice into the file: {}",
                            std::io::Error::last_os_error()
                        );
                        in_pipe -= put as usize;
                        left -= put as usize;
                    }
                }
                let range = off as usize..(off + CHUNK) as usize;
                std::hint::black_box(blake3::hash(&map[range]));
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.mode == Mode::Splice {
            // SAFETY: the pipe's descriptors are this struct's own.
            unsafe {
                libc::close(self.pipe[0]);
                libc::close(self.pipe[1]);
            }
        }
    }
}
