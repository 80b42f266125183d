//! The live status page in a real browser: `blockcache serve` fills an
//! object from a throttled nginx through a mirror, headless Chromium opens
//! `/` and the test reads the page's DOM (the chunk map exposes its counts
//! as `data-` attributes) and takes a screenshot. `/events` is read with a
//! plain HTTP client. Every wait is bounded; nothing asserts on timing.

#[path = "support/cdp.rs"]
mod cdp;
#[path = "support/data.rs"]
mod data;
#[path = "../../cache-http/tests/support/nginx.rs"]
mod nginx;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use data::pattern;
use nginx::{Nginx, NginxOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_blockcache");
const MIB: usize = 1 << 20;
/// Bound of any one wait: turns a hang into a failure, asserts nothing.
const STEP: Duration = Duration::from_secs(90);

/// `blockcache serve` on port 0, killed on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(store: &Path, mirror: &str) -> Serve {
        let mut child = Command::new(BIN)
            .env_remove("RUST_LOG")
            .args(["--store"])
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0", "--mirror", mirror])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn blockcache serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("listen line: {line:?}"))
            .to_owned();
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with an optional range; returns status and body (bounded).
fn get(addr: &str, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    let range = range
        .map(|r| format!("Range: bytes={r}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("response");
    let eoh = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let status = String::from_utf8_lossy(&resp[9..12])
        .parse()
        .expect("status");
    (status, resp[eoh + 4..].to_vec())
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn map_data(page: &mut cdp::Chromium) -> Value {
    page.eval("JSON.stringify(Object.assign({}, document.getElementById('map').dataset))")
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

fn num(v: &Value, k: &str) -> i64 {
    v[k].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1)
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Decodes a PNG and returns (width, height, distinct colours seen).
fn png_colours(png_bytes: &[u8]) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let bpp = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for px in buf[..info.buffer_size()].chunks(bpp).step_by(7) {
        colours.insert(px.to_vec());
        if colours.len() > 64 {
            break;
        }
    }
    (info.width, info.height, colours.len())
}

#[test]
fn status_page_shows_the_chunk_map_filling_and_a_far_demand() {
    // 1 MiB chunks at 256 KiB/s per connection: chunks land about one a
    // second, a demanded chunk takes ~4 s, the whole fill far longer than
    // the test needs.
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("256k".into()),
    });
    let len = 48 * MIB + 777;
    ng.put("disk.img", &pattern(len, 1));
    let chunks = len.div_ceil(MIB) as i64;
    let t = tempfile::tempdir().expect("temp dir");
    let serve = Serve::start(&t.path().join("store"), &format!("img={}", ng.url("")));
    let addr = serve.addr.clone();
    // The first byte starts the fill of the whole object.
    assert_eq!(get(&addr, "/m/img/disk.img", Some("0-0")).0, 206);

    let mut page = cdp::Chromium::launch(1100, 440);
    page.open(&format!("http://{addr}/"));
    let first = wait_for("the object's row and its chunk map", || {
        let rows = page.eval("document.querySelectorAll('#rows tr[data-key]').length");
        let m = map_data(&mut page);
        (rows.as_i64() == Some(1) && num(&m, "chunks") == chunks && num(&m, "complete") > 0)
            .then_some(m)
    });
    // The CSP let exactly the inline style and script run: the script
    // filled the table, and the style applies (body margin 0).
    let margin = page.eval("getComputedStyle(document.body).margin");
    assert_eq!(
        margin.as_str(),
        Some("0px"),
        "the inline style applies under the CSP"
    );
    let row = page.eval("document.querySelector('#rows tr').textContent");
    let row = row.as_str().unwrap_or_default();
    assert!(row.contains("disk.img"), "row names the file: {row}");
    assert!(row.contains("filling"), "row shows the state: {row}");
    let c1 = num(&first, "complete");
    let second = wait_for("more complete cells", || {
        let m = map_data(&mut page);
        (num(&m, "complete") > c1).then_some(m)
    });
    assert!(
        num(&second, "events") > num(&first, "events"),
        "updated by deltas"
    );
    assert_eq!(
        num(&second, "complete")
            + num(&second, "inflight")
            + num(&second, "missing")
            + num(&second, "demanded")
            + num(&second, "damaged"),
        chunks,
        "every chunk is in exactly one state: {second}"
    );

    // A far read (in the last full chunk: the very last one is 777
    // bytes and would land at once): its chunk is demanded.
    let far_start = len - 777 - MIB / 2;
    let far = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            get(
                &addr,
                "/m/img/disk.img",
                Some(&format!("{far_start}-{}", far_start + 99)),
            )
        })
    };
    let demanded = wait_for("a demanded cell at the far end", || {
        let m = map_data(&mut page);
        (num(&m, "demandedMax") >= chunks - 2).then_some(m)
    });
    assert!(num(&demanded, "demanded") >= 1, "{demanded}");
    let png = page.screenshot();
    let path = artifact_dir().join("status-page.png");
    std::fs::write(&path, &png).expect("save screenshot");
    let (w, h, colours) = png_colours(&png);
    assert!(w >= 800 && h >= 300, "screenshot {w}x{h}");
    assert!(
        colours >= 5,
        "screenshot is not blank ({colours} colours): {}",
        path.display()
    );
    let (status, body) = far.join().expect("far read");
    assert_eq!(status, 206);
    assert_eq!(body.len(), 100);
    // The far chunk completes long before the sequential fill gets there.
    let after = wait_for("the far chunk complete", || {
        let m = map_data(&mut page);
        (num(&m, "demanded") == 0).then_some(m)
    });
    assert!(num(&after, "complete") < chunks, "still filling: {after}");
    drop(serve);
}

/// Reads SSE events from `/events` until `pred` accepts one (bounded).
fn read_events(addr: &str, mut pred: impl FnMut(&str, &Value) -> bool) -> Vec<(String, Value)> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    // The body is chunked; SSE lines are read across chunk framing by
    // skipping the size lines (hex digits only).
    let mut seen = Vec::new();
    let mut event = String::new();
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        let mut line = String::new();
        if r.read_line(&mut line).expect("event line") == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).expect("event data is JSON");
            let done = pred(&event, &v);
            seen.push((event.clone(), v));
            if done {
                return seen;
            }
        }
    }
    panic!("no matching event within {STEP:?}: {seen:?}");
}

#[test]
fn events_stream_a_snapshot_then_chunk_deltas() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("512k".into()),
    });
    let len = 16 * MIB;
    ng.put("disk.img", &pattern(len, 1));
    let t = tempfile::tempdir().expect("temp dir");
    let serve = Serve::start(&t.path().join("store"), &format!("img={}", ng.url("")));
    let addr = serve.addr.clone();
    assert_eq!(get(&addr, "/m/img/disk.img", Some("0-0")).0, 206);
    let seen = read_events(&addr, |event, v| {
        event == "delta"
            && v["objects"].as_array().is_some_and(|objs| {
                objs.iter().any(|o| {
                    o["cells"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|run| run[2] == 3))
                })
            })
    });
    let (first, snap) = &seen[0];
    assert_eq!(first, "snapshot", "the first event is a snapshot");
    let obj = &snap["objects"][0];
    assert_eq!(obj["name"], "disk.img");
    assert_eq!(obj["chunks_total"], 16);
    assert!(obj["map"].is_array(), "the snapshot carries the map: {obj}");
    let (_, delta) = seen.last().expect("a delta");
    let cells = delta["objects"][0]["cells"].as_array().expect("cells");
    let covered: u64 = cells
        .iter()
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
        .sum();
    assert!(
        covered < 16,
        "a delta carries the changed ranges, not the map: {delta}"
    );
    // /status: the same data as one document.
    let (status, body) = get(&addr, "/status", None);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("status json");
    assert_eq!(v["objects"][0]["name"], "disk.img");
    assert_eq!(v["mirrors"][0]["name"], "img");
    assert!(v["store"]["free_bytes"].as_u64().is_some(), "{v}");
    drop(serve);
}
