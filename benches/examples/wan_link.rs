//! A WAN in userspace in front of an origin: per-connection RTT and rate
//! cap, one link cap for all connections (the model: `benches::wan`).
//!
//! ```sh
//! cargo run --release -p benches --example wan_link -- \
//!     --upstream 127.0.0.1:8080 --rtt-ms 40 --conn-mb 20 --link-mb 100 [--stats]
//! ```
//! prints `listening on 127.0.0.1:PORT` and serves until killed. Rates are
//! in MB/s (10^6 bytes). With `--stats`, every second a line on stderr
//! gives what the link delivered and how long it idled for lack of a
//! ready piece (a link that idles while transfers run points at the
//! client's request pattern, or at the model).

use std::time::Duration;

use benches::wan::{Link, WanShape};
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let upstream = benches::arg_str("--upstream").expect("--upstream HOST:PORT");
    let link = Link::new(WanShape {
        rtt: Duration::from_millis(benches::arg("--rtt-ms", 40) as u64),
        conn_rate: benches::arg("--conn-mb", 20) as f64 * 1e6,
        link_rate: benches::arg("--link-mb", 100) as f64 * 1e6,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    if std::env::args().any(|a| a == "--stats") {
        let link = link.clone();
        tokio::spawn(async move {
            let (mut bytes, mut idle) = (link.bytes(), link.idle());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (b, i) = (link.bytes(), link.idle());
                eprintln!(
                    "wan_link: {:.1} MB/s delivered, link idle {} ms",
                    (b - bytes) as f64 / 1e6,
                    (i - idle).as_millis()
                );
                (bytes, idle) = (b, i);
            }
        });
    }
    link.serve(listener, upstream).await;
}
