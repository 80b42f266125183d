//! HTTPS: a test CA made with rcgen, trusted through `extra_ca`; HTTP/2 is
//! negotiated with ALPN.

mod support;

use std::sync::Arc;

use cache_core::{SourceErrorKind, SourceInfo};
use cache_http::{HttpSource, HttpSourceConfig, HttpSourceError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::fault_origin::{Action, FaultOrigin};
use support::{fast_config, pattern, probe, read};

/// A CA (PEM) and a server config with a leaf for 127.0.0.1 signed by it.
fn test_pki() -> (String, rustls::ServerConfig) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_cert.pem(), server)
}

#[tokio::test]
async fn https_with_extra_ca_uses_http2() {
    let (ca_pem, server) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let data = pattern(11, 300_000);
    let o = FaultOrigin::start_tls(data.clone(), "\"t1\"", server, |_, i| {
        // A reset on the first range read: resumption works over h2 too.
        if i == 1 {
            Action::Reset { after: 50_000 }
        } else {
            Action::Serve
        }
    })
    .await;
    let cfg = HttpSourceConfig {
        extra_ca: Some(ca_path),
        ..fast_config()
    };
    let src = HttpSource::new(&o.url("/img"), cfg).unwrap();
    let info = probe(&src).await.unwrap();
    assert_eq!(
        info,
        SourceInfo {
            len: 300_000,
            validator: "\"t1\"".into(),
            ranges: true
        }
    );
    let (_, got) = read(&src, 0..300_000, &info).await.unwrap();
    assert!(got == data, "bytes differ");
    let seen = o.seen();
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
}

#[tokio::test]
async fn https_without_the_ca_fails_at_once_naming_cacert() {
    let (_, server) = test_pki();
    let o = FaultOrigin::start_tls(pattern(1, 10), "\"t1\"", server, |_, _| Action::Serve).await;
    let cfg = HttpSourceConfig {
        max_retries: 8,
        ..fast_config()
    };
    let src = HttpSource::new(&o.url("/img"), cfg).unwrap();
    let err = probe(&src).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Network, "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    // It cannot heal: no retry, and the message names the option that fixes it.
    assert!(err.message.contains("unknown issuer"), "{err}");
    assert!(err.message.contains("--cacert"), "{err}");
    assert!(!err.message.contains("retries"), "{err}");
}

#[test]
fn bad_extra_ca_and_bad_urls_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("not-a-cert.pem");
    std::fs::write(&p, "hello").unwrap();
    let cfg = HttpSourceConfig {
        extra_ca: Some(p),
        ..fast_config()
    };
    assert!(matches!(
        HttpSource::new("https://example.invalid/x", cfg),
        Err(HttpSourceError::ExtraCa { .. })
    ));
    for bad in ["ftp://x/y", "/relative", "not a url"] {
        assert!(matches!(
            HttpSource::new(bad, fast_config()),
            Err(HttpSourceError::InvalidUrl { .. })
        ));
    }
}

/// A minimal CONNECT proxy: reads the request head, connects to the target,
/// answers 200 and splices bytes. Records the CONNECT targets.
async fn connect_proxy() -> (
    String,
    Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log2 = log.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = c
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (url, log, task)
}

#[tokio::test]
async fn https_through_connect_proxy() {
    let (ca_pem, server) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let data = pattern(12, 100_000);
    let o = FaultOrigin::start_tls(data.clone(), "\"t1\"", server, |_, _| Action::Serve).await;
    let (proxy_url, log, task) = connect_proxy().await;
    let cfg = HttpSourceConfig {
        extra_ca: Some(ca_path),
        proxy: cache_http::ProxyConfig::Explicit {
            http: None,
            https: Some(proxy_url),
            no_proxy: None,
        },
        ..fast_config()
    };
    let src = HttpSource::new(&o.url("/img"), cfg).unwrap();
    let info = probe(&src).await.unwrap();
    let (_, got) = read(&src, 10..90_000, &info).await.unwrap();
    assert_eq!(got, data[10..90_000]);
    let log = log.lock().unwrap().clone();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|l| *l == format!("CONNECT {} HTTP/1.1", o.authority())),
        "{log:?}"
    );
    task.abort();
}
