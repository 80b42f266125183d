//! Private and signed origins with the real binary and a real nginx:
//! Basic auth (`auth_basic`), a required bearer header, netrc, presigned
//! URLs whose query changes between runs, TLS with a private CA, and the
//! failures that end at once. Secrets must appear in no file of the store
//! and in no output, even at `-vvv`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::nginx::{Nginx, NginxOptions};
use support::*;

const PASSWORD: &str = "pw-9f3kQz-basic";
const TOKEN: &str = "tok-Xq81Lm-bearer";

/// nginx with `/basic/` behind `auth_basic` (user alice) and `/bearer/`
/// behind a required `Authorization: Bearer TOKEN`; each holds `disk.img`.
fn private_origin(dir: &Path) -> (Nginx, String, String) {
    // `{PLAIN}` needs no hashing tool; the file lives outside the store.
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{{PLAIN}}{PASSWORD}\n")).expect("htpasswd");
    let extra = format!(
        r#"
        location /basic/ {{
            auth_basic "blockcache test";
            auth_basic_user_file {};
        }}
        location /bearer/ {{
            if ($http_authorization != "Bearer {TOKEN}") {{
                return 401;
            }}
        }}"#,
        htpasswd.display()
    );
    let ng = Nginx::start_configured(NginxOptions::default(), &extra);
    let mut hashes = Vec::new();
    for (sub, seed) in [("basic", 21), ("bearer", 22)] {
        std::fs::create_dir(ng.root().join(sub)).expect("dir");
        let data = pattern(seed, 3 * MIB + 17);
        ng.put(&format!("{sub}/disk.img"), &data);
        hashes.push(blake3::hash(&data).to_hex().to_string());
    }
    let bearer = hashes.pop().expect("two");
    let basic = hashes.pop().expect("two");
    (ng, basic, bearer)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_secret_in(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} in output:\n{text}");
    }
}

/// A fetch that must fail at once: exit 3, one line naming `what`, a hint,
/// and at most one (quick) retry, never the retry budget.
fn assert_fails_fast(o: &Output, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(what), "names {what:?}: {err}");
    assert!(err.contains("hint:"), "has a hint: {err}");
    assert!(
        !err.contains("retries)") || err.contains("(after 1 retries)"),
        "at most one retry: {err}"
    );
}

#[test]
fn private_origins_work_with_user_header_and_netrc_and_keep_secrets() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ng, basic_hash, bearer_hash) = private_origin(tmp.path());
    let basic = ng.url("basic/disk.img");
    let bearer = ng.url("bearer/disk.img");
    let basic_b64 = "YWxpY2U6cHctOWYza1F6LWJhc2lj"; // base64("alice:" + PASSWORD)
    let secrets = [PASSWORD, TOKEN, basic_b64];
    let mut all_output = String::new();

    // --user, at -vvv (trace logs).
    let store = tmp.path().join("store-user");
    let mut c = bc(&store);
    c.args(["-vvv", "fetch", &basic, "--user"])
        .arg(format!("alice:{PASSWORD}"));
    let o = run(c);
    all_output += &stderr(&o);
    assert_eq!(last_line(ok(&o).as_bytes()), basic_hash);
    assert_no_secret_in_files(&store, &secrets);

    // --header with a bearer token.
    let store = tmp.path().join("store-header");
    let mut c = bc(&store);
    c.args(["-vvv", "fetch", &bearer, "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"));
    let o = run(c);
    all_output += &stderr(&o);
    assert_eq!(last_line(ok(&o).as_bytes()), bearer_hash);
    assert_no_secret_in_files(&store, &secrets);

    // --netrc-file: the machine entry for 127.0.0.1.
    let netrc = tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        format!(
            "machine example.com login bob password nope\n\
             machine 127.0.0.1\n  login alice\n  password {PASSWORD}\n"
        ),
    )
    .expect("netrc");
    let store = tmp.path().join("store-netrc");
    let mut c = bc(&store);
    c.args(["-vvv", "fetch", &basic, "--netrc-file"])
        .arg(&netrc);
    let o = run(c);
    all_output += &stderr(&o);
    assert_eq!(last_line(ok(&o).as_bytes()), basic_hash);
    assert_no_secret_in_files(&store, &secrets);

    // --netrc: ~/.netrc, whose `default` entry applies to any host.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).expect("home");
    std::fs::write(
        home.join(".netrc"),
        format!("machine example.com login bob password nope\ndefault login alice password {PASSWORD}\n"),
    )
    .expect(".netrc");
    let store = tmp.path().join("store-dotnetrc");
    let mut c = bc(&store);
    c.env("HOME", &home)
        .args(["-vvv", "fetch", &basic, "--netrc"]);
    let o = run(c);
    all_output += &stderr(&o);
    assert_eq!(last_line(ok(&o).as_bytes()), basic_hash);

    // Without credentials, or with wrong ones: HTTP 401 at once (one
    // request each: nothing retried), exit 3, a hint; the wrong secret is
    // not echoed either.
    let store = tmp.path().join("store-none");
    for (url, extra) in [
        (&basic, vec![]),
        (&bearer, vec![]),
        (
            &bearer,
            vec!["-H".to_owned(), format!("Authorization: Bearer {PASSWORD}")],
        ),
    ] {
        let before = ng.access_log().len();
        let mut c = bc(&store);
        c.args(["-vvv", "fetch", url]).args(&extra);
        let o = run(c);
        let err = stderr(&o);
        all_output += &err;
        assert_eq!(o.status.code(), Some(3), "{err}");
        let last = err.trim().lines().last().unwrap_or_default().to_owned();
        assert!(last.contains("HTTP 401"), "{last}");
        assert!(last.contains("--user"), "hint names the flags: {last}");
        let log = ng.wait_log_lines(before + 1);
        assert_eq!(log.len() - before, 1, "not retried: {:#?}", &log[before..]);
    }
    assert_no_secret_in(&all_output, &secrets);
    // Sanity: trace logs really were on (the check above is not vacuous).
    assert!(all_output.contains("TRACE"), "trace logging was on");
}

#[test]
fn presigned_url_resumes_under_a_new_signature_with_ignore_query() {
    let len = 16 * MIB + 4321;
    let (ng, _data, want) = origin(Some("2m"), len, 23);
    let (_t, store) = store_dir();
    let first = format!("{}?X-Sig=sig-first-8d7a&Expires=1", ng.url("disk.img"));
    let second = format!("{}?X-Sig=sig-second-2c4b&Expires=2", ng.url("disk.img"));

    let mut a = bc(&store);
    a.args(["-q", "fetch", "--ignore-query", &first]);
    let mut a = Bg(spawn(a));
    wait_bytes_done(&store, (len / 4) as u64);
    a.kill(); // SIGKILL mid-way
    let have = bytes_done(&store);
    assert!(have > 0 && have < len as u64, "partial: {have}");
    let before = settled_log(&ng).len();

    let mut b = bc(&store);
    b.args(["-vv", "fetch", "--ignore-query", &second]);
    let o = run(b);
    assert_eq!(last_line(ok(&o).as_bytes()), want);
    let log = settled_log(&ng);
    // Requests of the killed run may be logged late (nginx notices the
    // closed connection at its next throttled write); they are cut short.
    // The second run's requests are the complete ones.
    let resumed = complete_fill_bytes(&log[before..]);
    assert_eq!(
        resumed,
        len as u64 - have,
        "the new signature resumed: only the missing bytes: {:#?}",
        &log[before..]
    );
    // One object, known by the URL without its query.
    let objects = ls_json(&store);
    assert_eq!(objects.len(), 1, "{objects:#?}");
    assert_eq!(objects[0]["source"], ng.url("disk.img"));
    // The signatures are secrets too: not stored, not logged.
    let sigs = ["sig-first-8d7a", "sig-second-2c4b"];
    assert_no_secret_in_files(&store, &sigs);
    assert_no_secret_in(&stderr(&o), &sigs);
}

#[test]
fn unhealable_failures_exit_3_at_once_with_a_hint() {
    let (ng, _data, _want) = origin(None, 1000, 24);
    let (_t, store) = store_dir();
    // 404: one request, not retried.
    let mut c = bc(&store);
    c.args(["fetch", &ng.url("missing.img")]);
    let o = run(c);
    assert_fails_fast(&o, "HTTP 404");
    assert_eq!(ng.wait_log_lines(1).len(), 1, "{:#?}", ng.access_log());

    // Connection refused: tried twice, then the end (the default retry
    // budget of 8 with backoff is not spent).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut c = bc(&store);
    c.args(["fetch", &format!("http://127.0.0.1:{port}/x.img")]);
    let o = run(c);
    assert_fails_fast(&o, "connection refused");
    assert!(stderr(&o).contains("(after 1 retries)"), "{}", stderr(&o));

    // Flags are checked before any request; errors never echo a value.
    for (args, names) in [
        (vec!["--cacert", "/nonexistent/ca.pem"], "--cacert"),
        (vec!["-H", "X-Key s3cr3t-no-colon"], "--header"),
        (vec!["-H", "Range: bytes=0-1"], "range"),
        (vec!["--netrc-file", "/nonexistent/netrc"], "--netrc-file"),
        (vec!["--connect-timeout", "soon"], "connect-timeout"),
    ] {
        let mut c = bc(&store);
        c.args(["fetch", &ng.url("disk.img")]).args(&args);
        let o = run(c);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

#[test]
fn retry_bounds_the_retries_of_what_may_heal() {
    let ng = Nginx::start_configured(NginxOptions::default(), "location /busy/ { return 503; }");
    let (_t, store) = store_dir();
    for (retry, requests) in [("0", 1), ("2", 3)] {
        let before = ng.access_log().len();
        let mut c = bc(&store);
        c.args(["fetch", &ng.url("busy/disk.img"), "--retry", retry]);
        let o = run(c);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("HTTP 503"), "{err}");
        let log = ng.wait_log_lines(before + requests);
        assert_eq!(log.len() - before, requests, "--retry {retry}: {log:#?}");
    }
}

/// A test CA and a certificate for 127.0.0.1 signed by it, made with
/// openssl: (CA cert, leaf cert, leaf key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let ext = p("leaf.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("ext file");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<std::ffi::OsString>; 3] = [
        args(
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=blockcache test CA",
            ],
            &ec,
        )
        .into_iter()
        .chain(args(
            &["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"],
            &[],
        ))
        .chain([p("ca.key").into(), "-out".into(), p("ca.pem").into()])
        .collect(),
        args(&["req", "-subj", "/CN=127.0.0.1"], &ec)
            .into_iter()
            .chain([
                "-keyout".into(),
                p("leaf.key").into(),
                "-out".into(),
                p("leaf.csr").into(),
            ])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .iter()
            .map(Into::into)
            .chain([p("leaf.csr").into(), "-CA".into(), p("ca.pem").into()])
            .chain([
                "-CAkey".into(),
                p("ca.key").into(),
                "-extfile".into(),
                ext.into(),
            ])
            .chain(["-out".into(), p("leaf.pem").into()])
            .collect(),
    ];
    for step in steps {
        let o = Command::new("openssl")
            .args(&step)
            .output()
            .expect("openssl (apt-get install -y openssl)");
        assert!(
            o.status.success(),
            "openssl {step:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

fn args(a: &[&str], b: &[&str]) -> Vec<std::ffi::OsString> {
    a.iter().chain(b).map(Into::into).collect()
}

#[test]
fn https_with_a_private_ca_needs_cacert() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = test_pki(tmp.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let extra = format!(
        "}}\n    server {{\n        listen 127.0.0.1:{tls_port} ssl;\n        \
         ssl_certificate {};\n        ssl_certificate_key {};\n        root @ROOT@;",
        cert.display(),
        key.display()
    );
    let ng = Nginx::start_configured(NginxOptions::default(), &extra);
    let data = pattern(25, MIB + 3);
    ng.put("disk.img", &data);
    let url = format!("https://127.0.0.1:{tls_port}/disk.img");
    let (_t, store) = store_dir();

    let mut c = bc(&store);
    c.args(["fetch", &url]);
    let o = run(c);
    assert_fails_fast(&o, "--cacert");
    assert!(stderr(&o).contains("unknown issuer"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("retries)"),
        "not retried: {}",
        stderr(&o)
    );

    let mut c = bc(&store);
    c.args(["-q", "fetch", &url, "--cacert"]).arg(&ca);
    let o = run(c);
    assert_eq!(
        last_line(ok(&o).as_bytes()),
        blake3::hash(&data).to_hex().to_string()
    );
}
