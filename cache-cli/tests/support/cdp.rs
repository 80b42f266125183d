//! Headless Chromium driven through the DevTools protocol over
//! `--remote-debugging-pipe` (fd 3: commands in, fd 4: replies out, each a
//! JSON message ended by NUL): real time, no websocket client needed.
//! Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// Bound of one protocol call.
const CALL: Duration = Duration::from_secs(60);

pub struct Chromium {
    child: Child,
    commands: std::io::PipeWriter,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

/// The chromium binary (`$CHROMIUM_BIN`, else `chromium`).
pub fn chromium_bin() -> String {
    std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "chromium".into())
}

impl Chromium {
    /// Starts headless Chromium with a fresh profile (panics when it is not
    /// installed: `apt-get install chromium`, which `.ci/run` does).
    pub fn launch(width: u32, height: u32) -> Chromium {
        let profile = tempfile::tempdir().expect("profile dir");
        let (cmd_read, cmd_write) = std::io::pipe().expect("pipe");
        let (reply_read, reply_write) = std::io::pipe().expect("pipe");
        let (cr, rw) = (cmd_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut c = Command::new(chromium_bin());
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.path().display()),
            "about:blank",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe fcntl/dup2 calls between fork and
        // exec. Both ends are first moved above fd 10 so that placing one
        // on 3 or 4 cannot clobber the other.
        unsafe {
            c.pre_exec(move || {
                let hi_cr = libc::fcntl(cr, libc::F_DUPFD, 10);
                let hi_rw = libc::fcntl(rw, libc::F_DUPFD, 10);
                if hi_cr < 0 || hi_rw < 0 || libc::dup2(hi_cr, 3) < 0 || libc::dup2(hi_rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): apt-get install chromium",
                chromium_bin()
            )
        });
        drop(cmd_read);
        drop(reply_write);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reply_read);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        buf.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Chromium {
            child,
            commands: cmd_write,
            replies,
            next_id: 1,
            session: None,
            _profile: profile,
        }
    }

    /// Sends one command (to the attached page when there is one) and
    /// waits (bounded) for its reply's `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let (Some(s), false) = (&self.session, method.starts_with("Target.")) {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = std::time::Instant::now() + CALL;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method} within {CALL:?}"));
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    pub fn open(&mut self, url: &str) {
        let t = self.call("Target.createTarget", json!({"url": url}));
        let target = t["targetId"].as_str().expect("targetId").to_owned();
        let a = self.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        self.session = Some(a["sessionId"].as_str().expect("sessionId").to_owned());
    }

    /// Evaluates `expr` in the page and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 png")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
