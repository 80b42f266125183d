//! `blockcache serve` as a daemon, the real binary against a real nginx and
//! real clients (curl, qemu-img, systemd-socket-activate): signals and
//! drain, HEAD without fills, lazy mirrors, config file and reload, the
//! access log, metrics, the size limit. Every wait is bounded; nothing
//! asserts on timing.

#[path = "../../cache-http/tests/support/nginx.rs"]
mod nginx;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nginx::{Nginx, NginxOptions};

const BIN: &str = env!("CARGO_BIN_EXE_blockcache");
const STEP: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

/// A running `serve`, killed when dropped.
struct Serve {
    child: Child,
    /// `http://ADDR` of the first TCP listener.
    base: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(store: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut c = Command::new(BIN);
        c.env_remove("BLOCKCACHE_STORE")
            .env_remove("RUST_LOG")
            .env("XDG_CONFIG_HOME", store.join("no-config"))
            .arg("--store")
            .arg(store)
            .arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self::spawn(c)
    }

    fn spawn(mut c: Command) -> Serve {
        let mut child = c.spawn().expect("spawn blockcache serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        // The first line, read on a thread so that the wait is bounded.
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = first_tx.send(line);
            out
        });
        let Ok(line) = first_rx.recv_timeout(STEP) else {
            let _ = child.kill();
            panic!("no `listening on` line within {STEP:?}");
        };
        let mut out = reader.join().expect("reader thread");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("listen line: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            base,
            stderr: rx,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits (bounded) for the exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(Instant::now() < deadline, "serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for a stderr line containing `what`.
    fn wait_stderr(&self, what: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {what:?}"),
            }
        }
    }

    /// Collects the stderr lines that arrive until none came for a while.
    fn stderr_lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(700)) {
            v.push(l);
        }
        v
    }
}

fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "120"]).args(args);
    c
}

fn origin(rate: Option<&str>) -> Nginx {
    Nginx::start_with(NginxOptions {
        limit_rate: rate.map(str::to_owned),
    })
}

/// A sparse file of `len` bytes in nginx's root (the origin serves zeros
/// without the test writing gigabytes).
fn sparse(ng: &Nginx, name: &str, len: u64) -> PathBuf {
    let p = ng.root().join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
    p
}

fn body_bytes(ng: &Nginx) -> u64 {
    ng.access_log().iter().map(|l| l.body_bytes_sent).sum()
}

/// Waits until `path` has at least `n` bytes.
fn wait_file_len(path: &Path, n: u64) {
    let deadline = Instant::now() + STEP;
    while std::fs::metadata(path).map_or(0, |m| m.len()) < n {
        assert!(
            Instant::now() < deadline,
            "{} never reached {n} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_a_running_download_then_exits_0() {
    let ng = origin(Some("16m"));
    let data = pattern(3, 256 * MIB as usize);
    ng.put("big.img", &data);
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let mut serve = Serve::start(
        &store,
        &[
            "--listen",
            "127.0.0.1:0",
            "--mirror",
            &format!("o={}", ng.url("")),
            "--access-log",
            "off",
        ],
        &[],
    );
    let out = t.path().join("got.img");
    let mut dl = curl(&[
        "-o",
        out.to_str().expect("path"),
        &format!("{}/m/o/big.img", serve.base),
    ])
    .spawn()
    .expect("curl");
    wait_file_len(&out, 16 * MIB);
    serve.signal("TERM");
    serve.wait_stderr("draining");
    // New connections are refused while the running response ends.
    let addr = serve.base.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "a new connection during the drain is refused"
    );
    assert!(
        dl.wait().expect("curl").success(),
        "curl got the whole body"
    );
    assert_eq!(serve.wait_exit(), Some(0));
    assert!(
        std::fs::read(&out).expect("body") == data,
        "the complete body, byte for byte"
    );
}

#[test]
fn second_signal_exits_at_once_keeping_durable_chunks() {
    let ng = origin(Some("2m"));
    ng.put("big.img", &pattern(4, 64 * MIB as usize));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let mut serve = Serve::start(
        &store,
        &[
            "--listen",
            "127.0.0.1:0",
            "--mirror",
            &format!("o={}", ng.url("")),
            "--drain-timeout",
            "600",
        ],
        &[],
    );
    let out = t.path().join("got.img");
    let mut dl = curl(&[
        "-o",
        out.to_str().expect("path"),
        &format!("{}/m/o/big.img", serve.base),
    ])
    .stderr(Stdio::null())
    .spawn()
    .expect("curl");
    wait_file_len(&out, 4 * MIB);
    serve.signal("TERM");
    serve.wait_stderr("draining");
    serve.signal("TERM");
    // Exits long before the 600 s drain (the STEP bound would fail it).
    assert_eq!(serve.wait_exit(), Some(130));
    assert!(!dl.wait().expect("curl").success(), "the response was cut");
    // What arrived is kept: the store has the object with chunks done.
    let ls = Command::new(BIN)
        .env_remove("BLOCKCACHE_STORE")
        .args(["--store", store.to_str().expect("path"), "ls", "--json"])
        .output()
        .expect("ls");
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls json");
    assert!(v[0]["bytes_done"].as_u64().unwrap_or(0) > 0, "{v}");
}

#[test]
fn head_never_starts_a_fill_and_lazy_qemu_info_reads_little() {
    let ng = origin(None);
    sparse(&ng, "big.raw", 1 << 30);
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let conf = t.path().join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\naccess_log = \"off\"\n\
             [mirrors.eager]\nurl = \"{u}\"\n\
             [mirrors.lazy]\nurl = \"{u}\"\nfill = \"lazy\"\n",
            u = ng.url("")
        ),
    )
    .expect("config");
    let serve = Serve::start(&store, &["--config", conf.to_str().expect("path")], &[]);
    let head = curl(&["-I", &format!("{}/m/eager/big.raw", serve.base)])
        .output()
        .expect("curl -I");
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1073741824"), "{head}");
    std::thread::sleep(Duration::from_millis(500));
    let sent = body_bytes(&ng);
    assert!(sent <= 1, "HEAD made the origin send {sent} body bytes");

    // qemu-img reads a qcow2's header and tables through a lazy mirror.
    let qcow = ng.root().join("disk.qcow2");
    let made = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "preallocation=metadata",
        ])
        .arg(&qcow)
        .arg("1G")
        .status()
        .expect("qemu-img create");
    assert!(made.success());
    let before = body_bytes(&ng);
    let info = Command::new("qemu-img")
        .args([
            "info",
            "--output=json",
            &format!("{}/m/lazy/disk.qcow2", serve.base),
        ])
        .output()
        .expect("qemu-img info");
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual-size"], 1u64 << 30);
    std::thread::sleep(Duration::from_millis(500));
    let sent = body_bytes(&ng) - before;
    assert!(
        sent <= 16 * MIB,
        "qemu-img info made the origin send {sent} bytes"
    );
}

#[test]
fn systemd_socket_activation_and_readiness() {
    let Ok(tool) = which("systemd-socket-activate") else {
        panic!("systemd-socket-activate not found (apt-get install systemd)");
    };
    let ng = origin(None);
    ng.put("a.bin", &pattern(5, 100_000));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let notify_path = t.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_read_timeout(Some(STEP)).expect("notify timeout");
    // The port: free now, bound by systemd-socket-activate (retried if
    // another process takes it in between).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut c = Command::new(tool);
    c.args(["-l", &format!("127.0.0.1:{port}"), "-E", "NOTIFY_SOCKET"])
        .arg(BIN)
        .args(["--store", store.to_str().expect("path")])
        .args(["serve", "--listen", "127.0.0.1:1", "--mirror"])
        .arg(format!("o={}", ng.url("")))
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("BLOCKCACHE_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // systemd-socket-activate starts the program on the first connection:
    // make one (retried until the tool has bound the port).
    let addr = format!("127.0.0.1:{port}");
    let first = std::thread::spawn(move || {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(STEP));
                let _ = s.write_all(b"GET /status HTTP/1.0\r\n\r\n");
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "systemd-socket-activate did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut serve = Serve::spawn(c);
    let reply = first.join().expect("first connection");
    assert!(
        reply.starts_with(b"HTTP/1.1 200") || reply.starts_with(b"HTTP/1.0 200"),
        "the connection that started serve was answered: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
    // The inherited socket is used (not the --listen address).
    assert_eq!(serve.base, format!("http://127.0.0.1:{port}"));
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 within the bound");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    let got = curl(&[&format!("{}/m/o/a.bin", serve.base)])
        .output()
        .expect("curl");
    assert!(got.stdout == pattern(5, 100_000));
    serve.signal("TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1 within the bound");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");
    assert_eq!(serve.wait_exit(), Some(0));
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or(())
}

#[test]
fn unix_socket_and_several_listen_addresses() {
    let ng = origin(None);
    ng.put("a.bin", &pattern(6, 5000));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let sock = t.path().join("bc.sock");
    let unix = format!("unix:{}", sock.display());
    let serve = Serve::start(
        &store,
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &unix,
            "--listen",
            "localhost:0",
            "--mirror",
            &format!("o={}", ng.url("")),
        ],
        &[],
    );
    let got = curl(&[
        "--unix-socket",
        sock.to_str().expect("path"),
        "http://x/m/o/a.bin",
    ])
    .output()
    .expect("curl");
    assert!(got.stdout == pattern(6, 5000), "served on the unix socket");
    let got = curl(&[&format!("{}/m/o/a.bin", serve.base)])
        .output()
        .expect("curl");
    assert!(got.stdout == pattern(6, 5000), "served on TCP");
    // A bad address is one line, exit 2.
    let out = Command::new(BIN)
        .args([
            "--store",
            store.to_str().expect("p"),
            "serve",
            "--listen",
            ":notaport",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn config_file_keys_errors_and_sighup_reload() {
    let ng = origin(Some("4m"));
    ng.put("long.img", &pattern(7, 24 * MIB as usize));
    ng.put("a.bin", &pattern(8, 3000));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let conf = t.path().join("config.toml");
    let log = t.path().join("access.log");
    let write = |mirrors: &str| {
        std::fs::write(
            &conf,
            format!(
                "listen = [\"127.0.0.1:0\"]\nstore = \"{store}\"\nmax_size = \"10G\"\n\
                 access_log = \"{log}\"\naccess_log_format = \"json\"\n\
                 drain_timeout = 5\nrevalidate = 30\n{mirrors}",
                store = t.path().join("unused-store").display(),
                log = log.display(),
            ),
        )
        .expect("config")
    };
    let keep = format!(
        "[mirrors.keep]\nurl = \"{u}\"\nheaders = {{ X-Token = {{ env = \"BC_TEST_TOKEN\" }}, X-Plain = \"p\" }}\n\
         fill = \"eager\"\nrevalidate = 10\npass_query = true\n",
        u = ng.url("")
    );
    let gone = format!("[mirrors.gone]\nurl = \"{}\"\n", ng.url(""));
    write(&format!("{keep}{gone}"));
    let conf_s = conf.to_str().expect("path");

    // --check-config: every key, the secret masked.
    let out = Command::new(BIN)
        .args([
            "--store",
            store.to_str().expect("p"),
            "serve",
            "--config",
            conf_s,
            "--check-config",
        ])
        .env("BC_TEST_TOKEN", "s3cret")
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("s3cret") && text.contains("env = \"BC_TEST_TOKEN\""),
        "{text}"
    );
    assert!(
        text.contains("x-plain = \"***\"") && text.contains("pass_query = true"),
        "{text}"
    );
    assert!(text.contains("max_size = 10737418240"), "{text}");

    // Bad files: one line naming file, line and key; exit 2.
    for (bad, line, key) in [
        ("listen = \"127.0.0.1:0\"\nbogus = 1\n", 2, "bogus"),
        (
            "[mirrors.x]\nurl = \"http://h/\"\nfill = \"sometimes\"\n",
            3,
            "fill",
        ),
        ("[mirrors.x]\nurl = \"not a url\"\n", 2, "url"),
    ] {
        let p = t.path().join("bad.toml");
        std::fs::write(&p, bad).expect("bad config");
        let out = Command::new(BIN)
            .args(["--store", store.to_str().expect("p"), "serve", "--config"])
            .arg(&p)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("bad.toml:{line}:")) && err.contains(key),
            "{err}"
        );
    }

    let serve = Serve::start(
        &store,
        &["--config", conf_s],
        &[("BC_TEST_TOKEN", "s3cret")],
    );
    // The long download on `keep` runs across the reload.
    let out = t.path().join("long.img");
    let mut dl = curl(&[
        "-o",
        out.to_str().expect("p"),
        &format!("{}/m/keep/long.img?q=1", serve.base),
    ])
    .spawn()
    .expect("curl");
    wait_file_len(&out, MIB);
    let got = curl(&[&format!("{}/m/gone/a.bin", serve.base)])
        .output()
        .expect("curl");
    assert!(got.stdout == pattern(8, 3000));
    write(&format!(
        "{keep}[mirrors.added]\nurl = \"{}\"\n",
        ng.url("")
    ));
    serve.signal("HUP");
    serve.wait_stderr("reloaded");
    let code = |path: &str| {
        let o = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}{path}", serve.base),
        ])
        .output()
        .expect("curl");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(code("/m/gone/a.bin"), "404");
    assert_eq!(code("/m/added/a.bin"), "200");
    assert!(
        dl.wait().expect("curl").success(),
        "the long download survived the reload"
    );
    assert!(std::fs::read(&out).expect("body") == pattern(7, 24 * MIB as usize));
    // The origin saw the header and the passed-on query.
    let nlog = ng.access_log();
    assert!(nlog.iter().any(|l| l.uri == "/long.img"), "{nlog:?}");
    drop(serve);
    // JSON access log lines parse; the store key of the file was not used
    // because --store wins.
    let lines = std::fs::read_to_string(&log).expect("access log");
    let parsed: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(parsed
        .iter()
        .any(|v| v["path"] == "/m/keep/long.img?q=1" && v["status"] == 200));
    assert!(parsed
        .iter()
        .any(|v| v["path"] == "/m/gone/a.bin" && v["status"] == 404 && v["cache"] == "error"));
    assert!(!t.path().join("unused-store").exists());
}

/// Parses a combined-format access line: (path, status, bytes, cache).
fn combined(line: &str) -> Option<(String, u16, u64, String)> {
    let req = line.split('"').nth(1)?;
    let path = req.split(' ').nth(1)?.to_owned();
    let after = line.split('"').nth(2)?.trim();
    let mut it = after.split(' ');
    let status = it.next()?.parse().ok()?;
    let bytes = it.next()?.parse().ok()?;
    let cache = line.split(" cache=").nth(1)?.split(' ').next()?.to_owned();
    Some((path, status, bytes, cache))
}

#[test]
fn access_log_results_and_metrics_parse() {
    let ng = origin(Some("4m"));
    let data = pattern(9, 16 * MIB as usize);
    ng.put("d.img", &data);
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = Serve::start(
        &store,
        &[
            "--listen",
            "127.0.0.1:0",
            "--mirror",
            &format!("o={}", ng.url("")),
        ],
        &[],
    );
    let url = format!("{}/m/o/d.img", serve.base);
    // miss (starts the fill) and coalesced (joins it), at once.
    let a = curl(&["-o", "/dev/null", &url]).spawn().expect("curl");
    std::thread::sleep(Duration::from_millis(300));
    let b = curl(&["-o", "/dev/null", &url]).spawn().expect("curl");
    for mut c in [a, b] {
        assert!(c.wait().expect("curl").success());
    }
    // hit (once the fill has finished: it checks the root after the last
    // byte went out), and an error (unknown mirror).
    let deadline = Instant::now() + STEP;
    loop {
        let status = curl(&[&format!("{}/status", serve.base)])
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
        let complete = v["objects"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["state"] == "complete"));
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "d.img did not complete: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(curl(&["-o", "/dev/null", "-r", "0-99", &url])
        .status()
        .expect("curl")
        .success());
    let _ = curl(&["-o", "/dev/null", &format!("{}/m/nope/x", serve.base)]).status();
    // partial: another process fills, serve follows.
    ng.put("e.img", &pattern(10, 8 * MIB as usize));
    let mut fetch = Command::new(BIN)
        .env_remove("BLOCKCACHE_STORE")
        .args([
            "-q",
            "--store",
            store.to_str().expect("p"),
            "fetch",
            "--limit-rate",
            "1M",
        ])
        .arg(ng.url("e.img"))
        .stdout(Stdio::null())
        .spawn()
        .expect("fetch");
    let deadline = Instant::now() + STEP;
    while !store
        .join("objects")
        .read_dir()
        .is_ok_and(|d| d.count() >= 2)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let e = curl(&[
        "-o",
        "/dev/null",
        "-r",
        "0-999",
        &format!("{}/m/o/e.img", serve.base),
    ])
    .status()
    .expect("curl");
    assert!(e.success());
    let _ = fetch.kill();
    let _ = fetch.wait();

    let metrics = curl(&[&format!("{}/metrics", serve.base)])
        .output()
        .expect("curl");
    let lines: Vec<_> = serve
        .stderr_lines()
        .into_iter()
        .filter_map(|l| combined(&l))
        .collect();
    let cache_of = |path: &str, status: u16| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.0 == path && l.1 == status)
            .map(|l| l.3.clone())
            .collect()
    };
    let full = cache_of("/m/o/d.img", 200);
    assert!(
        full.contains(&"miss".to_owned()) && full.contains(&"coalesced".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.0 == "/m/o/d.img" && l.1 == 206 && l.2 == 100 && l.3 == "hit"),
        "{lines:?}"
    );
    assert_eq!(cache_of("/m/nope/x", 404), ["error"], "{lines:?}");
    assert_eq!(cache_of("/m/o/e.img", 206), ["partial"], "{lines:?}");

    // A real Prometheus parser reads /metrics, and the counters moved.
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
v = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "".join(sorted(f"|{k}={x}" for k, x in s.labels.items()))
        v[key] = s.value
print(v.get("blockcache_http_requests_total|mirror=o|result=miss|status=200", 0))
print(v.get("blockcache_http_response_bytes_total|mirror=o", 0))
print(v.get("blockcache_upstream_bytes_total", 0))
print(v.get("blockcache_http_request_duration_seconds_count", 0))
print(v.get("blockcache_upstream_requests_total|mirror=o|status=2xx", 0))
"#;
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(py.stdin.as_mut().expect("stdin"), &metrics.stdout).expect("pipe");
    let py = py.wait_with_output().expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let nums: Vec<f64> = String::from_utf8_lossy(&py.stdout)
        .lines()
        .map(|l| l.parse().expect("number"))
        .collect();
    assert_eq!(nums[0], 1.0, "one miss");
    assert!(
        nums[1] >= 2.0 * data.len() as f64,
        "response bytes {}",
        nums[1]
    );
    assert!(nums[2] >= data.len() as f64, "upstream bytes {}", nums[2]);
    assert!(nums[3] >= 4.0, "request durations {}", nums[3]);
    assert!(nums[4] >= 1.0, "upstream requests {}", nums[4]);
}

#[test]
fn max_size_evicts_lru_and_never_an_image_being_read() {
    // Images larger than every buffer between serve and a stalled client
    // (pipe, socket buffers: ~10 MiB on loopback), so that a reader that
    // stops reading keeps serve reading the object.
    let ng = origin(Some("16m"));
    let n = 16 * MIB as usize;
    for (i, name) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        ng.put(name, &pattern(20 + i as u64, n));
    }
    ng.put("huge.img", &pattern(30, 26 * MIB as usize));
    let t = tempfile::tempdir().expect("tmp");
    let store = t.path().join("store");
    let serve = Serve::start(
        &store,
        &[
            "--listen",
            "127.0.0.1:0",
            "--mirror",
            &format!("o={}", ng.url("")),
            "--max-size",
            "24M",
            "--access-log",
            "off",
        ],
        &[],
    );
    let get = |name: &str| {
        curl(&[&format!("{}/m/o/{name}", serve.base)])
            .output()
            .expect("curl")
    };
    let store_bytes = || -> u64 {
        let out = Command::new(BIN)
            .env_remove("BLOCKCACHE_STORE")
            .args(["--store", store.to_str().expect("p"), "ls", "--json"])
            .output()
            .expect("ls");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array()
            .map(|a| a.iter().filter_map(|o| o["bytes_done"].as_u64()).sum())
            .unwrap_or(0)
    };
    // Each image fits; two do not: each fetch evicts the one before.
    for (i, name) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        assert!(get(name).stdout == pattern(20 + i as u64, n), "{name}");
        assert!(store_bytes() <= 24 * MIB, "{} bytes stored", store_bytes());
    }
    // An image being read is not evicted: a reader of c.img that stalls
    // (nobody empties its stdout pipe) holds it while a.img is asked for
    // again; a.img cannot fit, so it gets 507.
    let mut slow = curl(&[&format!("{}/m/o/c.img", serve.base)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/m/o/a.img", serve.base),
    ])
    .output()
    .expect("curl");
    assert_eq!(String::from_utf8_lossy(&code.stdout), "507");
    let mut body = Vec::new();
    slow.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut body)
        .expect("read c.img");
    assert!(
        slow.wait().expect("curl").success(),
        "the reader of c.img finished"
    );
    assert!(
        body == pattern(22, n),
        "c.img read whole while a.img waited"
    );
    // Larger than the limit: 507 with a clear reason.
    let o = curl(&[
        "-w",
        "%{http_code}",
        &format!("{}/m/o/huge.img", serve.base),
    ])
    .output()
    .expect("curl");
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.ends_with("507") && body.contains("larger than the size limit"),
        "{body}"
    );
    let m = curl(&[&format!("{}/metrics", serve.base)])
        .output()
        .expect("curl");
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(
        m.lines()
            .any(|l| l.starts_with("blockcache_evictions_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    // The status page shows the limit with the store totals.
    let status = curl(&[&format!("{}/status", serve.base)])
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(v["store"]["max_bytes"], 24 * MIB, "{v}");
}

/// The committed example config is valid as shipped, and `--check-config`
/// prints it with the secret taken from the environment masked.
#[test]
fn contrib_config_checks_and_masks_secrets() {
    let t = tempfile::tempdir().expect("tmp");
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/blockcache.toml");
    let out = Command::new(BIN)
        .env_remove("BLOCKCACHE_STORE")
        .env("IMAGES_TOKEN", "Bearer s3cret-token")
        .args(["--store", t.path().to_str().expect("p")])
        .args(["serve", "--config", conf, "--check-config"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret"), "secret printed: {text}");
    assert!(text.contains("IMAGES_TOKEN"), "{text}");
    assert!(text.contains("[mirrors.debian]") && text.contains("[mirrors.private]"));
    assert!(text.contains("fill = \"lazy\""), "{text}");
    // Nothing was created: checking a config writes no store.
    assert!(std::fs::read_dir(t.path()).expect("dir").next().is_none());
}

/// The committed systemd units pass `systemd-analyze verify` (unknown
/// keys, bad values, a missing binary would fail it).
#[test]
fn contrib_systemd_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze not found (apt-get install systemd)");
    };
    let t = tempfile::tempdir().expect("tmp");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    for unit in ["blockcache.service", "blockcache.socket"] {
        let text = std::fs::read_to_string(contrib.join(unit)).expect("unit");
        // The installed path does not exist here: point at the built binary.
        let text = text.replace("/usr/local/bin/blockcache", BIN);
        std::fs::write(t.path().join(unit), text).expect("copy");
    }
    let out = Command::new(analyze)
        .arg("verify")
        .arg(t.path().join("blockcache.service"))
        .arg(t.path().join("blockcache.socket"))
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let complaints: Vec<&str> = err.lines().filter(|l| l.contains("blockcache")).collect();
    assert!(complaints.is_empty(), "{complaints:?}");
}
