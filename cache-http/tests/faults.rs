//! HttpSource against a fault-injecting origin: each test asserts either
//! the exact bytes or the specific SourceErrorKind.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{SourceErrorKind, SourceInfo};
use cache_http::{HttpSource, HttpSourceConfig, ProxyConfig};
use support::fault_origin::{Action, FaultOrigin};
use support::{fast_config, pattern, probe, read};

const ETAG: &str = "\"v1\"";
const LEN: usize = 1 << 20;

fn info() -> SourceInfo {
    support::source_info(LEN, ETAG)
}

/// Origin where request `n` (0-based, counting every request) gets
/// `fault`, all others are served correctly.
async fn origin_with_fault_at(n: usize, fault: Action) -> (FaultOrigin, Vec<u8>) {
    let data = pattern(42, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, move |_, i| {
        if i == n {
            fault.clone()
        } else {
            Action::Serve
        }
    })
    .await;
    (o, data)
}

#[tokio::test]
async fn probe_learns_length_validator_ranges() {
    let (o, _) = origin_with_fault_at(usize::MAX, Action::Serve).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    assert_eq!(probe(&src).await.unwrap(), info());
    assert_eq!(o.seen()[0].range.as_deref(), Some("bytes=0-0"));
}

#[tokio::test]
async fn probe_of_server_without_ranges() {
    let (o, _) = origin_with_fault_at(0, Action::Whole200).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let i = probe(&src).await.unwrap();
    assert_eq!(
        (i.len, i.ranges, i.validator.as_str()),
        (LEN as u64, false, ETAG)
    );
}

#[tokio::test]
async fn probe_falls_back_to_head() {
    let (o, _) = origin_with_fault_at(0, Action::Status(501, vec![])).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let i = probe(&src).await.unwrap();
    assert_eq!(i.len, LEN as u64);
    assert_eq!(o.seen()[1].method, http::Method::HEAD);
}

#[tokio::test]
async fn reset_mid_body_is_resumed() {
    let (o, data) = origin_with_fault_at(0, Action::Reset { after: 300_000 }).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (r, got) = read(&src, 1000..LEN as u64, &info()).await.unwrap();
    assert_eq!(r, 1000..LEN as u64);
    assert!(got == data[1000..], "bytes differ");
    let seen = o.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    // The resumption asks only for what is missing, with If-Range.
    let resumed = seen[1].range.as_deref().unwrap();
    assert_ne!(resumed, "bytes=1000-1048575", "{seen:?}");
    assert_eq!(seen[1].if_range.as_deref(), Some(ETAG));
}

#[tokio::test]
async fn stall_is_retried_after_stall_timeout() {
    let (o, data) = origin_with_fault_at(0, Action::Stall { after: 200_000 }).await;
    let cfg = HttpSourceConfig {
        stall_timeout: Duration::from_millis(1000),
        ..fast_config()
    };
    let src = HttpSource::new(&o.url("/obj"), cfg).unwrap();
    let (_, got) = read(&src, 0..LEN as u64, &info()).await.unwrap();
    assert!(got == data, "bytes differ");
    let seen = o.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=0-1048575"));
    assert_ne!(
        seen[1].range.as_deref(),
        Some("bytes=0-1048575"),
        "resumed from 0"
    );
}

#[tokio::test]
async fn stall_before_headers_is_retried() {
    // A stalled body at offset 0 of a 0-byte prefix: headers arrive, no byte.
    let (o, data) = origin_with_fault_at(0, Action::Stall { after: 0 }).await;
    let cfg = HttpSourceConfig {
        stall_timeout: Duration::from_millis(1000),
        ..fast_config()
    };
    let src = HttpSource::new(&o.url("/obj"), cfg).unwrap();
    let (_, got) = read(&src, 5..500, &info()).await.unwrap();
    assert_eq!(got, data[5..500]);
}

#[tokio::test]
async fn status_503_with_retry_after_is_honoured() {
    let retry_after = vec![("retry-after", "1".to_owned())];
    let (o, data) = origin_with_fault_at(0, Action::Status(503, retry_after)).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (_, got) = read(&src, 10..20, &info()).await.unwrap();
    assert_eq!(got, data[10..20]);
    assert_eq!(o.seen().len(), 2);
}

#[tokio::test]
async fn status_429_is_retried() {
    let (o, data) = origin_with_fault_at(0, Action::Status(429, vec![])).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (_, got) = read(&src, 10..20, &info()).await.unwrap();
    assert_eq!(got, data[10..20]);
}

#[tokio::test]
async fn persistent_5xx_is_a_network_error_naming_everything() {
    let data = pattern(1, LEN);
    let o = FaultOrigin::start(data, ETAG, |_, _| Action::Status(500, vec![])).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let err = read(&src, 10..20, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Network);
    assert!(err.message.contains(&o.url("/obj")), "{err}");
    assert!(err.message.contains("500"), "{err}");
    assert!(err.message.contains("bytes 10-19"), "{err}");
    assert_eq!(o.seen().len(), 1 + fast_config().max_retries as usize);
}

#[tokio::test]
async fn whole_200_at_offset_zero_is_the_whole_body() {
    let (o, data) = origin_with_fault_at(0, Action::Whole200).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (r, got) = read(&src, 0..100, &info()).await.unwrap();
    assert_eq!(r, 0..LEN as u64);
    assert!(got == data, "bytes differ");
}

#[tokio::test]
async fn whole_200_elsewhere_is_ranges_unsupported() {
    let (o, _) = origin_with_fault_at(0, Action::Whole200).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let err = read(&src, 100..200, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::RangesUnsupported, "{err}");
}

#[tokio::test]
async fn wrong_content_range_is_a_protocol_error() {
    let data = pattern(1, LEN);
    let o = FaultOrigin::start(data, ETAG, |_, _| Action::WrongContentRange).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let err = read(&src, 100..200, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Protocol, "{err}");
    assert!(err.message.contains("Content-Range"), "{err}");
}

#[tokio::test]
async fn wrong_content_range_once_is_retried() {
    let (o, data) = origin_with_fault_at(0, Action::WrongContentRange).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (_, got) = read(&src, 100..200, &info()).await.unwrap();
    assert_eq!(got, data[100..200]);
}

#[tokio::test]
async fn short_body_is_resumed() {
    let (o, data) = origin_with_fault_at(0, Action::Short { after: 100_000 }).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (_, got) = read(&src, 0..LEN as u64, &info()).await.unwrap();
    assert!(got == data, "bytes differ");
    assert_eq!(o.seen()[1].range.as_deref(), Some("bytes=100000-1048575"));
}

#[tokio::test]
async fn etag_change_between_requests_is_changed() {
    // A correct origin: If-Range does not match, so it sends 200 + new ETag.
    let data = pattern(1, LEN);
    let o = FaultOrigin::start(data, ETAG, |_, i| {
        if i == 0 {
            Action::Serve
        } else {
            Action::ServeEtag("\"v2\"".into())
        }
    })
    .await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let i = probe(&src).await.unwrap();
    let err = read(&src, 100..200, &i).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Changed, "{err}");
    assert!(
        err.message.contains("\\\"v1\\\"") && err.message.contains("\\\"v2\\\""),
        "{err}"
    );
    assert!(err.message.contains(&o.url("/obj")), "{err}");
}

#[tokio::test]
async fn etag_change_with_sloppy_if_range_is_changed() {
    let (o, _) = origin_with_fault_at(0, Action::ServeEtagIgnoringIfRange("\"v2\"".into())).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let err = read(&src, 100..200, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Changed, "{err}");
}

#[tokio::test]
async fn etag_change_mid_resume_is_changed() {
    let data = pattern(1, LEN);
    let o = FaultOrigin::start(data, ETAG, |_, i| match i {
        0 => Action::Reset { after: 100_000 },
        _ => Action::ServeEtagIgnoringIfRange("\"v2\"".into()),
    })
    .await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let err = read(&src, 0..LEN as u64, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Changed, "{err}");
}

#[tokio::test]
async fn redirect_chain_is_followed_and_final_url_reused() {
    let data = pattern(5, LEN);
    let port_holder: Arc<std::sync::OnceLock<String>> = Arc::default();
    let ph = port_holder.clone();
    let o = FaultOrigin::start(data.clone(), ETAG, move |s, _| match s.path.as_str() {
        "/a" => Action::Redirect(301, "b".into()),
        "/b" => Action::Redirect(302, "/dir/c".into()),
        "/dir/c" => Action::Redirect(307, format!("http://{}/final?sig=1", ph.get().unwrap())),
        "/final?sig=1" => Action::Serve,
        _ => Action::Status(404, vec![]),
    })
    .await;
    port_holder.set(o.authority()).unwrap();
    let src = HttpSource::new(&o.url("/a"), fast_config()).unwrap();
    let i = probe(&src).await.unwrap();
    assert_eq!(i, info());
    assert_eq!(src.current_url(), o.url("/final?sig=1"));
    let (_, got) = read(&src, 7..70_000, &i).await.unwrap();
    assert_eq!(got, data[7..70_000]);
    let seen = o.seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[4].path, "/final?sig=1");
    assert_eq!(cache_core::Source::identity(&src), o.url("/a"));
}

#[tokio::test]
async fn redirect_loop_is_an_error_naming_the_chain() {
    let o = FaultOrigin::start(pattern(1, 10), ETAG, |s, _| match s.path.as_str() {
        "/a" => Action::Redirect(302, "/b".into()),
        _ => Action::Redirect(302, "/a".into()),
    })
    .await;
    let src = HttpSource::new(&o.url("/a"), fast_config()).unwrap();
    let err = probe(&src).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Protocol, "{err}");
    assert!(err.message.contains("redirect loop"), "{err}");
    assert!(err.message.contains("/b ->"), "{err}");
}

#[tokio::test]
async fn too_many_redirects_is_an_error() {
    let o = FaultOrigin::start(pattern(1, 10), ETAG, |s, _| {
        let n: u32 = s.path.trim_start_matches('/').parse().unwrap_or(0);
        Action::Redirect(302, format!("/{}", n + 1))
    })
    .await;
    let src = HttpSource::new(&o.url("/0"), fast_config()).unwrap();
    let err = probe(&src).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Protocol, "{err}");
    assert!(err.message.contains("more than 10 redirects"), "{err}");
}

#[tokio::test]
async fn not_found_and_denied() {
    let o = FaultOrigin::start(pattern(1, 10), ETAG, |s, _| match s.path.as_str() {
        "/gone" => Action::Status(404, vec![]),
        _ => Action::Status(401, vec![]),
    })
    .await;
    let src = HttpSource::new(&o.url("/gone"), fast_config()).unwrap();
    let err = probe(&src).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::NotFound, "{err}");
    assert!(
        err.message.contains("404") && err.message.contains(&o.url("/gone")),
        "{err}"
    );
    let err = read(&src, 0..5, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::NotFound, "{err}");
    let src = HttpSource::new(&o.url("/secret"), fast_config()).unwrap();
    assert_eq!(probe(&src).await.unwrap_err().kind, SourceErrorKind::Denied);
}

#[tokio::test]
async fn expired_redirect_target_is_re_resolved() {
    let data = pattern(9, LEN);
    let expired = Arc::new(AtomicBool::new(false));
    let e = expired.clone();
    let o = FaultOrigin::start(data.clone(), ETAG, move |s, _| {
        let expired = e.load(Ordering::SeqCst);
        match s.path.as_str() {
            "/obj" if !expired => Action::Redirect(302, "/signed?t=1".into()),
            "/obj" => Action::Redirect(302, "/signed?t=2".into()),
            "/signed?t=1" if expired => Action::Status(403, vec![]),
            _ => Action::Serve,
        }
    })
    .await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let i = probe(&src).await.unwrap();
    let (_, got) = read(&src, 0..1000, &i).await.unwrap();
    assert_eq!(got, data[..1000]);
    expired.store(true, Ordering::SeqCst);
    let (_, got) = read(&src, 1000..2000, &i).await.unwrap();
    assert_eq!(got, data[1000..2000]);
    assert_eq!(src.current_url(), o.url("/signed?t=2"));
    let paths: Vec<_> = o.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/obj",
            "/signed?t=1",
            "/signed?t=1",
            "/signed?t=1",
            "/obj",
            "/signed?t=2"
        ]
    );
}

#[tokio::test]
async fn plain_http_proxy_gets_absolute_form() {
    let (proxy, data) = origin_with_fault_at(usize::MAX, Action::Serve).await;
    let cfg = HttpSourceConfig {
        proxy: ProxyConfig::Explicit {
            http: Some(proxy.url("")),
            https: None,
            no_proxy: None,
        },
        ..fast_config()
    };
    // `.invalid` never resolves: bytes can only come through the proxy.
    let src = HttpSource::new("http://blockcache.invalid/obj", cfg).unwrap();
    let (_, got) = read(&src, 3..33, &info()).await.unwrap();
    assert_eq!(got, data[3..33]);
    assert_eq!(proxy.seen()[0].target, "http://blockcache.invalid/obj");
}

#[tokio::test]
async fn empty_and_out_of_bounds_ranges() {
    let (o, _) = origin_with_fault_at(usize::MAX, Action::Serve).await;
    let src = HttpSource::new(&o.url("/obj"), fast_config()).unwrap();
    let (r, got) = read(&src, 5..5, &info()).await.unwrap();
    assert_eq!((r, got.len()), (5..5, 0));
    let err = read(&src, 5..LEN as u64 + 1, &info()).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Other);
    assert!(o.seen().is_empty());
}
