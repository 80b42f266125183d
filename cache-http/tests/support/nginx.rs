//! A real nginx origin for tests: serves a temp dir on 127.0.0.1, records
//! every request in an access log, is killed on drop.
//!
//! Needs an nginx binary (`/usr/sbin/nginx`, or `$NGINX_BIN`). The config
//! template is `tests/nginx.conf.in`.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEMPLATE: &str = include_str!("../nginx.conf.in");

/// One access-log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub body_bytes_sent: u64,
    /// The `Range` request header, empty when absent.
    pub range: String,
    /// nginx's serial number of the connection the request came on.
    pub connection: u64,
}

/// Options for [`Nginx::start`].
#[derive(Clone, Debug, Default)]
pub struct NginxOptions {
    /// nginx `limit_rate` value (e.g. `"1m"`), per connection.
    pub limit_rate: Option<String>,
}

/// A running nginx serving [`Nginx::root`].
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    root: PathBuf,
    port: u16,
}

impl Nginx {
    /// Starts nginx with default options.
    pub fn start() -> Nginx {
        Self::start_with(NginxOptions::default())
    }

    /// Starts nginx, retrying on port collisions; panics (test set-up
    /// failure) with nginx's error log when it cannot start.
    pub fn start_with(opts: NginxOptions) -> Nginx {
        Self::start_configured(opts, "")
    }

    /// [`Nginx::start_with`], with `server_extra` (nginx directives, e.g.
    /// `location` blocks) added to the `server` block. `@PORT@` in it is
    /// replaced by the port.
    pub fn start_configured(opts: NginxOptions, server_extra: &str) -> Nginx {
        let bin = std::env::var_os("NGINX_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
        assert!(
            bin.exists(),
            "nginx not found at {bin:?} (apt-get install -y nginx, or set NGINX_BIN)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root dir");
        let mut last_err = String::new();
        for _ in 0..10 {
            // Port 0 cannot be passed to nginx; take a free port from the OS
            // and release it. Another process may grab it in between: then
            // nginx fails to bind and we try again with another.
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
                l.local_addr().expect("local addr").port()
            };
            let conf = TEMPLATE
                .replace("@SERVER_EXTRA@", server_extra)
                .replace("@DIR@", &dir.path().display().to_string())
                .replace("@ROOT@", &root.display().to_string())
                .replace("@PORT@", &port.to_string())
                .replace(
                    "@LIMIT_RATE@",
                    &opts
                        .limit_rate
                        .as_ref()
                        .map(|r| format!("limit_rate {r};"))
                        .unwrap_or_default(),
                );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let _ = std::fs::remove_file(dir.path().join("error.log"));
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut stderr);
                    }
                    let log =
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    last_err = format!("nginx exited with {status}: {stderr}{log}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        child,
                        dir,
                        root,
                        port,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nginx did not answer on port {port} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_err.contains("Address already in use") {
                break;
            }
        }
        panic!("cannot start nginx: {last_err}");
    }

    /// Directory served at `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Writes a file to serve.
    pub fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).expect("served directory");
        }
        std::fs::write(&p, bytes).expect("write served file");
        p
    }

    /// The access log so far, parsed.
    pub fn access_log(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// Waits (bounded) until the access log has at least `n` lines: nginx
    /// logs a request after its last byte went out, which can be after the
    /// client has seen that byte.
    pub fn wait_log_lines(&self, n: usize) -> Vec<LogLine> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.len() >= n || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn parse_line(line: &str) -> Option<LogLine> {
    let (head, rest) = line.split_once(" \"")?;
    let (range, connection) = rest.rsplit_once("\" ")?;
    let mut it = head.split(' ');
    Some(LogLine {
        method: it.next()?.to_owned(),
        uri: it.next()?.to_owned(),
        status: it.next()?.parse().ok()?,
        body_bytes_sent: it.next()?.parse().ok()?,
        range: range.trim_start_matches('-').to_owned(),
        connection: connection.trim().parse().ok()?,
    })
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
