//! The endpoint in front of a real nginx origin through `HttpSource`.

mod support;

use std::sync::Arc;

use cache_core::{Source, SourceError, SourceErrorKind, Store};
use cache_http::endpoint::{EndpointConfig, MirrorSourceFactory};
use cache_http::HttpSource;
use support::endpoint::{curl, run, TestEndpoint};
use support::nginx::{Nginx, NginxOptions};
use support::{fast_config, pattern};

fn http_factory() -> MirrorSourceFactory {
    Arc::new(|url: &str| {
        HttpSource::new(url, fast_config())
            .map(|s| Arc::new(s) as Arc<dyn Source>)
            .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_nginx_two_clients_each_byte_once() {
    let ng = Nginx::start_with(NginxOptions {
        limit_rate: Some("8m".into()),
    });
    let len = 6 * (1 << 20) + 333;
    let bytes = pattern(30, len);
    ng.put("img.raw", &bytes);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut config = EndpointConfig {
        mirrors: vec![("ng".to_owned(), url::Url::parse(&ng.url("")).unwrap()).into()],
        source_factory: Some(http_factory()),
        ..EndpointConfig::default()
    };
    config.fetch.chunk_size = 256 << 10;
    let ep = TestEndpoint::start_with_store(store, dir, config).await;
    let url = ep.url("/m/ng/img.raw");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let args_a = ["-o", a.to_str().unwrap(), &url];
    // Both from the start: a reader far ahead would make the fill cut its
    // long request, and bytes already in flight on that connection count
    // as sent in nginx's log (see the memory-origin test for that case,
    // which checks that each chunk is *requested* once).
    let args_b = ["-o", b.to_str().unwrap(), &url];
    tokio::join!(curl(&args_a), curl(&args_b));
    assert_eq!(std::fs::read(&a).unwrap(), bytes);
    assert_eq!(std::fs::read(&b).unwrap(), bytes);

    // The origin sent each byte once (probe requests send at most one).
    let log = ng.wait_log_lines(2);
    let total: u64 = log.iter().map(|l| l.body_bytes_sent).sum();
    let probes = log.iter().filter(|l| l.body_bytes_sent <= 1).count() as u64;
    assert!(
        total <= len as u64 + probes,
        "origin sent {total} bytes for a {len}-byte object: {log:?}"
    );

    // Unknown file at the origin → 404.
    let out = run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &ep.url("/m/ng/none.raw"),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    ep.stop().await;
}
