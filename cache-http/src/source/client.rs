//! The pooled hyper client: TCP (+ HTTP proxy / CONNECT tunnel), rustls with
//! webpki + system roots + an optional extra CA, ALPN h2/http1.1.
//!
//! Layering: `legacy::Client` (pool, keyed by scheme + authority)
//! → `HttpsConnector` (TLS when the destination is https)
//! → [`ProxyConnector`] (direct TCP, TCP to an HTTP proxy, or a CONNECT tunnel)
//! → `HttpConnector` (DNS + TCP with a connect time-out).

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use http_body_util::Empty;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;

use super::{HttpSourceConfig, HttpSourceError, ProxyConfig};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The client type every request goes through.
pub(crate) type HttpClient = Client<HttpsConnector<ProxyConnector>, Empty<bytes::Bytes>>;

/// Builds the client for `config`.
pub(crate) fn build(
    config: &HttpSourceConfig,
) -> Result<(HttpClient, Arc<Matcher>), HttpSourceError> {
    let tls = tls_config(config.extra_ca.as_deref())?;
    let matcher = Arc::new(match &config.proxy {
        ProxyConfig::Env => Matcher::from_env(),
        ProxyConfig::None => Matcher::builder().build(),
        ProxyConfig::Explicit {
            http,
            https,
            no_proxy,
        } => {
            let mut b = Matcher::builder();
            if let Some(h) = http {
                b = b.http(h.clone());
            }
            if let Some(h) = https {
                b = b.https(h.clone());
            }
            if let Some(n) = no_proxy {
                b = b.no(n.clone());
            }
            b.build()
        }
    });
    let mut http = HttpConnector::new();
    // HttpsConnector hands https URIs down to us; the TCP layer must accept them.
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    let proxy = ProxyConnector {
        http,
        matcher: matcher.clone(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(proxy);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        // A fill runs up to 64 requests, each overlapped with its successor
        // near its end (two connections for a moment), plus the demand
        // lane: keep all of them, a closed one costs a connect RTT.
        .pool_max_idle_per_host(2 * 64 + 1)
        // Our own retry loop decides about retries; hyper's silent retry of
        // requests on reused connections is still useful (stale pool entry).
        .retry_canceled_requests(true)
        .build(https);
    Ok((client, matcher))
}

fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, HttpSourceError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // System roots are best effort: a missing or partly unreadable system
    // store must not make the source unusable when webpki roots suffice.
    let native = rustls_native_certs::load_native_certs();
    let _ = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| HttpSourceError::ExtraCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(HttpSourceError::ExtraCa {
                path: path.to_owned(),
                reason: "no certificate in file".into(),
            });
        }
        for c in certs {
            roots.add(c).map_err(|e| HttpSourceError::ExtraCa {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpSourceError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// Connects directly, through an HTTP proxy (plain http: absolute-form
/// requests on a TCP connection to the proxy) or through a CONNECT tunnel
/// (https), as HTTP_PROXY / HTTPS_PROXY / NO_PROXY say.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConnector {
    http: HttpConnector,
    matcher: Arc<Matcher>,
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // HttpConnector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let intercept = self.matcher.intercept(&dst);
        Box::pin(async move {
            match intercept {
                None => Ok(ProxyStream {
                    io: http.call(dst).await?,
                    via_http_proxy: false,
                }),
                Some(i) if dst.scheme() == Some(&Scheme::HTTPS) => {
                    let mut tunnel = Tunnel::new(i.uri().clone(), http);
                    if let Some(auth) = i.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    Ok(ProxyStream {
                        io: tunnel.call(dst).await?,
                        via_http_proxy: false,
                    })
                }
                Some(i) => Ok(ProxyStream {
                    io: http.call(i.uri().clone()).await?,
                    via_http_proxy: true,
                }),
            }
        })
    }
}

/// A TCP stream that remembers whether it leads to a plain-HTTP proxy, so
/// the client sends absolute-form request targets on it.
#[derive(Debug)]
pub(crate) struct ProxyStream {
    io: TokioIo<TcpStream>,
    via_http_proxy: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.via_http_proxy)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
