//! The subcommands: each parses its arguments into library calls and
//! prints the result.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use cache_core::{
    check_chunk_size, Error, FetchOptions, FillOptions, Object, Source, SourceError,
    SourceErrorKind, SourceFactory, Store, StoreOptions,
};
use cache_http::{HttpSource, HttpSourceConfig};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::cli::{self, Cli, Command};
use crate::progress::{Mode, Reporter};
use crate::size::human;
use crate::{exit, Failure};

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    match cli.command {
        Command::Fetch(a) => fetch(g, a).await,
        Command::Serve(_) => unreachable!("main runs serve"),
        Command::Ls(a) => ls(g, a),
        Command::Cat(a) => cat(g, a).await,
        Command::Verify(a) => verify(g, a).await,
        Command::Rm(a) => {
            let store = open_store(g, None)?;
            let key = store
                .resolve(&a.reference)
                .map_err(|e| Failure::core(&a.reference, e))?;
            store
                .remove(&key)
                .map_err(|e| Failure::core(&a.reference, e))?;
            println!("removed {key}");
            Ok(())
        }
        Command::Gc(a) => gc(g, a),
        Command::Import(a) => import(g, a).await,
        Command::Demo(a) => crate::demo::run(g, a).await,
    }
}

/// The store directory: `--store`, `$BLOCKCACHE_STORE`, else the platform
/// cache directory.
pub fn store_dir(g: &cli::Global) -> Result<PathBuf, Failure> {
    if let Some(d) = &g.store {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("blockcache"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(h).join(".cache").join("blockcache"));
    }
    Err(Failure::usage(
        "no store directory: pass --store DIR or set BLOCKCACHE_STORE, XDG_CACHE_HOME or HOME",
    ))
}

pub fn http_config(a: Option<&cli::HttpArgs>) -> HttpSourceConfig {
    HttpSourceConfig {
        limit_rate: a.and_then(|a| a.limit_rate),
        ..HttpSourceConfig::default()
    }
}

/// Builds HTTP sources for the URLs recorded in objects (resume, repair,
/// reads of incomplete objects opened by reference).
pub fn source_factory(config: HttpSourceConfig) -> SourceFactory {
    Arc::new(move |url: &str| {
        HttpSource::new(url, config.clone())
            .map(|s| Arc::new(s) as Arc<dyn Source>)
            .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))
    })
}

pub fn open_store(g: &cli::Global, http: Option<&cli::HttpArgs>) -> Result<Store, Failure> {
    let dir = store_dir(g)?;
    let options = StoreOptions {
        source_factory: Some(source_factory(http_config(http))),
        ..StoreOptions::default()
    };
    Store::open_with(&dir, options)
        .map_err(|e| Failure::core(&format!("store {}", dir.display()), e))
}

fn http_source(url: &str, http: &cli::HttpArgs) -> Result<Arc<dyn Source>, Failure> {
    HttpSource::new(url, http_config(Some(http)))
        .map(|s| Arc::new(s) as Arc<dyn Source>)
        .map_err(|e| Failure::usage(e.to_string()))
}

fn label_of(url: &str) -> String {
    let name = url.rsplit('/').find(|s| !s.is_empty()).unwrap_or(url);
    let name: String = name.chars().take(24).collect();
    name
}

/// How an object is named in messages: its BLAKE3 when known, else key.
fn name_of(o: &Object) -> String {
    match o.info() {
        cache_core::ObjectInfo {
            blake3: Some(h),
            verified: true,
            ..
        } => h.to_hex().to_string(),
        i => format!("object {} ({})", i.key, i.source),
    }
}

async fn fetch(g: &cli::Global, a: cli::FetchArgs) -> Result<(), Failure> {
    let expected = match &a.blake3 {
        Some(h) => Some(
            blake3::Hash::from_hex(h.trim())
                .map_err(|e| Failure::usage(format!("--blake3 {h:?}: {e}")))?,
        ),
        None => None,
    };
    let chunk_size = check_chunk_size(a.chunk_size).map_err(|e| Failure::core("", e))?;
    let source = http_source(&a.url, &a.http)?;
    let store = open_store(g, Some(&a.http))?;
    let options = FetchOptions {
        chunk_size,
        expected,
        fill: FillOptions {
            connections: usize::from(a.http.connections),
            ..FillOptions::default()
        },
    };
    let object = store
        .fetch(source, options)
        .await
        .map_err(|e| Failure::core(&a.url, e))?;
    let to_stdout = a.output.as_deref() == Some(std::path::Path::new("-"));
    let reporter = Reporter::start(&object, label_of(&a.url), Mode::detect(g.quiet));
    let hash = if to_stdout {
        let streamed = stream_to_stdout(&object, 0..object.len()).await;
        let hash = object.wait_complete().await;
        reporter.finish().await;
        streamed.map_err(|f| Failure::new(f.code, format!("{}: {}", a.url, f.message)))?;
        hash.map_err(|e| Failure::core(&a.url, e))?
    } else {
        let hash = object.wait_complete().await;
        reporter.finish().await;
        hash.map_err(|e| Failure::core(&a.url, e))?
    };
    match &a.output {
        Some(_) if to_stdout => {
            let _ = writeln!(std::io::stderr(), "{}", hash.to_hex());
            return Ok(());
        }
        Some(path) => {
            let (data, len, dest) = (object.data_path(), object.len(), path.clone());
            let method =
                tokio::task::spawn_blocking(move || crate::output::write_out(&data, len, &dest))
                    .await
                    .map_err(|e| Failure::new(exit::LOCAL_IO, format!("write-out task: {e}")))??;
            tracing::info!(path = %path.display(), ?method, "object written out");
        }
        None => {}
    }
    println!("{}", hash.to_hex());
    Ok(())
}

/// Streams `range` of `object` to stdout as its chunks arrive. A closed
/// stdout (e.g. `| head`) ends the stream quietly.
async fn stream_to_stdout(object: &Object, range: std::ops::Range<u64>) -> Result<(), Failure> {
    let mut out = tokio::io::stdout();
    let mut stream = Box::pin(object.stream(range));
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| Failure::core("", e))?;
        match out.write_all(&piece).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Failure::io("stdout", e)),
        }
    }
    match out.flush().await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::io("stdout", e)),
    }
}

fn unix_secs(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

fn ls(g: &cli::Global, a: cli::LsArgs) -> Result<(), Failure> {
    let store = open_store(g, None)?;
    let objects = store.list().map_err(|e| Failure::core("list", e))?;
    if a.json {
        let arr: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "key": o.info.key,
                    "blake3": o.info.blake3.map(|h| h.to_hex().to_string()),
                    "verified": o.info.verified,
                    "state": o.state,
                    "len": o.info.len,
                    "bytes_done": o.bytes_done,
                    "chunks_done": o.chunks_done,
                    "chunks_total": o.chunks_total,
                    "chunk_size": o.info.chunk_size,
                    "disk_bytes": o.disk_bytes,
                    "last_used_unix": unix_secs(o.last_used),
                    "source": o.info.source,
                    "validator": o.info.validator,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&arr)
            .map_err(|e| Failure::new(exit::LOCAL_IO, format!("json: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16}  {:<8}  {:>6}  {:>10}  SOURCE",
        "BLAKE3", "STATE", "DONE", "LENGTH"
    );
    for o in &objects {
        let hash = match o.info.blake3 {
            Some(h) if o.info.verified => h.to_hex()[..16].to_string(),
            Some(h) => format!("{}?", &h.to_hex()[..15]),
            None => "-".to_string(),
        };
        let pct = if o.info.len == 0 {
            100.0
        } else {
            o.bytes_done as f64 * 100.0 / o.info.len as f64
        };
        let _ = writeln!(
            out,
            "{:<16}  {:<8}  {:>5.1}%  {:>10}  {}",
            hash,
            o.state,
            pct,
            human(o.info.len),
            o.info.source
        );
    }
    Ok(())
}

/// Parses `START-END` (inclusive), `START-` or `-N` against `len`.
pub fn parse_range(spec: &str, len: u64) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--range {spec:?}: expected START-END, START- or -N");
    let (a, b) = spec.trim().split_once('-').ok_or_else(bad)?;
    let num = |s: &str| crate::size::parse_size(s).map_err(|_| bad());
    let range = match (a.trim(), b.trim()) {
        ("", "") => return Err(bad()),
        ("", n) => {
            let n = num(n)?;
            len.saturating_sub(n)..len
        }
        (s, "") => num(s)?..len,
        (s, e) => {
            let (s, e) = (num(s)?, num(e)?);
            if e < s {
                return Err(bad());
            }
            s..e.saturating_add(1).min(len)
        }
    };
    if len > 0 && range.start >= len {
        return Err(format!(
            "--range {spec:?}: starts at or after the end of the object ({len} bytes)"
        ));
    }
    Ok(range)
}

async fn cat(g: &cli::Global, a: cli::CatArgs) -> Result<(), Failure> {
    let store = open_store(g, Some(&a.http))?;
    let r = &a.reference;
    let object = match store.open_ref(r) {
        Ok(o) => o,
        Err(Error::NotFound(_)) if r.contains("://") => {
            let options = FetchOptions {
                fill: FillOptions {
                    connections: usize::from(a.http.connections),
                    ..FillOptions::default()
                },
                ..FetchOptions::default()
            };
            store
                .fetch(http_source(r, &a.http)?, options)
                .await
                .map_err(|e| Failure::core(r, e))?
        }
        Err(e) => return Err(Failure::core(r, e)),
    };
    let range = match &a.range {
        Some(spec) => parse_range(spec, object.len()).map_err(Failure::usage)?,
        None => 0..object.len(),
    };
    stream_to_stdout(&object, range)
        .await
        .map_err(|f| Failure::new(f.code, format!("{r}: {}", f.message)))
}

async fn verify(g: &cli::Global, a: cli::VerifyArgs) -> Result<(), Failure> {
    let store = open_store(g, None)?;
    let objects: Vec<Object> = match &a.reference {
        Some(r) => vec![store.open_ref(r).map_err(|e| Failure::core(r, e))?],
        None => {
            let mut v = Vec::new();
            for o in store.list().map_err(|e| Failure::core("list", e))? {
                match store.open_ref(&o.info.key) {
                    Ok(obj) => v.push(obj),
                    Err(e) => eprintln!("{}: skipped: {e}", o.info.key),
                }
            }
            v
        }
    };
    let mut unrepaired = 0usize;
    for object in objects {
        let name = name_of(&object);
        let report = match object.verify().await {
            Ok(r) => r,
            Err(e @ Error::Busy { .. }) if a.reference.is_none() => {
                println!("{name}: skipped: {e}");
                continue;
            }
            Err(e) => return Err(Failure::core(&name, e)),
        };
        if report.damaged.is_empty() && a.repair && object.blake3().is_none() {
            // Damage cleared by an earlier verify (or an interrupted fill):
            // the missing chunks are refetched, nothing else.
            let missing = object.progress();
            let missing = missing.chunks_total - missing.chunks_done;
            let reporter = Reporter::start(&object, "repair".into(), Mode::detect(g.quiet));
            let hash = object.wait_complete().await;
            reporter.finish().await;
            let hash = hash.map_err(|e| Failure::core(&name, e))?;
            println!(
                "{name}: repaired: fetched {missing} missing chunks, BLAKE3 {}",
                hash.to_hex()
            );
            continue;
        }
        if report.damaged.is_empty() {
            println!(
                "{name}: ok, {} chunks verified{}",
                report.chunks_checked,
                if object.blake3().is_some() {
                    ""
                } else {
                    " (incomplete)"
                }
            );
            continue;
        }
        let cs = u64::from(object.chunk_size());
        let list: Vec<String> = report
            .damaged
            .iter()
            .map(|&c| {
                let start = u64::from(c) * cs;
                format!("{c} (bytes {start}-{})", (start + cs).min(object.len()) - 1)
            })
            .collect();
        println!(
            "{name}: DAMAGED: {} of {} chunks: {}",
            report.damaged.len(),
            report.chunks_checked,
            list.join(", ")
        );
        if a.repair {
            let reporter = Reporter::start(&object, "repair".into(), Mode::detect(g.quiet));
            let hash = object.wait_complete().await;
            reporter.finish().await;
            let hash = hash.map_err(|e| Failure::core(&name, e))?;
            println!(
                "{name}: repaired: refetched {} chunks, BLAKE3 {}",
                report.damaged.len(),
                hash.to_hex()
            );
        } else {
            unrepaired += 1;
        }
    }
    if unrepaired > 0 {
        return Err(Failure::new(
            exit::VERIFICATION,
            format!("{unrepaired} damaged object(s); run `blockcache verify --repair` to refetch the damaged chunks"),
        ));
    }
    Ok(())
}

fn gc(g: &cli::Global, a: cli::GcArgs) -> Result<(), Failure> {
    let store = open_store(g, None)?;
    let Some(max) = a.max_size else {
        let objects = store.list().map_err(|e| Failure::core("list", e))?;
        let total: u64 = objects.iter().map(|o| o.disk_bytes).sum();
        println!(
            "{} objects, {} on disk; pass --max-size SIZE to evict",
            objects.len(),
            human(total)
        );
        return Ok(());
    };
    let report = store.gc(max).map_err(|e| Failure::core("gc", e))?;
    for (key, bytes) in &report.evicted {
        println!("evicted {key} ({})", human(*bytes));
    }
    for key in &report.skipped_busy {
        println!("kept {key}: in use");
    }
    println!(
        "{} -> {} on disk ({} evicted)",
        human(report.bytes_before),
        human(report.bytes_after),
        report.evicted.len()
    );
    Ok(())
}

async fn import(g: &cli::Global, a: cli::ImportArgs) -> Result<(), Failure> {
    let chunk_size = check_chunk_size(a.chunk_size).map_err(|e| Failure::core("", e))?;
    let store = open_store(g, None)?;
    let path = a.file.clone();
    let object = tokio::task::spawn_blocking(move || store.import(&path, chunk_size))
        .await
        .map_err(|e| Failure::new(exit::LOCAL_IO, format!("import task: {e}")))?
        .map_err(|e| Failure::core(&a.file.display().to_string(), e))?;
    let hash = object
        .blake3()
        .ok_or_else(|| Failure::new(exit::LOCAL_IO, "import produced no hash"))?;
    println!("{}", hash.to_hex());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-9", 100), Ok(0..10));
        assert_eq!(parse_range("90-", 100), Ok(90..100));
        assert_eq!(parse_range("-10", 100), Ok(90..100));
        assert_eq!(parse_range("-1000", 100), Ok(0..100));
        assert_eq!(
            parse_range("95-200", 100),
            Ok(95..100),
            "END past the end is clipped"
        );
        assert_eq!(parse_range("1K-2K", 4096), Ok(1024..2049));
        assert!(parse_range("100-", 100).is_err());
        assert!(parse_range("9-3", 100).is_err());
        assert!(parse_range("-", 100).is_err());
        assert!(parse_range("abc", 100).is_err());
        assert_eq!(parse_range("-5", 0), Ok(0..0));
    }
}
