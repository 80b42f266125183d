//! Which failures cannot heal by retrying, and the one-line hint each
//! ends with.
//!
//! Retrying an unknown issuer, a 401 or a host that does not exist only
//! makes the user wait (minutes, with the default backoff) for the same
//! answer. These end the request at once: certificate errors (and a server
//! that does not speak TLS at all), DNS "no such host", 4xx other than
//! 408/429 (see `request::classify_status`), and an unreachable origin once it was unreachable twice in a row (a quick
//! second try covers an origin that is just restarting): a refused
//! connection, or a name the resolver could not resolve (no resolver, no
//! network) before the origin ever answered. Once the origin has answered,
//! a resolver failure is a network blip like a reset, and everything else
//! keeps the bounded, jittered retries (`--retry`, `--connect-timeout`).

use std::error::Error as StdError;
use std::io;

use cache_core::SourceErrorKind;
use http::{StatusCode, Uri};

use super::request::{error_chain, Failure};

/// Unreachable attempts in a row after which a request gives up.
pub(crate) const UNREACHABLE_TRIES: u32 = 2;

/// Messages the system resolver gives for a name that does not exist (as
/// opposed to a resolver that could not be reached, which may heal).
const NO_SUCH_HOST: [&str; 4] = [
    "Name or service not known",           // glibc EAI_NONAME
    "No address associated with hostname", // glibc EAI_NODATA
    "nodename nor servname provided",      // BSD / macOS
    "No such host is known",               // Windows WSAHOST_NOT_FOUND
];

/// Classifies an error of the HTTP client (connect, TLS, I/O) for a
/// request to `uri`; `answered`: the origin has answered a request of this
/// source before.
pub(crate) fn classify_send_error(
    e: &(dyn StdError + 'static),
    uri: &Uri,
    answered: bool,
) -> Failure {
    let chain = error_chain(e);
    let host = uri.host().unwrap_or_default();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    if let Some(tls) = find_rustls_error(e) {
        return match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                Failure::fatal(
                    SourceErrorKind::Network,
                    format!(
                        "TLS: the certificate of {host} is signed by an unknown issuer; \
                         hint: trust its CA with --cacert FILE (PEM)"
                    ),
                )
            }
            rustls::Error::InvalidCertificate(_) => Failure::fatal(
                SourceErrorKind::Network,
                format!(
                    "TLS: {tls} (from {host}); \
                     hint: check the URL's host name and the server's certificate"
                ),
            ),
            // The first record is not TLS at all ("HTTP/1.1 400 ..."): a
            // plain-HTTP port behind an https:// URL. It never heals.
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                Failure::fatal(
                    SourceErrorKind::Network,
                    format!(
                        "TLS: {host}:{port} does not answer in TLS ({tls}); \
                         hint: check http:// versus https:// and the port"
                    ),
                )
            }
            // Other TLS failures (alerts, resets mid-handshake) may heal.
            _ => Failure::transient(SourceErrorKind::Network, chain),
        };
    }
    if chain.contains("dns error") {
        if NO_SUCH_HOST.iter().any(|m| chain.contains(m)) {
            return Failure::fatal(
                SourceErrorKind::Network,
                format!("no such host {host:?}; hint: check the host name in the URL"),
            );
        }
        if !answered {
            // The resolver's own words ("Temporary failure in name
            // resolution") are the last part of the chain.
            let why = chain.rsplit(": ").next().unwrap_or(&chain);
            return Failure::Unreachable {
                cause: format!(
                    "cannot resolve host {host:?} ({why}); \
                     hint: no DNS answer: check the network and the resolver (/etc/resolv.conf)"
                ),
            };
        }
    }
    if has_io_kind(e, io::ErrorKind::ConnectionRefused) {
        return Failure::Unreachable {
            cause: format!(
                "connection refused by {host}:{port}; \
                 hint: nothing listens there: check the URL's port, or start the origin"
            ),
        };
    }
    Failure::transient(SourceErrorKind::Network, chain)
}

/// The hint that follows `HTTP <status>` in an error, when there is one.
pub(crate) fn status_hint(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        401 => "the origin wants credentials: pass --user, --header or --netrc",
        403 => "access denied: check the credentials; a signed URL may have expired",
        404 | 410 => "check the URL",
        407 => "the proxy wants credentials: put them in HTTP(S)_PROXY as http://user:pass@host",
        _ => return None,
    })
}

/// The first `rustls::Error` in the chain of `e`, looking inside
/// `io::Error`s (whose `source` skips the error they wrap).
fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // hyper-rustls wraps tokio-rustls's `io::Error` in another one.
        let mut wrapped = err.downcast_ref::<io::Error>();
        while let Some(inner) = wrapped.and_then(|io| io.get_ref()) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            wrapped = inner.downcast_ref::<io::Error>();
        }
        cur = err.source();
    }
    None
}

/// Whether an `io::Error` of `kind` is in the chain of `e`.
fn has_io_kind(e: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error wrapping another, like hyper-util's `ConnectError`.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    fn uri() -> Uri {
        "https://files.example:8443/x".parse().unwrap()
    }

    /// A TLS error as hyper-rustls reports a failed connect.
    fn tls_error(tls: rustls::Error) -> Wrap {
        Wrap(
            "client error (Connect)",
            Box::new(io::Error::new(io::ErrorKind::InvalidData, tls)),
        )
    }

    /// The cause of a final failure (panics on any other).
    fn final_cause(f: Failure) -> String {
        match f {
            Failure::Final { cause, .. } => cause,
            f => panic!("not final: {f:?}"),
        }
    }

    #[test]
    fn unknown_issuer_is_final_and_names_cacert() {
        let e = tls_error(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let cause = final_cause(classify_send_error(&e, &uri(), false));
        assert!(cause.contains("--cacert"), "{cause}");
        assert!(cause.contains("files.example"), "{cause}");
        let e = tls_error(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let cause = final_cause(classify_send_error(&e, &uri(), false));
        assert!(cause.contains("files.example:8443"), "{cause}");
        assert!(
            cause.contains("hint: check http:// versus https://"),
            "{cause}"
        );
        let e = tls_error(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        final_cause(classify_send_error(&e, &uri(), false));
    }

    #[test]
    fn dns_no_such_host_is_final_and_a_resolver_outage_is_tried_twice_until_answered() {
        let nx = Wrap(
            "dns error",
            Box::new(io::Error::other(
                "failed to lookup address information: Name or service not known",
            )),
        );
        let e = Wrap("client error (Connect)", Box::new(nx));
        match classify_send_error(&e, &uri(), false) {
            Failure::Final { cause, .. } => assert!(cause.contains("no such host"), "{cause}"),
            f => panic!("{f:?}"),
        }
        let again = Wrap(
            "dns error",
            Box::new(io::Error::other(
                "failed to lookup address information: Temporary failure in name resolution",
            )),
        );
        let e = Wrap("client error (Connect)", Box::new(again));
        match classify_send_error(&e, &uri(), false) {
            Failure::Unreachable { cause } => {
                assert!(
                    cause.contains("\"files.example\" (Temporary failure in name resolution)"),
                    "{cause}"
                );
                assert!(cause.contains("; hint: "), "{cause}");
            }
            f => panic!("{f:?}"),
        }
        // Once the origin has answered, an outage gets the retry budget.
        assert!(matches!(
            classify_send_error(&e, &uri(), true),
            Failure::Transient { .. }
        ));
        // A name that does not exist stays final after an answer.
        let e = Wrap(
            "client error (Connect)",
            Box::new(Wrap(
                "dns error",
                Box::new(io::Error::other(
                    "failed to lookup address information: Name or service not known",
                )),
            )),
        );
        assert!(matches!(
            classify_send_error(&e, &uri(), true),
            Failure::Final { .. }
        ));
    }

    #[test]
    fn refused_and_reset_are_told_apart() {
        let refused = Wrap(
            "tcp connect error",
            Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        );
        let e = Wrap("client error (Connect)", Box::new(refused));
        match classify_send_error(&e, &uri(), false) {
            Failure::Unreachable { cause } => {
                assert!(cause.contains("files.example:8443"), "{cause}")
            }
            f => panic!("{f:?}"),
        }
        let reset = Wrap(
            "x",
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
        );
        assert!(matches!(
            classify_send_error(&reset, &uri(), false),
            Failure::Transient { .. }
        ));
    }

    #[test]
    fn hints_for_statuses_that_do_not_heal() {
        assert!(status_hint(StatusCode::UNAUTHORIZED)
            .unwrap()
            .contains("--user"));
        assert!(status_hint(StatusCode::NOT_FOUND).is_some());
        assert!(status_hint(StatusCode::REQUEST_TIMEOUT).is_none());
    }
}
