//! `blockcache ls`: the table (with a REF column that `cat`, `verify` and
//! `rm` accept), `--json`, and `--watch`, a table redrawn every second
//! with the download rate of each object.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use cache_core::ObjectSummary;

use crate::cli;
use crate::commands::open_existing_store;
use crate::size::human;
use crate::{exit, Failure};

/// What `cat`, `verify` and `rm` accept for an object: the first 16 hex
/// digits of its BLAKE3 when known (a unique prefix), else its key.
pub fn reference(o: &ObjectSummary) -> String {
    match o.info.blake3 {
        Some(h) if o.info.verified => h.to_hex()[..16].to_string(),
        _ => o.info.key.clone(),
    }
}

fn unix_secs(t: Option<std::time::SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

pub async fn run(g: &cli::Global, a: cli::LsArgs) -> Result<(), Failure> {
    if a.watch {
        return watch(g).await;
    }
    let store = open_existing_store(g, None)?;
    let objects = store.list().map_err(|e| Failure::core("list", e))?;
    if a.json {
        let arr: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "key": o.info.key,
                    "blake3": o.info.blake3.map(|h| h.to_hex().to_string()),
                    "digests": digests_json(o),
                    "verified": o.info.verified,
                    "state": o.state.name(),
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
    let _ = out.write_all(table(&objects, None).as_bytes());
    Ok(())
}

/// Every known digest of an object, by algorithm name.
fn digests_json(o: &cache_core::ObjectSummary) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(h) = o.info.blake3 {
        m.insert("blake3".into(), h.to_hex().to_string().into());
    }
    for d in &o.digests {
        m.insert(d.algo.name().into(), d.hex().into());
    }
    serde_json::Value::Object(m)
}

fn pct(o: &ObjectSummary) -> f64 {
    if o.info.len == 0 {
        100.0
    } else {
        o.bytes_done as f64 * 100.0 / o.info.len as f64
    }
}

/// The table; with `rates`, a RATE column (bytes per second by key).
fn table(objects: &[ObjectSummary], rates: Option<&HashMap<String, f64>>) -> String {
    let width = objects
        .iter()
        .map(|o| reference(o).len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut s = format!(
        "{:<width$}  {:<8}  {:>6}  {:>10}  {}SOURCE\n",
        "REF",
        "STATE",
        "DONE",
        "LENGTH",
        if rates.is_some() { "      RATE  " } else { "" }
    );
    for o in objects {
        let rate = match rates {
            Some(r) => {
                let v = r.get(&o.info.key).copied().unwrap_or(0.0);
                if v > 0.0 {
                    format!("{:>8}/s  ", human(v as u64))
                } else {
                    format!("{:>10}  ", "-")
                }
            }
            None => String::new(),
        };
        s.push_str(&format!(
            "{:<width$}  {:<8}  {:>5.1}%  {:>10}  {rate}{}\n",
            reference(o),
            o.state,
            pct(o),
            human(o.info.len),
            o.info.source
        ));
    }
    s
}

/// Redraws the table every second until Ctrl-C.
async fn watch(g: &cli::Global) -> Result<(), Failure> {
    let store = open_existing_store(g, None)?;
    let tty = std::io::stdout().is_terminal();
    let mut last: HashMap<String, (Instant, u64)> = HashMap::new();
    let mut rates: HashMap<String, f64> = HashMap::new();
    loop {
        let objects = store.list().map_err(|e| Failure::core("list", e))?;
        let now = Instant::now();
        for o in &objects {
            if let Some((t, b)) = last.get(&o.info.key) {
                let secs = now.duration_since(*t).as_secs_f64().max(0.001);
                rates.insert(
                    o.info.key.clone(),
                    o.bytes_done.saturating_sub(*b) as f64 / secs,
                );
            }
            last.insert(o.info.key.clone(), (now, o.bytes_done));
        }
        let filling = objects.iter().filter(|o| o.state.is_filling()).count();
        let mut text = table(&objects, Some(&rates));
        text.push_str(&format!(
            "{} objects, {} filling; refreshed every second, Ctrl-C to stop\n",
            objects.len(),
            filling
        ));
        let mut out = std::io::stdout().lock();
        if tty {
            // Home, then erase to the end: no flicker, no scrollback spam.
            let _ = write!(out, "\x1b[H\x1b[J");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
