//! The `blockcache serve` harness of the serve test suites: a running
//! `serve` (killed when dropped) with its first stdout line parsed and its
//! stderr collected, nginx origins, curl, and small waits. Every wait is
//! bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::nginx::{Nginx, NginxOptions};
use super::{BIN, STEP};

/// Serve's tests count in u64 bytes.
pub const MIB: u64 = 1 << 20;

/// A running `serve`, killed when dropped.
pub struct Serve {
    pub child: Child,
    /// `http://ADDR` of the first TCP listener.
    pub base: String,
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    pub fn start(store: &Path, args: &[&str], envs: &[(&str, &str)]) -> Serve {
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

    pub fn spawn(mut c: Command) -> Serve {
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

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits (bounded) for the exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
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
    pub fn wait_stderr(&self, what: &str) -> String {
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
    pub fn stderr_lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(700)) {
            v.push(l);
        }
        v
    }
}

pub fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "120"]).args(args);
    c
}

pub fn origin(rate: Option<&str>) -> Nginx {
    Nginx::start_with(NginxOptions {
        limit_rate: rate.map(str::to_owned),
    })
}

/// A sparse file of `len` bytes in nginx's root (the origin serves zeros
/// without the test writing gigabytes).
pub fn sparse(ng: &Nginx, name: &str, len: u64) -> PathBuf {
    let p = ng.root().join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
    p
}

pub fn body_bytes(ng: &Nginx) -> u64 {
    ng.access_log().iter().map(|l| l.body_bytes_sent).sum()
}

/// Waits until `path` has at least `n` bytes.
pub fn wait_file_len(path: &Path, n: u64) {
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

pub fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or(())
}

/// The path, status, bytes and cache result of a combined access-log line.
pub fn combined(line: &str) -> Option<(String, u16, u64, String)> {
    let req = line.split('"').nth(1)?;
    let path = req.split(' ').nth(1)?.to_owned();
    let after = line.split('"').nth(2)?.trim();
    let mut it = after.split(' ');
    let status = it.next()?.parse().ok()?;
    let bytes = it.next()?.parse().ok()?;
    let cache = line.split(" cache=").nth(1)?.split(' ').next()?.to_owned();
    Some((path, status, bytes, cache))
}
