//! Encoding of the hub's state: the `/status` document, the `snapshot`
//! and `delta` events (schema in the module docs of [`super`]).

use bytes::Bytes;
use serde_json::{json, Value};

use super::{cell_code, name_of_url, Entry, HubState, Record};

fn record_json(r: &Record) -> Value {
    let remaining = r.length.saturating_sub(r.bytes_done);
    let eta = (r.bytes_per_second > 0.0 && remaining > 0)
        .then(|| (remaining as f64 / r.bytes_per_second * 10.0).round() / 10.0);
    let short = r
        .blake3
        .as_deref()
        .or(r.expected_blake3.as_deref())
        .map(|h| h[..16].to_owned());
    json!({
        "key": r.key,
        "url": r.url,
        "name": name_of_url(&r.url),
        "blake3": r.blake3,
        "expected_blake3": r.expected_blake3,
        "short": short,
        "length": r.length,
        "chunk_size": r.chunk_size,
        "chunks_total": r.chunks_total,
        "chunks_done": r.chunks_done,
        "bytes_done": r.bytes_done,
        "in_flight_chunks": r.in_flight_chunks,
        "demanded_chunks": r.demanded_chunks,
        "damaged_chunks": r.damaged_chunks,
        "state": r.state,
        "error": r.error,
        "bytes_per_second": (r.bytes_per_second * 10.0).round() / 10.0,
        "eta_seconds": eta,
        "readers": r.readers,
        "origin_bytes": r.origin_bytes,
        "filler_pid": r.filler_pid,
    })
}

/// `[[first, end, code], ...]` for the chunks in `which` (all when None).
fn cells(e: &Entry, which: Option<&roaring::RoaringBitmap>) -> Value {
    let mut out: Vec<[u32; 3]> = Vec::new();
    let mut push = |c: u32| {
        let code = u32::from(cell_code(&e.map, c));
        match out.last_mut() {
            Some(last) if last[1] == c && last[2] == code => last[1] = c + 1,
            _ => out.push([c, c + 1, code]),
        }
    };
    match which {
        Some(bits) => bits
            .iter()
            .filter(|&c| c < e.map.chunk_count)
            .for_each(&mut push),
        None if e.map.chunk_count == 0 => {}
        None => {
            // Runs of the same state, without visiting every chunk of a
            // uniform map one by one more than once.
            (0..e.map.chunk_count).for_each(&mut push)
        }
    }
    json!(out)
}

fn store_json(st: &HubState) -> Value {
    json!({
        "dir": st.totals.dir,
        "bytes": st.totals.bytes,
        "objects": st.totals.objects,
        "free_bytes": st.totals.free_bytes,
        "max_bytes": st.totals.max_bytes,
    })
}

fn mirrors_json(st: &HubState, mirrors: &[(String, String)]) -> Value {
    let list: Vec<Value> = mirrors
        .iter()
        .map(|(name, base)| {
            let errors: Vec<Value> = st
                .errors
                .get(name)
                .into_iter()
                .flatten()
                .map(|e| json!({"unix": e.unix, "url": e.url, "error": e.error}))
                .collect();
            json!({"name": name, "base": base, "errors": errors})
        })
        .collect();
    json!(list)
}

/// The `/status` document; with `maps`, every object carries its map.
pub(super) fn status(st: &HubState, mirrors: &[(String, String)], maps: bool) -> Value {
    let objects: Vec<Value> = st
        .objects
        .values()
        .map(|e| {
            let mut v = record_json(&e.record);
            if maps {
                v["map"] = cells(e, None);
            }
            v
        })
        .collect();
    json!({
        "seq": st.seq,
        "store": store_json(st),
        "mirrors": mirrors_json(st, mirrors),
        "objects": objects,
    })
}

fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The `snapshot` event (first event of every `/events` stream).
pub(super) fn snapshot_event(st: &HubState, mirrors: &[(String, String)]) -> Bytes {
    let mut s = String::from("retry: 2000\n");
    s.push_str(&String::from_utf8_lossy(&frame(
        "snapshot",
        &status(st, mirrors, true),
    )));
    Bytes::from(s)
}

/// The `delta` event of what changed since the last one (None: nothing),
/// clearing the change marks.
pub(super) fn delta(st: &mut HubState, mirrors: &[(String, String)]) -> Option<Bytes> {
    let mut objects = Vec::new();
    for e in st.objects.values_mut() {
        if !e.dirty && e.changed.is_empty() {
            continue;
        }
        let mut v = record_json(&e.record);
        if !e.changed.is_empty() {
            v["cells"] = cells(e, Some(&e.changed));
        }
        objects.push(v);
        e.dirty = false;
        e.changed.clear();
    }
    if objects.is_empty() && st.removed.is_empty() && !st.totals_dirty && !st.errors_dirty {
        return None;
    }
    st.seq += 1;
    let mut v = json!({"seq": st.seq, "objects": objects});
    if !st.removed.is_empty() {
        v["removed"] = json!(std::mem::take(&mut st.removed));
    }
    if st.totals_dirty {
        v["store"] = store_json(st);
        st.totals_dirty = false;
    }
    if st.errors_dirty {
        v["mirrors"] = mirrors_json(st, mirrors);
        st.errors_dirty = false;
    }
    Some(frame("delta", &v))
}
