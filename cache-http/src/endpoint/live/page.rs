//! `GET /`: one self-contained page (inline style and script, no external
//! anything) under a strict Content-Security-Policy that allows exactly
//! that style and script, by their SHA-256 hashes, and connections to
//! this origin only (`/events`).

use std::sync::OnceLock;

use base64::Engine;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::endpoint::response::Body;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

const BODY: &str = r#"<header><h1>blockcache</h1><span id="conn">connecting…</span><span id="store"></span></header>
<main>
<table><thead><tr><th>object</th><th class="num">size</th><th>state</th><th class="num">done</th><th class="num">rate</th><th class="num">ETA</th><th class="num">readers</th><th class="num">from origin</th><th>source</th></tr></thead>
<tbody id="rows"></tbody></table>
<div id="none" class="empty">No objects in the store yet.</div>
<section id="detail" hidden><h2 id="title"></h2>
<div id="legend"><span><i class="k-complete"></i>complete</span><span><i class="k-inflight"></i>in flight</span><span><i class="k-demanded"></i>demanded by a reader</span><span><i class="k-missing"></i>missing</span><span><i class="k-damaged"></i>damaged</span></div>
<canvas id="map" data-key="" data-complete="0"></canvas></section>
<h2>Mirrors</h2><ul id="mirrors"></ul><div id="mirrors-none" class="empty">No mirrors configured.</div>
</main>"#;

fn sha256_b64(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

struct Page {
    html: String,
    csp: String,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>blockcache</title><style>{STYLE}</style></head>\n<body>{BODY}\n\
             <script>{SCRIPT}</script></body></html>\n"
        ),
        csp: format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
             connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            sha256_b64(STYLE),
            sha256_b64(SCRIPT)
        ),
    })
}

/// Answers `GET /` (and HEAD).
pub(crate) fn page_response(head: bool) -> Response<Body> {
    let p = page();
    let body = if head {
        Full::new(bytes::Bytes::new())
    } else {
        Full::new(bytes::Bytes::from_static(p.html.as_bytes()))
    };
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&p.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn csp_hashes_match_the_inline_parts() {
        let p = super::page();
        for part in [super::STYLE, super::SCRIPT] {
            assert!(p.html.contains(part));
            assert!(p.csp.contains(&super::sha256_b64(part)));
        }
        assert!(
            !p.html.contains("http://") && !p.html.contains("https://"),
            "no external anything"
        );
        assert!(p.csp.starts_with("default-src 'none'"));
    }
}
