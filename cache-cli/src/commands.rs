//! The subcommands: each parses its arguments into library calls and
//! prints the result.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use cache_core::{
    check_chunk_size, object_key, Error, FetchOptions, FillOptions, Object, Source, SourceChain,
    Store, StoreOptions,
};
use cache_http::source::parent_config;
use cache_http::{HttpSource, HttpSourceConfig, ParentSource};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::cli::{self, Cli, Command};
use crate::progress::{Mode, Reporter};
use crate::size::human;
use crate::{exit, Failure};

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    match cli.command {
        Command::Fetch(a) => fetch(g, *a).await,
        Command::Serve(_) => unreachable!("main runs serve"),
        Command::Ls(a) => crate::ls::run(g, a).await,
        Command::Cat(a) => cat(g, a).await,
        Command::Verify(a) => verify(g, a).await,
        Command::Rm(a) => {
            let store = open_existing_store(g, None)?;
            let key = store
                .resolve(&a.reference)
                .map_err(|e| Failure::core(&a.reference, e))?;
            let what = store
                .list()
                .ok()
                .and_then(|l| l.into_iter().find(|o| o.info.key == key))
                .map(|o| describe(&o));
            store
                .remove(&key)
                .map_err(|e| Failure::core(&a.reference, e))?;
            println!("removed {}", what.unwrap_or(key));
            Ok(())
        }
        Command::Gc(a) => gc(g, a),
        Command::Import(a) => import(g, a).await,
        Command::Demo(a) => crate::demo::run(g, a).await,
        Command::Manifest(a) => manifest(g, a),
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "blockcache", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Failure::io("stdout", e))
                }
                _ => Ok(()),
            }
        }
    }
}

/// An object in one line for rm and gc: its URL and BLAKE3 (else key).
fn describe(o: &cache_core::ObjectSummary) -> String {
    let id = match o.info.blake3 {
        Some(h) if o.info.verified => format!("BLAKE3 {}", h.to_hex()),
        _ => format!("key {} (incomplete)", o.info.key),
    };
    format!("{} {id}", o.info.source)
}

fn manifest(g: &cli::Global, a: cli::ManifestArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let store = open_existing_store(g, None)?;
    let object = store
        .open_ref(&a.reference)
        .map_err(|e| Failure::core(&a.reference, e))?;
    let Some(manifest) = object
        .manifest()
        .map_err(|e| Failure::core(&a.reference, e))?
    else {
        return Err(Failure::usage(format!(
            "{}: {} is not complete; only complete objects have a manifest",
            a.reference,
            name_of(&object)
        )));
    };
    let bytes = manifest.encode();
    match &a.output {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| Failure::io(format!("write {}", path.display()), e))?,
        None => {
            let mut out = std::io::stdout();
            if out.is_terminal() {
                return Err(Failure::usage(
                    "the manifest is binary: refusing to write it to a terminal; use -o FILE or a pipe",
                ));
            }
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::io("stdout", e))?;
        }
    }
    if !g.quiet {
        eprintln!(
            "manifest of {}: {} chunks of {}, {} bytes",
            manifest.root().to_hex(),
            manifest.cvs().len(),
            human(u64::from(manifest.chunk_size())),
            bytes.len()
        );
    }
    Ok(())
}

/// The store directory: `--store`, `$BLOCKCACHE_STORE`, else the platform
/// cache directory.
pub fn store_dir(g: &cli::Global) -> Result<PathBuf, Failure> {
    // `--store` (clap also reads BLOCKCACHE_STORE into it), else the
    // library's convention.
    g.store.clone().or_else(Store::default_dir).ok_or_else(|| {
        Failure::usage(
            "no store directory: pass --store DIR or set BLOCKCACHE_STORE, XDG_CACHE_HOME or HOME",
        )
    })
}

pub fn http_config(a: Option<&cli::HttpArgs>) -> HttpSourceConfig {
    HttpSourceConfig {
        limit_rate: a.and_then(|a| a.limit_rate),
        // BLOCKCACHE_SPLICE=0: every body through hyper's buffers (for
        // comparisons, or a file system whose splice misbehaves).
        direct_bodies: std::env::var_os("BLOCKCACHE_SPLICE").is_none_or(|v| v != "0"),
        ..HttpSourceConfig::default()
    }
}

pub fn open_store(g: &cli::Global, http: Option<&cli::HttpArgs>) -> Result<Store, Failure> {
    open_store_for(g, http_config(http))
}

/// [`open_store`] whose sources use `config` (credentials included).
pub fn open_store_for(g: &cli::Global, config: HttpSourceConfig) -> Result<Store, Failure> {
    let dir = store_dir(g)?;
    Store::open_with(&dir, store_options(config)?)
        .map_err(|e| Failure::core(&format!("store {}", dir.display()), e))
}

/// Opens the store for a command that only reads: where there is no store
/// it fails with "no store at PATH" (exit 2) and creates nothing.
pub fn open_existing_store(
    g: &cli::Global,
    http: Option<&cli::HttpArgs>,
) -> Result<Store, Failure> {
    let dir = store_dir(g)?;
    Store::open_existing_with(&dir, store_options(http_config(http))?)
        .map_err(|e| Failure::core("", e))
}

/// The store's sources for the URLs recorded in objects (resume, repair,
/// reads of incomplete objects opened by reference) share one client.
/// Objects' supervisors and fills run on the main runtime (the one the
/// store is opened on), also when `serve` handles a request on one of its
/// connection threads.
fn store_options(config: HttpSourceConfig) -> Result<StoreOptions, Failure> {
    Ok(StoreOptions {
        source_factory: Some(cache_http::source_factory(config).map_err(source_failure)?),
        runtime: tokio::runtime::Handle::try_current().ok(),
        ..StoreOptions::default()
    })
}

pub fn http_source(url: &str, config: HttpSourceConfig) -> Result<Arc<dyn Source>, Failure> {
    HttpSource::new(url, config)
        .map(|s| Arc::new(s) as Arc<dyn Source>)
        .map_err(source_failure)
}

pub fn source_failure(e: cache_http::HttpSourceError) -> Failure {
    match e {
        cache_http::HttpSourceError::ExtraCa { path, reason } => {
            Failure::usage(format!("--cacert {}: {reason}", path.display()))
        }
        e => Failure::usage(e.to_string()),
    }
}

fn label_of(url: &str) -> String {
    // The file name, never a query (it may carry a signature).
    let url = cache_http::source::without_query(url);
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
    let chunk_size = check_chunk_size(a.chunk_size).map_err(|e| Failure::core("", e))?;
    let tier = crate::shared::open(&a.shared)?;
    let config = crate::upstream::config(http_config(Some(&a.http)), &a.origin)?;
    let source = http_source(&a.url, config.clone())?;
    // How the URL appears in messages: the source's identity, which has
    // no `user:password@` and, with --ignore-query, no query (a signature).
    let url = &source.identity();
    let expected = crate::checksums::expected(&a.expect, url, config.clone()).await?;
    let store = open_store_for(g, config)?;
    let options = FetchOptions {
        chunk_size,
        expected: expected.clone(),
        revalidate: a.expect.revalidate,
        fill: FillOptions {
            connections: usize::from(a.http.connections),
            ..FillOptions::default()
        },
    };
    let shared = tier.as_ref().map(|tier| SharedArgs {
        tier,
        store: &store,
        quiet: g.quiet,
    });
    let (chain, shared) = source_chain(&a, source, &expected, shared).await?;
    let result = fill_and_verify(g, &a, &store, chain, options, &expected).await;
    let (object, hash) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            // Stdout closed by its reader: incomplete, nothing to publish.
            if let Some(s) = shared {
                s.abandon().await;
            }
            return Ok(());
        }
        Err(f) => {
            if let Some(s) = shared {
                s.abandon().await;
            }
            return Err(f);
        }
    };
    if let Some(s) = shared {
        // Before exit, so the next node finds it.
        s.publish(&object).await;
        let errors = cache_s3::shared_errors();
        if errors > 0 && !g.quiet {
            eprintln!(
                "blockcache: {errors} shared-tier error(s); the bytes concerned came from the next source"
            );
        }
    }
    let to_stdout = a.output.as_deref() == Some(std::path::Path::new("-"));
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

/// Runs the fill of `fetch` (progress, `-o -` streaming) until the root is
/// verified: `Ok(None)` when stdout was closed by its reader first.
async fn fill_and_verify(
    g: &cli::Global,
    a: &cli::FetchArgs,
    store: &Store,
    chain: SourceChain,
    options: FetchOptions,
    expected: &[cache_core::Digest],
) -> Result<Option<(Object, blake3::Hash)>, Failure> {
    let url = &chain.origin().identity();
    let object = store
        .fetch_chain(chain, options)
        .await
        .map_err(|e| Failure::core(url, e))?;
    let to_stdout = a.output.as_deref() == Some(std::path::Path::new("-"));
    let p = object.progress();
    let hit = p.state == cache_core::FillState::Complete;
    if hit && !g.quiet {
        // Short enough for 80 columns with a 20-character name.
        let name: String = label_of(url).chars().take(20).collect();
        eprintln!(
            "{name}: already stored, {} verified chunks, not re-downloaded",
            p.chunks_total
        );
    }
    let mode = if hit {
        Mode::Quiet
    } else {
        Mode::detect(g.quiet)
    };
    let reporter = Reporter::start(&object, label_of(url), mode);
    if to_stdout {
        let streamed = stream_to_stdout(&object, 0..object.len()).await;
        match streamed {
            Ok(Streamed::All) => {}
            Ok(Streamed::Closed) => {
                // The reader went away (`| head`): stop, keep what arrived.
                object.release().await;
                reporter.finish().await;
                return Ok(None);
            }
            Err(f) => {
                reporter.finish().await;
                return Err(Failure::new(f.code, format!("{url}: {}", f.message)));
            }
        }
    }
    let hash = object.wait_verified(expected).await;
    reporter.finish().await;
    let hash = hash.map_err(|e| Failure::core(url, e))?;
    let refused = cache_core::chunk_verify_failures();
    if refused > 0 && !g.quiet {
        eprintln!(
            "blockcache: refused {refused} chunk(s) that did not match the manifest; fetched them again from the next source"
        );
    }
    Ok(Some((object, hash)))
}

/// How a stream to stdout ended.
#[derive(Debug, PartialEq, Eq)]
enum Streamed {
    All,
    /// Stdout was closed by its reader (e.g. `| head`).
    Closed,
}

/// The origin, with the `--parent`s in front: by BLAKE3 (verified by
/// manifest) when `--blake3` is given, and by origin URL (same validator as
/// the origin's, checked by a probe of the origin here); then the
/// `--shared` bucket (see [`crate::shared`]).
async fn source_chain(
    a: &cli::FetchArgs,
    origin: Arc<dyn Source>,
    expected: &[cache_core::Digest],
    shared: Option<SharedArgs<'_>>,
) -> Result<(SourceChain, Option<crate::shared::SharedFetch>), Failure> {
    let mut chain = SourceChain::new(origin.clone());
    let parents = a.parents.urls();
    if parents.is_empty() && shared.is_none() {
        return Ok((chain, None));
    }
    let config = parent_config(&http_config(Some(&a.http)));
    // The parent must hold the version the origin serves now.
    let origin_info = origin.probe().await.map_err(|e| {
        Failure::core(
            &a.url,
            Error::Source {
                url: a.url.clone(),
                cause: e,
            },
        )
    })?;
    let root = cache_core::Digest::find_blake3(expected);
    for p in parents.iter().map(String::as_str) {
        let bad = |e: cache_http::HttpSourceError| Failure::usage(format!("--parent {p:?}: {e}"));
        if let Some(h) = root {
            let by_hash = ParentSource::by_hash(p, &h, config.clone()).map_err(bad)?;
            chain = chain.with_alternate(Arc::new(by_hash));
        }
        let by_url = ParentSource::by_url(p, &a.url, &origin_info, config.clone()).map_err(bad)?;
        chain = chain.with_alternate(Arc::new(by_url));
    }
    let Some(shared) = shared else {
        return Ok((chain, None));
    };
    let identity = origin.identity();
    // An object already complete here is not waited for (the fetch still
    // publishes it when the bucket lacks it).
    let local = !a.expect.revalidate
        && (expected
            .iter()
            .any(|d| matches!(shared.store.get_digest(d), Ok(Some(o)) if o.blake3().is_some()))
            || matches!(
                shared.store.open_ref(&object_key(&identity, &origin_info.validator, origin_info.len)),
                Ok(o) if o.blake3().is_some()
            ));
    let (chain, fetch) = crate::shared::prepare(
        shared.tier,
        chain,
        &identity,
        &origin_info,
        root,
        local,
        shared.quiet,
    )
    .await;
    Ok((chain, Some(fetch)))
}

/// What [`source_chain`] needs for `--shared`.
struct SharedArgs<'a> {
    tier: &'a cache_s3::SharedTier,
    store: &'a Store,
    quiet: bool,
}

/// Streams `range` of `object` to stdout as its chunks arrive. A closed
/// stdout (e.g. `| head`) ends the stream quietly.
async fn stream_to_stdout(
    object: &Object,
    range: std::ops::Range<u64>,
) -> Result<Streamed, Failure> {
    let mut out = tokio::io::stdout();
    let mut stream = Box::pin(object.stream(range));
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| Failure::core("", e))?;
        match out.write_all(&piece).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Streamed::Closed),
            Err(e) => return Err(Failure::io("stdout", e)),
        }
    }
    match out.flush().await {
        Ok(()) => Ok(Streamed::All),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Streamed::Closed),
        Err(e) => Err(Failure::io("stdout", e)),
    }
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

/// `cat REF`: writes the object (or `--range` of it) to stdout as its
/// chunks arrive; a URL not in the store is fetched first.
async fn cat(g: &cli::Global, a: cli::CatArgs) -> Result<(), Failure> {
    let r = &a.reference;
    // Only a URL (fetched when missing) may create the store.
    let store = if r.contains("://") {
        open_store(g, Some(&a.http))?
    } else {
        open_existing_store(g, Some(&a.http))?
    };
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
                .fetch(http_source(r, http_config(Some(&a.http)))?, options)
                .await
                .map_err(|e| Failure::core(r, e))?
        }
        Err(e) => return Err(Failure::core(r, e)),
    };
    let range = match &a.range {
        Some(spec) => parse_range(spec, object.len()).map_err(Failure::usage)?,
        None => 0..object.len(),
    };
    if !a.force && std::io::stdout().is_terminal() {
        // Like curl: binary bytes on a terminal garble it. Look at the
        // start of what would be written (waiting for it if needed).
        let n = (range.end - range.start).min(4096);
        let head = object
            .read_at(range.start, n)
            .await
            .map_err(|e| Failure::core(r, e))?;
        if looks_binary(&head) {
            return Err(Failure::usage(format!(
                "{r}: binary output would garble the terminal; redirect it (> FILE, | xxd) or pass --force"
            )));
        }
    }
    stream_to_stdout(&object, range)
        .await
        .map(|_| ())
        .map_err(|f| Failure::new(f.code, format!("{r}: {}", f.message)))
}

/// NUL bytes or invalid UTF-8 (a cut multi-byte character at the end
/// excepted): not text.
fn looks_binary(b: &[u8]) -> bool {
    if b.contains(&0) {
        return true;
    }
    match std::str::from_utf8(b) {
        Ok(_) => false,
        Err(e) => e.error_len().is_some(),
    }
}

async fn verify(g: &cli::Global, a: cli::VerifyArgs) -> Result<(), Failure> {
    let store = open_existing_store(g, None)?;
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
    let store = open_existing_store(g, None)?;
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
    let names: std::collections::HashMap<String, String> = store
        .list()
        .map_err(|e| Failure::core("list", e))?
        .iter()
        .map(|o| (o.info.key.clone(), describe(o)))
        .collect();
    let name = |key: &String| names.get(key).cloned().unwrap_or_else(|| key.clone());
    let report = if a.dry_run {
        store.gc_dry_run(max)
    } else {
        store.gc(max)
    }
    .map_err(|e| Failure::core("gc", e))?;
    let verb = if a.dry_run { "would evict" } else { "evicted" };
    for (key, bytes) in &report.evicted {
        println!("{verb} {} ({})", name(key), human(*bytes));
    }
    for key in &report.skipped_busy {
        println!("kept {}: in use", name(key));
    }
    println!(
        "{} -> {} on disk ({} {verb}{})",
        human(report.bytes_before),
        human(report.bytes_after),
        report.evicted.len(),
        if a.dry_run { "; nothing removed" } else { "" }
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
