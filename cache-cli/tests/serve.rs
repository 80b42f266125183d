//! `blockcache serve` as a daemon, the real binary against a real nginx and
//! real clients (curl, qemu-img, systemd-socket-activate): signals and
//! drain, HEAD without fills, lazy mirrors, listen addresses, config file
//! and reload, systemd units. Every wait is bounded; nothing asserts on
//! timing. The access log, metrics and size limit are in `serve_store.rs`.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::serve::*;
use support::{pattern, BIN, STEP};

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
    let draining = serve.wait_stderr("draining");
    // The download's connection is counted, on whichever thread it runs.
    assert!(draining.contains("connections=1"), "{draining}");
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
    drop(serve);

    // IPv6 loopback in brackets; connections on the main runtime's
    // threads (--threads 0) serve the same.
    let mirror = format!("o={}", ng.url(""));
    let v6 = Serve::start(
        &store,
        &["--listen", "[::1]:0", "--mirror", &mirror, "--threads", "0"],
        &[],
    );
    assert!(v6.base.starts_with("http://[::1]:"), "{}", v6.base);
    let got = curl(&[&format!("{}/m/o/a.bin", v6.base)])
        .output()
        .expect("curl");
    assert!(got.stdout == pattern(6, 5000), "served on [::1]");
    drop(v6);

    // `:PORT`: every interface, IPv4 too, with a warning that says so.
    let all = Serve::start(&store, &["--listen", ":0", "--mirror", &mirror], &[]);
    all.wait_stderr("reachable from the network");
    let port = all.base.rsplit(':').next().expect("port").to_owned();
    for host in ["127.0.0.1", "[::1]"] {
        let got = curl(&[&format!("http://{host}:{port}/m/o/a.bin")])
            .output()
            .expect("curl");
        assert!(got.stdout == pattern(6, 5000), "served on {host} via :0");
    }
    drop(all);

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
                 drain_timeout = 5\nmax_connections = 2000\nthreads = 3\nrevalidate = 30\n{mirrors}",
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
    // `moved` changes its origin directory on reload.
    ng.put("v1/m.bin", b"first origin");
    ng.put("v2/m.bin", b"second origin");
    let moved = |dir: &str| format!("[mirrors.moved]\nurl = \"{}\"\n", ng.url(dir));
    write(&format!("{keep}{gone}{}", moved("v1/")));
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
    assert!(text.contains("max_connections = 2000"), "{text}");
    assert!(text.contains("threads = 3"), "{text}");

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
    let body = |path: &str| {
        let o = curl(&[&format!("{}{path}", serve.base)])
            .output()
            .expect("curl");
        o.stdout
    };
    assert_eq!(body("/m/moved/m.bin"), b"first origin");
    write(&format!(
        "{keep}[mirrors.added]\nurl = \"{}\"\n{}",
        ng.url(""),
        moved("v2/")
    ));
    serve.signal("HUP");
    serve.wait_stderr("reloaded");
    // 24 MiB at 4 MiB/s: the download is still running (reloads take
    // milliseconds; the throttle only slows it further on a busy machine).
    let at_reload = std::fs::metadata(&out).map_or(0, |m| m.len());
    assert!(
        at_reload < 24 * MIB,
        "the long download was over before the reload ({at_reload} bytes)"
    );
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
    assert_eq!(body("/m/moved/m.bin"), b"second origin", "a changed mirror");
    // A bad file on reload: logged, the mirrors stay as they were.
    std::fs::write(&conf, "listen = [\"127.0.0.1:0\"]\nbogus = 1\n").expect("bad config");
    serve.signal("HUP");
    let line = serve.wait_stderr("bogus");
    assert!(
        line.contains("config.toml:2"),
        "names the file and line: {line}"
    );
    assert_eq!(code("/m/added/a.bin"), "200", "the old mirrors stay");
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

/// The committed example config is valid as shipped (the command README
/// shows works with no environment set), and `--check-config` prints it
/// with a secret taken from the environment masked once its header line
/// is enabled.
#[test]
fn contrib_config_checks_and_masks_secrets() {
    let t = tempfile::tempdir().expect("tmp");
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/blockcache.toml");
    let check = |conf: &Path, token: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env_remove("BLOCKCACHE_STORE")
            .env_remove("IMAGES_TOKEN")
            .args(["--store", t.path().join("store").to_str().expect("p")])
            .args(["serve", "--config"])
            .arg(conf)
            .arg("--check-config");
        if let Some(v) = token {
            c.env("IMAGES_TOKEN", v);
        }
        c.output().expect("run")
    };
    let shipped = check(Path::new(conf), None);
    assert!(
        shipped.status.success(),
        "as shipped: {}",
        String::from_utf8_lossy(&shipped.stderr)
    );
    let text = String::from_utf8_lossy(&shipped.stdout);
    assert!(text.contains("[mirrors.debian]") && text.contains("[mirrors.private]"));
    assert!(text.contains("fill = \"lazy\""), "{text}");

    // The header line enabled, as a user with a token would.
    let shipped_text = std::fs::read_to_string(conf).expect("contrib config");
    let line = "# headers = { Authorization = { env = \"IMAGES_TOKEN\" } }";
    assert!(shipped_text.contains(line), "the example header line moved");
    let enabled = t.path().join("config.toml");
    std::fs::write(&enabled, shipped_text.replace(line, &line[2..])).expect("write");
    let unset = check(&enabled, None);
    assert_eq!(unset.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unset.stderr);
    assert!(
        err.contains("IMAGES_TOKEN"),
        "names the unset variable: {err}"
    );
    let out = check(&enabled, Some("Bearer s3cret-token"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret"), "secret printed: {text}");
    assert!(text.contains("IMAGES_TOKEN"), "{text}");
    // Nothing was created: checking a config writes no store.
    assert!(!t.path().join("store").exists());
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
