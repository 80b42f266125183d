//! How `fetch` talks to a private or signed origin: the `--header`,
//! `--user`, `--netrc`, `--netrc-file`, `--ignore-query`, `--cacert`,
//! `--retry` and `--connect-timeout` flags turned into an
//! [`HttpSourceConfig`].
//!
//! Errors name the flag and the file or header name, never a value: a
//! header value or a netrc line may be a secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cache_http::{BasicAuth, HttpSourceConfig, Netrc};
use http::{HeaderName, HeaderValue};

use crate::cli::OriginArgs;
use crate::Failure;

/// Headers blockcache sets itself: a user value would break range reads
/// or the connection.
const MANAGED_HEADERS: [&str; 7] = [
    "range",
    "if-range",
    "accept-encoding",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// `base` with the settings of `a`.
pub fn config(base: HttpSourceConfig, a: &OriginArgs) -> Result<HttpSourceConfig, Failure> {
    let headers = a
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    let netrc = match (&a.netrc_file, a.netrc) {
        (Some(path), _) => read_netrc(path, true)?,
        (None, true) => match default_netrc_path() {
            Some(path) => read_netrc(&path, false)?,
            None => None,
        },
        (None, false) => None,
    };
    Ok(HttpSourceConfig {
        headers,
        basic_auth: a.user.as_deref().map(BasicAuth::parse),
        netrc,
        ignore_query: a.ignore_query,
        extra_ca: a.cacert.clone().or(base.extra_ca.clone()),
        max_retries: a.retry.unwrap_or(base.max_retries),
        connect_timeout: a.connect_timeout.unwrap_or(base.connect_timeout),
        ..base
    })
}

/// `$HOME/.netrc`, curl's default for `--netrc`.
fn default_netrc_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".netrc"))
}

/// Reads and parses a netrc file. A missing file is an error only when it
/// was named (`--netrc-file`); `--netrc` without `~/.netrc` sends no
/// credentials, like curl.
fn read_netrc(path: &Path, named: bool) -> Result<Option<Arc<Netrc>>, Failure> {
    let flag = if named { "--netrc-file" } else { "--netrc" };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "--netrc: no netrc file; no credentials");
            return Ok(None);
        }
        Err(e) => return Err(Failure::usage(format!("{flag} {}: {e}", path.display()))),
    };
    let netrc = Netrc::parse(&text)
        .map_err(|e| Failure::usage(format!("{flag} {}: {e}", path.display())))?;
    Ok(Some(Arc::new(netrc)))
}

/// Parses `Name: value` (`--header`).
pub fn parse_header(spec: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((name, value)) = spec.split_once(':') else {
        return Err("--header: expected 'Name: value' (no ':' found)".to_owned());
    };
    let name = name.trim();
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("--header: {name:?} is not a valid header name"))?;
    if MANAGED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "--header: {name} is set by blockcache itself and cannot be given"
        ));
    }
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("--header: the value of {name} has characters not allowed in a header")
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Parses a DUR: a number with an optional unit `ms`, `s` (default), `m`,
/// `h`: `10`, `2.5s`, `500ms`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = crate::size::split_unit(s);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10, 2.5s, 500ms or 1m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?}: must be above zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_errors_never_show_the_value() {
        let (n, v) = parse_header("Authorization:  Bearer abc ").unwrap();
        assert_eq!(n, http::header::AUTHORIZATION);
        assert_eq!(v, "Bearer abc");
        assert!(v.is_sensitive());
        assert!(parse_header("no colon here").is_err());
        assert!(parse_header("Range: bytes=0-1")
            .unwrap_err()
            .contains("range"));
        let e = parse_header("X-Key: bad\u{1}s3cret").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("x-key"), "{e}");
        assert!(parse_header("Bad Name: v").is_err());
    }

    #[test]
    fn flags_reach_the_source_config() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "blockcache",
            "fetch",
            "https://h/x?sig=1",
            "--retry",
            "3",
            "--connect-timeout",
            "2s",
            "--ignore-query",
            "--cacert",
            "/ca.pem",
            "-H",
            "X-A: 1",
            "-H",
            "X-A: 2",
            "-u",
            "bob",
        ])
        .unwrap();
        let crate::cli::Command::Fetch(a) = cli.command else {
            panic!("not fetch");
        };
        let c = config(HttpSourceConfig::default(), &a.origin).unwrap();
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert!(c.ignore_query);
        assert_eq!(c.extra_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.basic_auth, Some(BasicAuth::parse("bob:")));
        // Defaults stay as today.
        let d = config(
            HttpSourceConfig::default(),
            &crate::cli::OriginArgs::default(),
        )
        .unwrap();
        assert_eq!(d.max_retries, HttpSourceConfig::default().max_retries);
        assert_eq!(
            d.connect_timeout,
            HttpSourceConfig::default().connect_timeout
        );
        assert!(d.netrc.is_none() && d.basic_auth.is_none() && !d.ignore_query);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn netrc_file_errors_name_the_flag_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = read_netrc(&missing, true).unwrap_err();
        assert!(e.message.contains("--netrc-file"), "{}", e.message);
        assert!(matches!(read_netrc(&missing, false), Ok(None)));
        let bad = dir.path().join("netrc");
        std::fs::write(&bad, "machine h\nlogin u pass hunter2\n").unwrap();
        let e = read_netrc(&bad, true).unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }
}
