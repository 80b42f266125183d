//! Helpers shared by the CLI tests: the real `blockcache` binary run as a
//! child process (every wait bounded), and the nginx origin of cache-http's
//! harness.
#![allow(dead_code)]

#[path = "../../../cache-http/tests/support/nginx.rs"]
pub mod nginx;
pub mod relay;
pub mod seaweed;
pub mod serve;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use nginx::{LogLine, Nginx, NginxOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_blockcache");
/// Bound of any one step: turns a hang into a failure, asserts nothing.
pub const STEP: Duration = Duration::from_secs(120);
pub const MIB: usize = 1 << 20;

pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn bc(store: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("BLOCKCACHE_STORE")
        .env_remove("RUST_LOG")
        .arg("--store")
        .arg(store)
        .stdin(Stdio::null());
    c
}

pub fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blockcache")
}

/// A background child, killed when the test ends (or fails).
pub struct Bg(pub Child);

impl Bg {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (bounded by STEP) for a child and collects its output.
pub fn finish(child: Child) -> Output {
    finish_within(child, STEP)
}

/// Waits (at most `bound`, then kills it and panics) for a child and
/// collects its output. A pipe the caller took (to read it live) is left
/// to the caller.
pub fn finish_within(mut child: Child, bound: Duration) -> Output {
    let deadline = Instant::now() + bound;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let t_out = std::thread::spawn(move || read_all(out));
    let t_err = std::thread::spawn(move || read_all(err));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let threads = threads_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            // Killed: the pipes close, the readers end. What the child
            // said before it hung is what explains the hang.
            let said = |t: std::thread::JoinHandle<Vec<u8>>| {
                String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned()
            };
            panic!(
                "blockcache did not finish within {bound:?}\n--- its threads ---\n{threads}\n--- its stderr ---\n{}\n--- its stdout ---\n{}",
                said(t_err),
                said(t_out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout thread"),
        stderr: t_err.join().expect("stderr thread"),
    }
}

/// Where each thread of a hung process waits (Linux `/proc`): its name,
/// state, kernel wait channel and kernel stack. Tells a hang in a system
/// call (a socket, a sync) from a lost wake-up (every thread parked).
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(no /proc)".into();
    };
    let mut out = String::new();
    for t in tasks.flatten() {
        let dir = t.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let stat = read("stat");
        // The state follows the parenthesised name.
        let state = stat.rsplit_once(") ").map_or("?", |(_, r)| &r[..1]);
        let stack: Vec<String> = read("stack").lines().take(6).map(str::to_owned).collect();
        out += &format!(
            "{} {} state {state} wchan {} | {}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            stack.join(" < ")
        );
    }
    out + &user_stacks(pid)
}

/// Each thread's innermost user-space frames, when gdb is installed
/// (bounded: a minute, 400 lines): names the call a hang waits in.
fn user_stacks(pid: u32) -> String {
    let gdb = Command::new("timeout")
        .args(["60", "gdb", "-q", "-batch", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output();
    let Ok(o) = gdb else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&o.stdout);
    // The innermost frames of each thread, a line each.
    let frames: Vec<String> = text
        .lines()
        .filter(|l| {
            l.starts_with("Thread ")
                || l.strip_prefix('#')
                    .and_then(|f| f.split_whitespace().next()?.parse::<u32>().ok())
                    .is_some_and(|n| n < 16)
        })
        .map(|l| l.chars().take(240).collect())
        .take(400)
        .collect();
    format!("--- user stacks (gdb) ---\n{}\n", frames.join("\n"))
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut v);
    }
    v
}

/// Collects `pipe` (a child's stderr) in the background: what arrived so
/// far is readable while the child runs.
pub fn collect(pipe: impl Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = sink.clone();
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    sink
}

pub fn run(c: Command) -> Output {
    finish(spawn(c))
}

pub fn last_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "blockcache failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn b3sum_of(path: &Path) -> Option<String> {
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `ls --json` of `store`: empty while no store exists yet (a fetch that
/// was just started creates it).
pub fn ls_json(store: &Path) -> Vec<serde_json::Value> {
    let mut c = bc(store);
    c.args(["ls", "--json"]);
    let o = run(c);
    if o.status.code() == Some(2) && String::from_utf8_lossy(&o.stderr).contains("no store at") {
        return Vec::new();
    }
    let out = ok(&o);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("ls --json parses")
        .as_array()
        .expect("an array")
        .clone()
}

pub fn bytes_done(store: &Path) -> u64 {
    ls_json(store)
        .first()
        .and_then(|o| o["bytes_done"].as_u64())
        .unwrap_or(0)
}

/// Waits (bounded) until the store's first object has `n` bytes durable.
pub fn wait_bytes_done(store: &Path, n: u64) {
    let deadline = Instant::now() + STEP;
    while bytes_done(store) < n {
        assert!(Instant::now() < deadline, "no progress to {n} bytes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Length of a `bytes=A-B` request range (0 when it is not one).
pub fn range_len(range: &str) -> u64 {
    range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?))
        .unwrap_or(0)
}

pub fn is_probe(l: &LogLine) -> bool {
    l.range == "bytes=0-0"
}

/// Body bytes of GET lines that are not one-byte probes.
pub fn fill_bytes(lines: &[LogLine]) -> u64 {
    lines
        .iter()
        .filter(|l| l.method == "GET" && !is_probe(l))
        .map(|l| l.body_bytes_sent)
        .sum()
}

/// Body bytes of GET lines that are not probes and sent their whole range:
/// the requests of a process that finished, not those a killed process
/// left cut short (nginx may log those late).
pub fn complete_fill_bytes(lines: &[LogLine]) -> u64 {
    lines
        .iter()
        .filter(|l| l.method == "GET" && !is_probe(l) && l.body_bytes_sent == range_len(&l.range))
        .map(|l| l.body_bytes_sent)
        .sum()
}

/// Waits until nginx logged every request (its log line count stops
/// changing for a while).
pub fn settled_log(ng: &Nginx) -> Vec<LogLine> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = ng.access_log().len();
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = ng.access_log().len();
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        if stable_since.elapsed() > Duration::from_millis(500) || Instant::now() > deadline {
            return ng.access_log();
        }
    }
}

/// An nginx origin (throttled per connection when `rate` is given) serving
/// `disk.img`: `len` pattern bytes of `seed`; with the bytes and their
/// BLAKE3 hex.
pub fn origin(rate: Option<&str>, len: usize, seed: u64) -> (Nginx, Vec<u8>, String) {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: rate.map(str::to_owned),
    });
    let data = pattern(seed, len);
    ng.put("disk.img", &data);
    let want = blake3::hash(&data).to_hex().to_string();
    (ng, data, want)
}

pub fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("temp dir");
    let p = t.path().join("store");
    (t, p)
}
/// A minimal HTTP/1.1 GET: (status, headers, body).
pub fn http_get(addr: &str, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to serve");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    let range = range
        .map(|r| format!("Range: bytes={r}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

/// Output of a digest tool (`sha256sum`, `sha512sum`) for `path`.
pub fn sum_of(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().expect("run sum tool");
    assert!(out.status.success(), "{tool} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Standard base64 (RFC 4648, padded) of the bytes a hex string spells.
pub fn hex_to_base64(hex: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `blockcache serve` on a free port: the running server and its address.
pub fn start_serve(store: &Path, extra: &[&str]) -> (Bg, String) {
    start_serve_with(store, extra, Stdio::piped())
}

/// [`start_serve`] with its stderr sent to `stderr` (a file, say: a pipe
/// nobody reads fills up at `-vvv`).
pub fn start_serve_with(store: &Path, extra: &[&str], stderr: impl Into<Stdio>) -> (Bg, String) {
    let mut c = bc(store);
    c.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
    serve_started_with(c, stderr.into())
}

/// Spawns `c` (a `serve --listen 127.0.0.1:0` command) and reads its
/// listen line: the running server and its address.
pub fn serve_started(c: Command) -> (Bg, String) {
    serve_started_with(c, Stdio::piped())
}

/// [`serve_started`] with its stderr sent to `stderr`.
fn serve_started_with(mut c: Command, stderr: Stdio) -> (Bg, String) {
    let mut server = Bg(c
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn blockcache serve"));
    let mut stdout = std::io::BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("listen line: {line:?}"))
        .to_string();
    (server, addr)
}

/// The one object of `store` whose source is `url`, from `ls --json`.
pub fn listed(store: &Path, url: &str) -> serde_json::Value {
    ls_json(store)
        .into_iter()
        .find(|o| o["source"].as_str() == Some(url))
        .unwrap_or_else(|| panic!("{url} not listed"))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Panics when any of `secrets` occurs in any file under `dir`.
pub fn assert_no_secret_in_files(dir: &Path, secrets: &[&str]) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "no files under {}", dir.display());
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "secret {s:?} found in {}",
                f.display()
            );
        }
    }
}

/// Exit code and stderr of a finished command.
pub fn code_and_err(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
