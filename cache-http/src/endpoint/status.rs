//! `/status`: every object of the store as JSON, with live progress,
//! readers and transfer rate for the objects this endpoint serves.
//!
//! ```json
//! {"objects":[{"key":"…","url":"http://…","length":123,"chunk_size":1048576,
//!   "chunks_done":3,"chunks_total":4,"bytes_done":3145728,
//!   "bytes_per_second":1.2e8,"state":"filling","readers":2,"blake3":null}]}
//! ```
//!
//! `state` is `filling` (this or another process fills it), `complete`,
//! `failed` (the last fill failed; `error` says why) or `paused`
//! (incomplete and nobody fills it). `bytes_per_second` is derived from the
//! difference between two progress samples at least half a second apart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_core::{FillState, Object};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::routes::App;

/// Minimum spacing of two rate samples.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

struct Tracked {
    object: Object,
    /// Last progress sample: time and bytes done.
    sample: (Instant, u64),
    rate: f64,
}

/// The objects this endpoint has served recently, for live status. A
/// handle is kept while the object fills or is read, and released once
/// nobody reads it and it is complete, failed or paused (so eviction is not
/// blocked by status bookkeeping).
#[derive(Default)]
pub(crate) struct Tracker {
    objects: Mutex<HashMap<String, Tracked>>,
}

fn idle_done(t: &Tracked) -> bool {
    let state = t.object.progress().state;
    t.object.readers() == 0
        && matches!(
            state,
            FillState::Complete | FillState::Failed(_) | FillState::Idle
        )
}

impl Tracker {
    /// Remembers `object` (a request is about to read it).
    pub(crate) fn track(&self, object: &Object) {
        let mut map = self.objects.lock();
        map.retain(|_, t| !idle_done(t));
        map.entry(object.key().to_owned())
            .or_insert_with(|| Tracked {
                object: object.clone(),
                sample: (Instant::now(), object.progress().bytes_done),
                rate: 0.0,
            });
    }

    /// Lets go of objects nobody reads any more (so eviction may take
    /// them).
    pub(crate) fn prune(&self) {
        self.objects.lock().retain(|_, t| !idle_done(t));
    }

    /// Number of fills this process runs for the objects it serves, from
    /// memory (a scrape must not read every object's index).
    pub(crate) fn active_fills(&self) -> usize {
        self.objects
            .lock()
            .values()
            .filter(|t| t.object.progress().state == FillState::Filling)
            .count()
    }
}

/// The `/status` document.
pub(crate) fn render(app: &App) -> cache_core::Result<String> {
    let list = app.store.list()?;
    let mut tracked = app.tracker.objects.lock();
    let now = Instant::now();
    let mut objects = Vec::with_capacity(list.len());
    for s in list {
        let info = &s.info;
        let mut v = json!({
            "key": info.key,
            "url": info.source,
            "length": info.len,
            "chunk_size": info.chunk_size,
            "chunks_done": s.chunks_done,
            "chunks_total": s.chunks_total,
            "bytes_done": s.bytes_done,
            "bytes_per_second": 0.0,
            "state": match s.state { "complete" => "complete", "filling" => "filling", _ => "paused" },
            "readers": 0,
            "blake3": info.blake3.filter(|_| info.verified).map(|h| h.to_hex().to_string()),
            "expected_blake3": info.blake3.filter(|_| !info.verified).map(|h| h.to_hex().to_string()),
        });
        if let Some(t) = tracked.get_mut(&info.key) {
            let p = t.object.progress();
            let elapsed = now.duration_since(t.sample.0);
            if elapsed >= MIN_SAMPLE {
                let delta = p.bytes_done.saturating_sub(t.sample.1);
                t.rate = delta as f64 / elapsed.as_secs_f64();
                t.sample = (now, p.bytes_done);
            }
            let state = match &p.state {
                FillState::Filling | FillState::Following => "filling",
                FillState::Complete => "complete",
                FillState::Failed(_) => "failed",
                FillState::Idle => "paused",
            };
            v["state"] = Value::from(state);
            if let FillState::Failed(e) = &p.state {
                v["error"] = Value::from(e.as_str());
            }
            v["chunks_done"] = Value::from(p.chunks_done);
            v["bytes_done"] = Value::from(p.bytes_done);
            v["bytes_per_second"] = Value::from(if state == "filling" { t.rate } else { 0.0 });
            v["readers"] = Value::from(t.object.readers());
            if let Some(h) = t.object.blake3() {
                v["blake3"] = Value::from(h.to_hex().to_string());
            }
        }
        objects.push(v);
    }
    tracked.retain(|_, t| !idle_done(t));
    Ok(json!({ "objects": objects }).to_string())
}
