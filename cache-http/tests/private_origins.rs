//! Private and signed origins: credentials reach the origin and only the
//! origin (curl's redirect rule), a signed URL's query is not part of the
//! identity with `ignore_query`, and failures that cannot heal end at once.
//!
//! Two hyper origins stand in for "the origin" and "another host": nginx
//! cannot show us the headers a client sent. The CLI tests run the same
//! credentials against a real nginx.

mod support;

use std::sync::{Arc, OnceLock};

use cache_core::{Source, SourceErrorKind};
use cache_http::{BasicAuth, HttpSource, HttpSourceConfig, Netrc};
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderName, HeaderValue};
use support::fault_origin::{Action, FaultOrigin, Seen};
use support::{fast_config, pattern, probe, read};

const ETAG: &str = "\"p1\"";
const LEN: usize = 200_000;
const BEARER: &str = "Bearer tkn-5ecret-7e1l";

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap(),
    )
}

fn credentials_config() -> HttpSourceConfig {
    HttpSourceConfig {
        headers: vec![
            (AUTHORIZATION, HeaderValue::from_static(BEARER)),
            (COOKIE, HeaderValue::from_static("session=c00kie-5ecret")),
            header("x-trace", "t1"),
        ],
        ..fast_config()
    }
}

fn has(seen: &Seen, name: http::HeaderName) -> bool {
    seen.headers.contains_key(name)
}

/// An origin serving the object at `/data` that redirects `/obj` to
/// `target(other)`, where `other` is the authority of a second origin that
/// serves every path.
async fn redirecting_pair(
    target: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (FaultOrigin, FaultOrigin, Vec<u8>) {
    let data = pattern(31, LEN);
    let other = FaultOrigin::start(data.clone(), ETAG, |_, _| Action::Serve).await;
    let other_auth: Arc<OnceLock<String>> = Arc::default();
    let oa = other_auth.clone();
    let first = FaultOrigin::start(data.clone(), ETAG, move |s, _| match s.path.as_str() {
        "/obj" => Action::Redirect(302, target(oa.get().unwrap())),
        _ => Action::Serve,
    })
    .await;
    other_auth.set(other.authority()).unwrap();
    (first, other, data)
}

#[tokio::test]
async fn credentials_go_to_the_origin_and_not_across_a_redirect() {
    // Another host: same port space, but "localhost" is not "127.0.0.1".
    let (first, other, data) = redirecting_pair(|a| {
        let port = a.rsplit(':').next().unwrap().to_owned();
        format!("http://localhost:{port}/data")
    })
    .await;
    let src = HttpSource::new(&first.url("/obj"), credentials_config()).unwrap();
    let info = probe(&src).await.unwrap();
    let (_, got) = read(&src, 10..150_000, &info).await.unwrap();
    assert!(got == data[10..150_000]);

    let at_origin = first.seen();
    assert!(!at_origin.is_empty());
    for s in &at_origin {
        assert_eq!(s.headers[AUTHORIZATION], BEARER, "{s:?}");
        assert_eq!(s.headers[COOKIE], "session=c00kie-5ecret");
    }
    let elsewhere = other.seen();
    assert!(elsewhere.len() >= 2, "probe and range read: {elsewhere:?}");
    for s in &elsewhere {
        assert!(!has(s, AUTHORIZATION), "Authorization leaked: {s:?}");
        assert!(!has(s, COOKIE), "Cookie leaked: {s:?}");
        // Other user headers follow the redirect, as with curl.
        assert_eq!(s.headers["x-trace"], "t1");
    }
}

#[tokio::test]
async fn another_port_is_another_origin_but_same_origin_keeps_credentials() {
    let (first, other, _) = redirecting_pair(|a| format!("http://{a}/data")).await;
    let src = HttpSource::new(&first.url("/obj"), credentials_config()).unwrap();
    probe(&src).await.unwrap();
    assert!(other.seen().iter().all(|s| !has(s, AUTHORIZATION)));

    // A redirect within the origin keeps them.
    let data = pattern(32, LEN);
    let o = FaultOrigin::start(data, ETAG, |s, _| match s.path.as_str() {
        "/obj" => Action::Redirect(302, "/data?sig=2".into()),
        _ => Action::Serve,
    })
    .await;
    let src = HttpSource::new(&o.url("/obj"), credentials_config()).unwrap();
    probe(&src).await.unwrap();
    let seen = o.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|s| s.headers[AUTHORIZATION] == BEARER),
        "{seen:?}"
    );
}

#[tokio::test]
async fn basic_auth_and_netrc_become_authorization() {
    let data = pattern(33, LEN);
    let o = FaultOrigin::start(data, ETAG, |_, _| Action::Serve).await;
    let netrc = Netrc::parse(
        "machine elsewhere login x password y\nmachine 127.0.0.1 login nuser password npass\n",
    )
    .unwrap();
    let cfg = HttpSourceConfig {
        netrc: Some(Arc::new(netrc.clone())),
        ..fast_config()
    };
    probe(&HttpSource::new(&o.url("/a"), cfg).unwrap())
        .await
        .unwrap();
    // `--user` wins over netrc.
    let cfg = HttpSourceConfig {
        netrc: Some(Arc::new(netrc)),
        basic_auth: Some(BasicAuth::parse("alice:pw")),
        ..fast_config()
    };
    probe(&HttpSource::new(&o.url("/b"), cfg).unwrap())
        .await
        .unwrap();
    let seen = o.seen();
    assert_eq!(
        seen[0].headers[AUTHORIZATION], "Basic bnVzZXI6bnBhc3M=",
        "nuser:npass"
    );
    assert_eq!(
        seen[1].headers[AUTHORIZATION], "Basic YWxpY2U6cHc=",
        "alice:pw"
    );
    // Credentials in the URL are credentials, not identity.
    let with_userinfo = o.url("/c").replace("http://", "http://alice:pw@");
    let src = HttpSource::new(&with_userinfo, fast_config()).unwrap();
    assert_eq!(src.identity(), o.url("/c"));
    probe(&src).await.unwrap();
    assert_eq!(o.seen()[2].headers[AUTHORIZATION], "Basic YWxpY2U6cHc=");
}

#[tokio::test]
async fn ignore_query_keys_on_the_path_but_requests_the_whole_url() {
    let data = pattern(34, LEN);
    let o = FaultOrigin::start(data.clone(), ETAG, |s, _| {
        if s.path.starts_with("/img?X-Sig=") {
            Action::Serve
        } else {
            Action::Status(403, vec![])
        }
    })
    .await;
    let signed = o.url("/img?X-Sig=abc123&Expires=9");
    let cfg = HttpSourceConfig {
        ignore_query: true,
        ..fast_config()
    };
    let src = HttpSource::new(&signed, cfg.clone()).unwrap();
    assert_eq!(src.identity(), o.url("/img"));
    let info = probe(&src).await.unwrap();
    let (_, got) = read(&src, 0..1000, &info).await.unwrap();
    assert_eq!(got, data[..1000]);
    assert!(o
        .seen()
        .iter()
        .all(|s| s.path == "/img?X-Sig=abc123&Expires=9"));
    // Without the flag the query is part of the identity.
    let plain = HttpSource::new(&signed, fast_config()).unwrap();
    assert_eq!(plain.identity(), signed);
    // Messages do not show the signature when queries are not identity.
    let expired = HttpSource::new(&o.url("/other?Y-Sig=zzz999"), cfg).unwrap();
    let err = probe(&expired).await.unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Denied);
    assert!(!err.message.contains("zzz999"), "{err}");
    assert!(err.message.contains("/other?…"), "{err}");
    assert!(err.message.contains("hint:"), "{err}");
}

#[tokio::test]
async fn unhealable_failures_end_without_the_retry_budget() {
    // 401 with the production retry budget: one request, a hint.
    let o = FaultOrigin::start(pattern(35, 10), ETAG, |_, _| Action::Status(401, vec![])).await;
    let cfg = HttpSourceConfig {
        max_retries: 8,
        ..fast_config()
    };
    let err = probe(&HttpSource::new(&o.url("/x"), cfg.clone()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Denied);
    assert!(err.message.contains("HTTP 401"), "{err}");
    assert!(err.message.contains("--user"), "{err}");
    assert_eq!(o.seen().len(), 1, "not retried: {:?}", o.seen());

    // A refused connection: tried twice, then final.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let err = probe(&HttpSource::new(&url, cfg).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, SourceErrorKind::Network);
    assert!(err.message.contains("connection refused"), "{err}");
    assert!(err.message.contains("hint:"), "{err}");
    assert!(err.message.contains("(after 1 retries)"), "{err}");
}
