//! `serve` in front of an origin that dies: a complete stored copy is
//! served at once while the origin is asked in the background, whether the
//! origin hangs (accepts, never answers) or refuses connections, in the
//! same process and after a restart. Something never stored gets an error
//! within the probe budget, not after minutes of retries.
//!
//! The origin is a real nginx behind a small TCP front whose behaviour the
//! test switches (a hanging origin is a fault nginx does not produce).

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const FORWARD: u8 = 0;
const HANG: u8 = 1;
const CLOSED: u8 = 2;

/// A TCP front for nginx: forwards, hangs (accepts and never answers) or
/// closes its port (connections refused), as the test says. A switch away
/// from forwarding cuts the forwarded connections, as a dying origin does,
/// so pooled client connections cannot keep reaching nginx.
struct Front {
    addr: String,
    mode: Arc<AtomicU8>,
    forwarded: Arc<Mutex<Vec<TcpStream>>>,
}

impl Front {
    fn start(upstream: String) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind front");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let forwarded = Arc::new(Mutex::new(Vec::new()));
        let (m, fw) = (mode.clone(), forwarded.clone());
        std::thread::spawn(move || {
            let mut hung = Vec::new();
            loop {
                if m.load(Ordering::SeqCst) == CLOSED {
                    return; // the listener goes: the port refuses
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if m.load(Ordering::SeqCst) == HANG {
                            hung.push(client); // never answered, never closed
                        } else if let Ok(server) = TcpStream::connect(&upstream) {
                            let mut list = fw.lock().expect("lock");
                            list.push(client.try_clone().expect("clone"));
                            list.push(server.try_clone().expect("clone"));
                            pipe(
                                client.try_clone().expect("clone"),
                                server.try_clone().expect("clone"),
                            );
                            pipe(server, client);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Front {
            addr,
            mode,
            forwarded,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for s in self.forwarded.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// A range GET of the mirrored image, with the time it took.
fn timed_range(addr: &str, range: &str) -> (u16, Vec<u8>, Duration) {
    let t = Instant::now();
    let (status, _, body) = http_get(addr, "/m/o/disk.img", Some(range));
    (status, body, t.elapsed())
}

/// Served from the stored copy "at once": far below the probe budget
/// (10 s) and the source's retries (minutes), with room for a loaded CI.
const AT_ONCE: Duration = Duration::from_secs(5);

#[test]
fn a_complete_copy_is_served_at_once_when_the_origin_hangs_or_is_gone() {
    let (ng, data, _) = origin(None, 8 * MIB, 61);
    ng.put("never.img", &pattern(62, 1000));
    let front = Front::start(
        ng.url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
    );
    let (_t, store) = store_dir();
    let mirror = format!("o=http://{}/", front.addr);
    // --revalidate 0: every request is past the window, so each one
    // would ask the origin first if the copy waited for it.
    let serve_args = ["--mirror", mirror.as_str(), "--revalidate", "0"];
    let (mut serve, addr) = start_serve(&store, &serve_args);
    let (status, _, body) = http_get(&addr, "/m/o/disk.img", None);
    assert_eq!(status, 200);
    assert!(body == data, "the whole image through the mirror");
    let deadline = Instant::now() + STEP;
    while listed(&store, &format!("http://{}/disk.img", front.addr))["state"] != "complete" {
        assert!(Instant::now() < deadline, "the image did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The origin hangs: the stored copy is served without waiting for it.
    front.set(HANG);
    let (status, body, took) = timed_range(&addr, "100-199");
    assert_eq!(status, 206);
    assert!(body == data[100..200], "the stored bytes");
    assert!(
        took < AT_ONCE,
        "served after {took:?} behind a hanging origin"
    );

    // Never stored, origin hanging: an error within the probe budget.
    let t = Instant::now();
    let (status, _, _) = http_get(&addr, "/m/o/never.img", None);
    assert_eq!(status, 502, "no copy, no origin");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the probe gave up after {:?}",
        t.elapsed()
    );

    // A restart knows nothing in memory: the copy is still served at once.
    serve.kill();
    let (mut serve, addr) = start_serve(&store, &serve_args);
    let (status, body, took) = timed_range(&addr, "-1000");
    assert_eq!(status, 206);
    assert!(body == data[data.len() - 1000..], "the stored tail");
    assert!(took < AT_ONCE, "served after {took:?} after a restart");

    // The origin's port is closed: likewise.
    front.set(CLOSED);
    let (status, body, took) = timed_range(&addr, "0-9");
    assert_eq!(status, 206);
    assert!(body == data[..10], "the stored head");
    assert!(took < AT_ONCE, "served after {took:?} behind a closed port");
    serve.kill();
}

/// A new version at the origin is noticed by the background revalidation:
/// the request after it gets the new bytes (the stale copy only for the
/// request that triggered it).
#[test]
fn a_new_version_is_fetched_after_the_background_revalidation() {
    let (ng, old, _) = origin(None, 3 * MIB, 63);
    let (_t, store) = store_dir();
    let mirror = format!("o={}", ng.url(""));
    let (mut serve, addr) =
        start_serve(&store, &["--mirror", mirror.as_str(), "--revalidate", "0"]);
    let (status, _, body) = http_get(&addr, "/m/o/disk.img", None);
    assert_eq!(status, 200);
    assert!(body == old);
    let deadline = Instant::now() + STEP;
    while listed(&store, &ng.url("disk.img"))["state"] != "complete" {
        assert!(Instant::now() < deadline, "the image did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new version (new length and mtime, so a new validator).
    std::thread::sleep(Duration::from_millis(1100));
    let new = pattern(64, 3 * MIB + 7);
    ng.put("disk.img", &new);
    let deadline = Instant::now() + STEP;
    loop {
        let (status, _, body) = http_get(&addr, "/m/o/disk.img", None);
        assert_eq!(status, 200);
        if body == new {
            break;
        }
        assert!(body == old, "either version, never a mix");
        assert!(
            Instant::now() < deadline,
            "the new version was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    serve.kill();
}
