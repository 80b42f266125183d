//! `serve`'s configuration: the TOML file (`--config`, else
//! `$XDG_CONFIG_HOME/blockcache/config.toml` when it exists) merged with
//! the flags, which win. See `contrib/blockcache.toml` for every key.
//!
//! A bad file is one line naming the file, the line and the key (exit 2).
//! Secrets (header values) never appear in `--check-config` output or logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cache_core::FillPolicy;
use serde::Deserialize;
use toml::Spanned;

use crate::cli::ServeArgs;
use crate::size::parse_size;
use crate::Failure;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<OneOrMany>,
    store: Option<PathBuf>,
    max_size: Option<Size>,
    access_log: Option<String>,
    access_log_format: Option<LogFormat>,
    drain_timeout: Option<u64>,
    max_connections: Option<u32>,
    threads: Option<u16>,
    revalidate: Option<u64>,
    parents: Option<Vec<Spanned<String>>>,
    shared: Option<Spanned<String>>,
    shared_lease: Option<Spanned<Seconds>>,
    shared_timeout: Option<Spanned<Seconds>>,
    #[serde(default)]
    mirrors: BTreeMap<String, MirrorFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "listen: an address or a list of addresses")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "max_size: a number of bytes or a SIZE string like \"50G\""
)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of seconds or a duration string like \"90s\""
)]
enum Seconds {
    Secs(u64),
    Text(String),
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Combined,
    Json,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Fill {
    #[default]
    Eager,
    Lazy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorFile {
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<HeaderFile>>,
    cacert: Option<PathBuf>,
    #[serde(default)]
    fill: Fill,
    revalidate: Option<u64>,
    #[serde(default)]
    pass_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a header value: a string or { env = \"VAR\" }")]
enum HeaderFile {
    Value(String),
    Env(EnvRef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvRef {
    env: String,
}

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Stderr,
    Off,
    File(PathBuf),
}

/// Where a header value comes from.
#[derive(Clone, Debug)]
pub enum HeaderValueFrom {
    Literal(String),
    Env(String),
}

/// One mirror, resolved.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub name: String,
    pub url: url::Url,
    /// (name, value) with the value resolved (env read).
    pub headers: Vec<(http::HeaderName, http::HeaderValue, HeaderValueFrom)>,
    pub cacert: Option<PathBuf>,
    pub fill: FillPolicy,
    pub revalidate: Option<Duration>,
    pub pass_query: bool,
}

/// Connections `serve` serves at once unless told otherwise: a thousand
/// readers of one image (a fleet booting) are served together, not 256
/// of them while the rest wait (BENCHMARKS.md, "Many readers").
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The effective configuration of `serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The file it came from, if any (reloaded on SIGHUP).
    pub file: Option<PathBuf>,
    pub listen: Vec<String>,
    pub store: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub access_log: AccessLog,
    pub json_log: bool,
    pub drain_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connection threads (0: on the main runtime).
    pub threads: usize,
    pub revalidate: Duration,
    /// Parent caches asked before the origin (`--parent` wins over the
    /// file's `parents`).
    pub parents: Vec<String>,
    /// The shared S3 tier (`--shared`/`BLOCKCACHE_SHARED` win over the
    /// file's `shared`), checked to be `s3://BUCKET[/PREFIX]`.
    pub shared: Option<String>,
    /// Its lease duration (`--shared-lease` wins over `shared_lease`).
    pub shared_lease: Option<Duration>,
    /// How long it may leave a request unanswered (`--shared-timeout`
    /// wins over `shared_timeout`).
    pub shared_timeout: Option<Duration>,
    pub mirrors: Vec<Mirror>,
}

/// The dotted key an error span points at: the key of a `key = value`
/// line (the span may cover the value), under its `[table]`; else the
/// spanned text itself when it is short.
fn key_at(text: &str, start: usize, end: usize) -> Option<String> {
    let start = start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    if let Some((k, _)) = line.split_once('=') {
        let k = k.trim().trim_matches('"');
        if !k.is_empty() && !k.starts_with('[') {
            return Some(match table {
                Some(t) => format!("{t}.{k}"),
                None => k.to_owned(),
            });
        }
    }
    let spanned = text[start..end.min(text.len())].trim();
    (!spanned.is_empty() && spanned.len() < 80 && !spanned.contains('\n'))
        .then(|| spanned.to_owned())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The config file to read: `--config`, else the XDG default when it
/// exists.
fn config_path(a: &ServeArgs) -> Option<PathBuf> {
    if let Some(p) = &a.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|x| !x.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    let p = base.join("blockcache").join("config.toml");
    p.exists().then_some(p)
}

/// Reads and checks the file and merges the flags into it.
pub fn load(a: &ServeArgs) -> Result<ServeConfig, Failure> {
    let path = config_path(a);
    let file = match &path {
        Some(p) => read_file(p)?,
        None => (FileConfig::default(), String::new()),
    };
    merge(path, file, a)
}

fn read_file(path: &Path) -> Result<(FileConfig, String), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("config {}: {e}", path.display())))?;
    let parsed: FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(&text, s.start));
        let msg = e.message().replace('\n', " ");
        let key = e.span().and_then(|s| key_at(&text, s.start, s.end));
        match key {
            Some(k) => Failure::usage(format!("{}:{line}: {k}: {msg}", path.display())),
            None => Failure::usage(format!("{}:{line}: {msg}", path.display())),
        }
    })?;
    Ok((parsed, text))
}

fn merge(
    path: Option<PathBuf>,
    (file, text): (FileConfig, String),
    a: &ServeArgs,
) -> Result<ServeConfig, Failure> {
    let at = |offset: usize, key: &str, msg: String| {
        let p = path.as_deref().unwrap_or(Path::new("<flags>"));
        Failure::usage(format!(
            "{}:{}: {key}: {msg}",
            p.display(),
            line_of(&text, offset)
        ))
    };
    let in_file = |key: &str, msg: String| {
        let p = path.as_deref().unwrap_or(Path::new("<flags>"));
        let offset = text.find(key).unwrap_or(0);
        Failure::usage(format!(
            "{}:{}: {key}: {msg}",
            p.display(),
            line_of(&text, offset)
        ))
    };
    let mut mirrors = Vec::new();
    for (name, m) in file.mirrors {
        let key = format!("mirrors.{name}");
        let url = url::Url::parse(m.url.get_ref())
            .map_err(|e| at(m.url.span().start, &format!("{key}.url"), e.to_string()))?;
        let mut headers = Vec::new();
        for (hname, v) in m.headers {
            let hkey = format!("{key}.headers.{hname}");
            let start = v.span().start;
            let from = match v.into_inner() {
                HeaderFile::Value(s) => HeaderValueFrom::Literal(s),
                HeaderFile::Env(e) => HeaderValueFrom::Env(e.env),
            };
            let (n, v) = header(&hname, &from).map_err(|msg| at(start, &hkey, msg))?;
            headers.push((n, v, from));
        }
        mirrors.push(Mirror {
            name,
            url,
            headers,
            cacert: m.cacert,
            fill: match m.fill {
                Fill::Eager => FillPolicy::Eager,
                Fill::Lazy => FillPolicy::Lazy,
            },
            revalidate: m.revalidate.map(Duration::from_secs),
            pass_query: m.pass_query,
        });
    }
    // Flags: --mirror adds (or replaces the URL of) a mirror.
    for m in &a.mirror {
        let (name, base) = m
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--mirror {m:?}: expected NAME=URL")))?;
        let url =
            url::Url::parse(base).map_err(|e| Failure::usage(format!("--mirror {m:?}: {e}")))?;
        match mirrors.iter_mut().find(|x| x.name == name) {
            Some(x) => x.url = url,
            None => mirrors.push(Mirror {
                name: name.to_owned(),
                url,
                headers: Vec::new(),
                cacert: None,
                fill: FillPolicy::Eager,
                revalidate: None,
                pass_query: false,
            }),
        }
    }
    for h in &a.mirror_header {
        let bad = |msg: &str| Failure::usage(format!("--mirror-header {h:?}: {msg}"));
        let (name, line) = h
            .split_once('=')
            .ok_or_else(|| bad("expected NAME='Header: value'"))?;
        let (hname, value) = line
            .split_once(':')
            .ok_or_else(|| bad("expected NAME='Header: value'"))?;
        let from = HeaderValueFrom::Literal(value.trim().to_owned());
        let (n, v) = header(hname.trim(), &from).map_err(|m| bad(&m))?;
        let mirror = mirrors
            .iter_mut()
            .find(|x| x.name == name)
            .ok_or_else(|| bad(&format!("no mirror named {name:?}")))?;
        mirror.headers.push((n, v, from));
    }
    let listen = if !a.listen.is_empty() {
        a.listen.clone()
    } else {
        match file.listen {
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) if !v.is_empty() => v,
            Some(OneOrMany::Many(_)) => {
                return Err(in_file("listen", "needs at least one address".into()))
            }
            None => vec![format!(
                "127.0.0.1:{}",
                cache_http::endpoint::server::DEFAULT_PORT
            )],
        }
    };
    let max_size = match (a.max_size, file.max_size) {
        (Some(n), _) => Some(n),
        (None, Some(Size::Bytes(n))) => Some(n),
        (None, Some(Size::Text(t))) => Some(parse_size(&t).map_err(|e| in_file("max_size", e))?),
        (None, None) => None,
    };
    let access = a.access_log.clone().or(file.access_log);
    let access_log = match access.as_deref() {
        None | Some("-") => AccessLog::Stderr,
        Some("off") => AccessLog::Off,
        Some("") => {
            return Err(in_file(
                "access_log",
                "expected a path, `-` or `off`".into(),
            ))
        }
        Some(p) => AccessLog::File(PathBuf::from(p)),
    };
    let parents = if !a.parents.urls().is_empty() {
        let urls = a.parents.urls();
        for p in &urls {
            check_parent(p).map_err(|e| Failure::usage(format!("--parent {p:?}: {e}")))?;
        }
        urls
    } else {
        let mut urls = Vec::new();
        for p in file.parents.unwrap_or_default() {
            check_parent(p.get_ref()).map_err(|e| at(p.span().start, "parents", e))?;
            urls.push(p.into_inner());
        }
        urls
    };
    let shared = match a.shared.shared.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => {
            check_shared(u).map_err(|e| Failure::usage(format!("--shared: {e}")))?;
            Some(u.to_owned())
        }
        _ => match file.shared {
            Some(u) => {
                check_shared(u.get_ref()).map_err(|e| at(u.span().start, "shared", e))?;
                Some(u.into_inner())
            }
            None => None,
        },
    };
    // A flag wins over the file's key; the file's value is seconds or a
    // duration string.
    let duration = |flag: Option<Duration>, key: &str, value: Option<Spanned<Seconds>>| {
        let Some(value) = value.filter(|_| flag.is_none()) else {
            return Ok(flag);
        };
        let start = value.span().start;
        // One parser (and one "above zero" check) for both forms.
        let text = match value.into_inner() {
            Seconds::Secs(n) => n.to_string(),
            Seconds::Text(t) => t,
        };
        crate::upstream::parse_duration(&text)
            .map(Some)
            .map_err(|e| at(start, key, e))
    };
    let shared_lease = duration(a.shared.shared_lease, "shared_lease", file.shared_lease)?;
    let shared_timeout = duration(
        a.shared.shared_timeout,
        "shared_timeout",
        file.shared_timeout,
    )?;
    let json_log = match a.access_log_format.as_deref() {
        Some(f) => f == "json",
        None => file.access_log_format == Some(LogFormat::Json),
    };
    Ok(ServeConfig {
        file: path,
        listen,
        store: file.store,
        max_size,
        access_log,
        json_log,
        drain_timeout: Duration::from_secs(a.drain_timeout.or(file.drain_timeout).unwrap_or(30)),
        max_connections: a
            .max_connections
            .or(file.max_connections)
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n.max(1) as usize),
        threads: a.threads.or(file.threads).map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        ),
        revalidate: Duration::from_secs(a.revalidate.or(file.revalidate).unwrap_or(60)),
        parents,
        shared,
        shared_lease,
        shared_timeout,
        mirrors,
    })
}

/// A shared tier must be `s3://BUCKET[/PREFIX]` (nothing is contacted).
fn check_shared(url: &str) -> Result<(), String> {
    cache_s3::SharedTier::from_url(url, cache_s3::SharedOptions::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A parent must be an http(s) URL a source can be made of.
fn check_parent(url: &str) -> Result<(), String> {
    cache_http::HttpSource::new(url, cache_http::HttpSourceConfig::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

fn header(
    name: &str,
    from: &HeaderValueFrom,
) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let n = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    let value = match from {
        HeaderValueFrom::Literal(s) => s.clone(),
        HeaderValueFrom::Env(var) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
        }
    };
    let mut v = http::HeaderValue::from_str(&value)
        .map_err(|_| "the value is not a valid header value".to_owned())?;
    v.set_sensitive(true);
    Ok((n, v))
}

impl ServeConfig {
    /// The effective configuration as TOML, header values masked.
    pub fn render(&self) -> String {
        use toml::{Table, Value};
        let mut t = Table::new();
        t.insert(
            "listen".into(),
            Value::Array(
                self.listen
                    .iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect(),
            ),
        );
        if let Some(s) = &self.store {
            t.insert("store".into(), Value::from(s.display().to_string()));
        }
        if let Some(n) = self.max_size {
            t.insert("max_size".into(), Value::from(n as i64));
        }
        let log = match &self.access_log {
            AccessLog::Stderr => "-".to_owned(),
            AccessLog::Off => "off".to_owned(),
            AccessLog::File(p) => p.display().to_string(),
        };
        t.insert("access_log".into(), Value::from(log));
        t.insert(
            "access_log_format".into(),
            Value::from(if self.json_log { "json" } else { "combined" }),
        );
        t.insert(
            "drain_timeout".into(),
            Value::from(self.drain_timeout.as_secs() as i64),
        );
        t.insert(
            "max_connections".into(),
            Value::from(self.max_connections as i64),
        );
        t.insert("threads".into(), Value::from(self.threads as i64));
        t.insert(
            "revalidate".into(),
            Value::from(self.revalidate.as_secs() as i64),
        );
        if !self.parents.is_empty() {
            t.insert(
                "parents".into(),
                Value::Array(
                    self.parents
                        .iter()
                        .map(|p| Value::from(p.as_str()))
                        .collect(),
                ),
            );
        }
        if let Some(s) = &self.shared {
            t.insert("shared".into(), Value::from(s.as_str()));
        }
        for (key, d) in [
            ("shared_lease", self.shared_lease),
            ("shared_timeout", self.shared_timeout),
        ] {
            if let Some(d) = d {
                t.insert(key.into(), Value::from(format!("{}s", d.as_secs_f64())));
            }
        }
        let mut mirrors = Table::new();
        for m in &self.mirrors {
            let mut mt = Table::new();
            let mut url = m.url.clone();
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            mt.insert("url".into(), Value::from(url.to_string()));
            let mut h = Table::new();
            for (n, _, from) in &m.headers {
                let shown = match from {
                    HeaderValueFrom::Literal(_) => Value::from("***"),
                    HeaderValueFrom::Env(var) => {
                        let mut e = Table::new();
                        e.insert("env".into(), Value::from(var.as_str()));
                        Value::Table(e)
                    }
                };
                h.insert(n.as_str().to_owned(), shown);
            }
            if !h.is_empty() {
                mt.insert("headers".into(), Value::Table(h));
            }
            if let Some(c) = &m.cacert {
                mt.insert("cacert".into(), Value::from(c.display().to_string()));
            }
            mt.insert(
                "fill".into(),
                Value::from(match m.fill {
                    FillPolicy::Lazy => "lazy",
                    _ => "eager",
                }),
            );
            if let Some(r) = m.revalidate {
                mt.insert("revalidate".into(), Value::from(r.as_secs() as i64));
            }
            mt.insert("pass_query".into(), Value::from(m.pass_query));
            mirrors.insert(m.name.clone(), Value::Table(mt));
        }
        t.insert("mirrors".into(), Value::Table(mirrors));
        toml::to_string(&t).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_error_spans() {
        let t = "a = 1\n[mirrors.x]\nurl = \"u\"\nfill = \"sometimes\"\n";
        let v = t.find("\"sometimes").expect("value");
        assert_eq!(key_at(t, v, v + 11).as_deref(), Some("mirrors.x.fill"));
        assert_eq!(key_at(t, 0, 1).as_deref(), Some("a"));
    }

    #[test]
    fn line_numbers() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
