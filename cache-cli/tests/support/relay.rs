//! A TCP relay in front of a real server (SeaweedFS, nginx) for faults
//! and orderings the server does not produce on its own: slow reads,
//! ignored create-only writes, bodies cut mid-way, and gates that hold
//! traffic until the test says so (to make an ordering certain instead
//! of likely).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Held traffic waits for [`Gate::open`] (at most [`super::STEP`]).
#[derive(Debug, Default)]
pub struct Gate(AtomicBool);

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wait(&self) {
        let deadline = Instant::now() + super::STEP;
        while !self.0.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a [`relay`] does to the bytes it passes.
#[derive(Clone, Debug, Default)]
pub struct Relay {
    /// Bytes per second toward the client (0: no limit).
    pub rate: usize,
    /// Renames the `if-none-match` request header (same length, so bodies
    /// and framing stay intact): the relayed store then ignores
    /// create-only writes, as Garage and `rclone serve s3` do.
    pub hide_if_none_match: bool,
    /// Cut each connection after this many bytes toward the client (0:
    /// never): a response body truncated mid-way.
    pub cut_after: usize,
    /// A request whose first line starts with this (e.g. `PUT /b/src/`)
    /// is held until the gate opens.
    pub hold_request: Option<(String, Arc<Gate>)>,
    /// Each connection passes this many bytes toward the client, then
    /// waits for the gate.
    pub hold_after: Option<(usize, Arc<Gate>)>,
}

/// A relay to `127.0.0.1:port` doing `how`; its port.
pub fn relay(port: u16, how: Relay) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let relay_port = l.local_addr().expect("relay address").port();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let (Ok(c_in), Ok(u_out)) = (client.try_clone(), upstream.try_clone()) else {
                continue;
            };
            let (up, down) = (how.clone(), how.clone());
            std::thread::spawn(move || toward_server(c_in, u_out, &up));
            std::thread::spawn(move || toward_client(upstream, client, &down));
        }
    });
    relay_port
}

fn toward_server(mut from: TcpStream, mut to: TcpStream, how: &Relay) {
    const HEADER: &[u8] = b"if-none-match:";
    const RENAMED: &[u8] = b"x-ignored-mat:";
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if how.hide_if_none_match {
            let mut i = 0;
            while i + HEADER.len() <= n {
                if buf[i..i + HEADER.len()].eq_ignore_ascii_case(HEADER) {
                    buf[i..i + HEADER.len()].copy_from_slice(RENAMED);
                }
                i += 1;
            }
        }
        if let Some((line, gate)) = &how.hold_request {
            if buf[..n].starts_with(line.as_bytes()) {
                gate.wait();
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn toward_client(mut from: TcpStream, mut to: TcpStream, how: &Relay) {
    let mut buf = vec![0u8; 64 << 10];
    let mut passed = 0usize;
    loop {
        let started = Instant::now();
        let mut n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cut = how.cut_after > 0 && passed + n >= how.cut_after;
        if cut {
            n = how.cut_after - passed;
        }
        if let Some((after, gate)) = &how.hold_after {
            if passed + n > *after {
                gate.wait();
            }
        }
        passed += n;
        if to.write_all(&buf[..n]).is_err() || cut {
            break;
        }
        if how.rate > 0 {
            let due = Duration::from_secs_f64(n as f64 / how.rate as f64);
            if let Some(rest) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// A port where connections are accepted and never answered (a hung
/// server, or a middlebox that swallows requests): each is held open as
/// long as the test process runs. No real server can be made to do this.
pub fn black_hole() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("black hole address").port();
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().collect();
        drop(held);
    });
    port
}
