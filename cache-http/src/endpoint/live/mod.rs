//! The live status of the endpoint: `GET /` (a page with every object and
//! the chunk map of the selected one), `GET /events` (server-sent events)
//! and `GET /status` (the same data as one JSON document).
//!
//! ## Model
//!
//! One `Live` hub per endpoint keeps a view of the store: a record per
//! object (name, size, state, progress, rate, ETA, readers, bytes taken
//! from the origin) and its chunk map. Objects this endpoint fills or
//! serves, and objects another process fills, are *watched*: the hub
//! holds their [`cache_core::Object::chunk_feed`] and, every
//! [`TICK`], drains the chunk changes that arrived (O(changes), nothing
//! per chunk of the object), folds them into the map and encodes **one**
//! `delta` event: the changed chunk ranges with their new state, and the
//! records that changed. That event, already encoded, is broadcast to every
//! `/events` client, so an idle client costs a parked task and a delta
//! costs a copy of a few hundred bytes per client. The store directory is
//! listed at most once every [`LIST_EVERY`] (new objects, removed ones,
//! disk totals), once for all clients: a `/status` request or a new
//! `/events` client answers from that listing while it is fresh, so a
//! burst of requests costs no index reads (objects this endpoint serves
//! are watched and always current). A client that falls behind the broadcast (more
//! than [`FRAME_BACKLOG`] events) gets a fresh snapshot instead of a
//! growing queue.
//!
//! ## `/events`
//!
//! `text/event-stream`. The first event is `snapshot`: the `/status`
//! document (below) whose objects also carry `"map"`, the chunk map as
//! run-length ranges `[[first, end, code], ...]` (end exclusive). Later
//! events are `delta`:
//!
//! ```json
//! {"seq":42,"objects":[{"key":"…","state":"filling","chunks_done":17,…,
//!   "cells":[[17,18,3],[20,24,1]]}],"removed":["key"],"store":{…},"mirrors":[…]}
//! ```
//!
//! `objects` holds the full record of every object that changed, `cells`
//! the chunk ranges whose state changed (omitted when none), `store` and
//! `mirrors` appear when they changed. Cell codes: `0` missing, `1` in
//! flight (requested from the origin), `2` demanded (a reader waits for
//! it), `3` complete, `4` damaged (found bad by verify, not refetched
//! yet). A comment line is sent every 15 s to keep proxies from closing an
//! idle stream; `retry: 2000` makes browsers reconnect within 2 s.
//!
//! ## `/status`
//!
//! ```json
//! {"seq":42,
//!  "store":{"dir":"/…","bytes":1073741824,"objects":2,"free_bytes":5e10,"max_bytes":null},
//!  "mirrors":[{"name":"images","base":"http://…/","errors":[{"unix":1764300000,"url":"http://…","error":"…"}]}],
//!  "objects":[{"key":"…","url":"http://…/vm-disk.raw","name":"vm-disk.raw",
//!    "blake3":null,"expected_blake3":null,"short":"cb066998ec3dd097",
//!    "length":1073741824,"chunk_size":1048576,"chunks_total":1024,
//!    "chunks_done":306,"bytes_done":320864256,"in_flight_chunks":16,
//!    "demanded_chunks":1,"damaged_chunks":0,"state":"filling","error":null,
//!    "bytes_per_second":1.6e8,"eta_seconds":4.4,"readers":2,
//!    "origin_bytes":320864256,"filler_pid":null}]}
//! ```
//!
//! * `state`: `filling` (this process downloads it), `following` (another
//!   process downloads it; `filler_pid` names it when known), `complete`,
//!   `damaged` (verification cleared chunks that are not refetched yet),
//!   `failed` (the last fill failed; `error` says why) or `paused`
//!   (incomplete, nobody downloads it).
//! * `short`: the first 16 hex digits of the BLAKE3 (verified, else
//!   expected), what `blockcache ls` shows; `name`: the file name of the
//!   URL.
//! * `bytes_per_second`: smoothed rate of the last seconds; `eta_seconds`:
//!   remaining bytes at that rate (`null` when unknown).
//! * `readers`: readers of this endpoint streaming from it now.
//! * `origin_bytes`: body bytes this endpoint received from the origin for
//!   it since it started (`null` when it fetched nothing): equal to
//!   `length` for an object downloaded once.
//! * `store.max_bytes`: the store's size limit when one is configured
//!   (`null`: none; `blockcache gc --max-size` trims on demand).
//! * `mirrors[].errors`: the last upstream errors of that mirror (at most
//!   8, newest last); secrets are never part of them (URLs are the
//!   mirror's, without credentials).

mod json;
mod origin;
pub(crate) mod page;
mod sse;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cache_core::{ChunkChange, ChunkMap, FillState, Object, ObjectSummary, Store};
use parking_lot::Mutex;
use roaring::RoaringBitmap;
use tokio::sync::{broadcast, Notify};

pub(crate) use origin::counting;
pub(crate) use sse::events_response;

/// How often the hub folds chunk changes into a delta.
pub const TICK: Duration = Duration::from_millis(100);
/// How often the store directory is listed.
pub const LIST_EVERY: Duration = Duration::from_secs(2);
/// Encoded events a client may fall behind before it is resynced.
pub const FRAME_BACKLOG: usize = 256;
/// Upstream errors kept per mirror.
const MAX_ERRORS: usize = 8;

/// Cell codes of the chunk map (see the module docs).
pub(crate) mod code {
    pub const MISSING: u8 = 0;
    pub const IN_FLIGHT: u8 = 1;
    pub const DEMANDED: u8 = 2;
    pub const COMPLETE: u8 = 3;
    pub const DAMAGED: u8 = 4;
}

pub(crate) fn cell_code(map: &ChunkMap, c: u32) -> u8 {
    if map.done.contains(c) {
        code::COMPLETE
    } else if map.damaged.contains(c) {
        code::DAMAGED
    } else if map.demanded.contains(c) {
        code::DEMANDED
    } else if map.in_flight.contains(c) {
        code::IN_FLIGHT
    } else {
        code::MISSING
    }
}

/// The record of one object, as sent to pages.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub key: String,
    pub url: String,
    pub blake3: Option<String>,
    pub expected_blake3: Option<String>,
    pub length: u64,
    pub chunk_size: u32,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_done: u64,
    pub in_flight_chunks: u64,
    pub demanded_chunks: u64,
    pub damaged_chunks: u64,
    pub state: &'static str,
    pub error: Option<String>,
    pub bytes_per_second: f64,
    pub readers: usize,
    pub origin_bytes: Option<u64>,
    pub filler_pid: Option<u32>,
}

/// Store totals, as sent to pages.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub dir: String,
    pub bytes: u64,
    pub objects: usize,
    pub free_bytes: Option<u64>,
    /// The endpoint's size limit (`max_size`), if any.
    pub max_bytes: Option<u64>,
}

/// One upstream error of a mirror.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UpstreamError {
    pub unix: u64,
    pub url: String,
    pub error: String,
}

struct Watched {
    object: Object,
    rx: broadcast::Receiver<ChunkChange>,
}

struct Entry {
    record: Record,
    map: ChunkMap,
    watched: Option<Watched>,
    /// Chunks whose state changed since the last delta.
    changed: RoaringBitmap,
    /// The record differs from the one last sent.
    dirty: bool,
    /// Last rate sample: time and bytes done.
    sample: (Instant, u64),
}

#[derive(Default)]
struct HubState {
    seq: u64,
    objects: BTreeMap<String, Entry>,
    removed: Vec<String>,
    totals: Totals,
    totals_dirty: bool,
    errors: BTreeMap<String, VecDeque<UpstreamError>>,
    errors_dirty: bool,
}

/// The live-status hub of one endpoint (see the module docs).
pub(crate) struct Live {
    store: Store,
    /// The size limit shown with the store totals.
    max_bytes: Option<u64>,
    /// Mirror name and base URL (replaced when the endpoint reloads).
    mirrors: parking_lot::RwLock<Vec<(String, String)>>,
    state: Mutex<HubState>,
    frames: broadcast::Sender<Bytes>,
    wake: Arc<Notify>,
    started: AtomicBool,
    closed: tokio::sync::watch::Sender<bool>,
    /// Origin body bytes per source identity (URL).
    origin_bytes: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Objects to watch from the next tick on.
    pending: Mutex<Vec<Object>>,
    /// When the store was last listed; held across a listing, so that
    /// concurrent requests wait for one listing instead of each making one.
    listed_at: tokio::sync::Mutex<Option<Instant>>,
}

impl Live {
    pub(crate) fn new(store: Store, max_bytes: Option<u64>) -> Live {
        Live {
            store,
            max_bytes,
            mirrors: Default::default(),
            state: Mutex::new(HubState::default()),
            frames: broadcast::channel(FRAME_BACKLOG).0,
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            closed: tokio::sync::watch::channel(false).0,
            origin_bytes: Mutex::default(),
            pending: Mutex::default(),
            listed_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Shows `mirrors` (name, base URL) from now on; errors recorded for
    /// a mirror that is gone are dropped with it.
    pub(crate) fn set_mirrors(&self, mut mirrors: Vec<(String, String)>) {
        mirrors.sort();
        let mut st = self.state.lock();
        st.errors
            .retain(|name, _| mirrors.iter().any(|(n, _)| n == name));
        st.errors_dirty = true;
        *self.mirrors.write() = mirrors;
    }

    /// Ends every `/events` stream (the endpoint shuts down).
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Watches `object` (the endpoint is about to serve or fill it) from
    /// the next tick on.
    ///
    /// Deliberately only a push: waking or spawning a task here would
    /// reorder the runtime's queue on the request's path, and the fill
    /// this request just started could then claim its first requests
    /// before the request's reader has said which chunk it waits for
    /// (wasting a cut request's bytes).
    pub(crate) fn track(&self, object: &Object) {
        let mut pending = self.pending.lock();
        // Once per object and tick: under wrk every request of one object
        // queued a handle, and the tick watched it again thousands of times.
        if !pending.iter().any(|o| o.key() == object.key()) {
            pending.push(object.clone());
        }
    }

    /// Starts watching the objects [`Live::track`] queued.
    fn watch_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.lock());
        for object in pending {
            self.watch(&object);
        }
    }

    fn watch(&self, object: &Object) {
        {
            let mut st = self.state.lock();
            let entry = st.objects.get(object.key());
            if entry.is_some_and(|e| e.watched.is_some()) {
                return;
            }
            let (map, rx) = object.chunk_feed();
            let record = self.record_of_object(object, &map, None);
            let mut changed = RoaringBitmap::new();
            changed.insert_range(0..map.chunk_count);
            let sample = (Instant::now(), record.bytes_done);
            st.objects.insert(
                object.key().to_owned(),
                Entry {
                    record,
                    map,
                    watched: Some(Watched {
                        object: object.clone(),
                        rx,
                    }),
                    changed,
                    dirty: true,
                    sample,
                },
            );
        }
    }

    /// Records an upstream error for `url` (shown under its mirror).
    pub(crate) fn upstream_error(&self, url: &str, error: &str) {
        let Some(name) = self.mirror_of(url) else {
            return;
        };
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut st = self.state.lock();
        let list = st.errors.entry(name).or_default();
        if list.len() == MAX_ERRORS {
            list.pop_front();
        }
        list.push_back(UpstreamError {
            unix,
            url: url.to_owned(),
            error: error.to_owned(),
        });
        st.errors_dirty = true;
    }

    fn mirror_of(&self, url: &str) -> Option<String> {
        self.mirrors
            .read()
            .iter()
            .find(|(_, base)| url.starts_with(base.as_str()))
            .map(|(n, _)| n.clone())
    }

    /// The counter of origin bytes for `identity`.
    fn origin_counter(&self, identity: &str) -> Arc<AtomicU64> {
        self.origin_bytes
            .lock()
            .entry(identity.to_owned())
            .or_default()
            .clone()
    }

    fn origin_of(&self, url: &str) -> Option<u64> {
        self.origin_bytes
            .lock()
            .get(url)
            .map(|c| c.load(Ordering::Relaxed))
    }

    /// Starts the hub's task (once; needs a tokio runtime).
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(live) = weak.upgrade() else { return };
                if *live.closed.borrow() {
                    return;
                }
                let idle = live.frames.receiver_count() == 0;
                if !idle {
                    live.refresh_list().await;
                }
                live.tick();
                let wake = live.wake.clone();
                drop(live);
                if idle {
                    // Nobody watches: wait for a client or a new object.
                    let _ = tokio::time::timeout(LIST_EVERY, wake.notified()).await;
                }
            }
        });
    }

    /// Lists the store (blocking I/O on a blocking thread) and merges it,
    /// unless it was listed less than [`LIST_EVERY`] ago.
    async fn refresh_list(self: &Arc<Self>) {
        let mut listed_at = self.listed_at.lock().await;
        if listed_at.is_some_and(|t| t.elapsed() < LIST_EVERY) {
            return;
        }
        // Listing, and re-reading the bitmaps of objects another process
        // changed, read files: the whole merge runs on a blocking thread.
        let live = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let Ok(list) = live.store.list() else { return };
            let free = free_bytes(live.store.dir());
            tracing::debug!(
                target: "blockcache::status",
                objects = list.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "listed the store"
            );
            live.merge_list(list, free);
        })
        .await;
        *listed_at = Some(Instant::now());
    }

    /// Merges a listing: new objects, removed ones, totals; starts
    /// watching objects another process fills. Reads bitmaps and opens
    /// objects: call it on a blocking thread.
    fn merge_list(self: &Arc<Self>, list: Vec<ObjectSummary>, free: Option<u64>) {
        let mut to_watch = Vec::new();
        {
            let mut st = self.state.lock();
            let totals = Totals {
                dir: self.store.dir().display().to_string(),
                bytes: list.iter().map(|s| s.disk_bytes).sum(),
                objects: list.len(),
                free_bytes: free,
                max_bytes: self.max_bytes,
            };
            if totals != st.totals {
                st.totals = totals;
                st.totals_dirty = true;
            }
            let keys: std::collections::HashSet<&str> =
                list.iter().map(|s| s.info.key.as_str()).collect();
            let gone: Vec<String> = st
                .objects
                .keys()
                .filter(|k| !keys.contains(k.as_str()))
                .cloned()
                .collect();
            for k in gone {
                st.objects.remove(&k);
                st.removed.push(k);
            }
            for s in &list {
                let key = &s.info.key;
                if st.objects.get(key).is_some_and(|e| e.watched.is_some()) {
                    continue;
                }
                if s.state.is_filling() {
                    to_watch.push(key.clone());
                }
                let known_done = st.objects.get(key).map(|e| e.record.chunks_done);
                let mut record = self.record_of_summary(s);
                if let Some(e) = st.objects.get_mut(key) {
                    record.bytes_per_second = 0.0;
                    if e.record != record {
                        e.record = record;
                        e.dirty = true;
                    }
                    if known_done == Some(s.chunks_done) {
                        continue;
                    }
                } else {
                    st.objects.insert(
                        key.clone(),
                        Entry {
                            sample: (Instant::now(), record.bytes_done),
                            record,
                            map: ChunkMap::default(),
                            watched: None,
                            changed: RoaringBitmap::new(),
                            dirty: true,
                        },
                    );
                }
                // Not watched and its chunks changed: re-read its bitmap.
                let map = match self.store.stored_chunk_map(key) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if let Some(e) = st.objects.get_mut(key) {
                    let mut changed = map.done.clone() ^ &e.map.done;
                    if e.map.chunk_count != map.chunk_count {
                        changed.insert_range(0..map.chunk_count);
                    }
                    e.changed |= changed;
                    e.map = map;
                }
            }
        }
        for key in to_watch {
            if let Ok(o) = self.store.open_ref(&key) {
                self.watch(&o);
            }
        }
    }

    /// Lets go of watched objects that neither fill nor have readers, at
    /// once (the size limit wants to evict them; the next tick would).
    pub(crate) fn release_idle(&self) {
        let mut st = self.state.lock();
        for e in st.objects.values_mut() {
            let idle = e.watched.as_ref().is_some_and(|w| {
                w.object.readers() == 0
                    && !matches!(
                        w.object.progress().state,
                        FillState::Filling | FillState::Following
                    )
            });
            if idle {
                e.watched = None;
            }
        }
    }

    /// Folds what arrived since the last tick into one delta event.
    fn tick(&self) {
        self.watch_pending();
        let mut st = self.state.lock();
        let now = Instant::now();
        let mut finished = Vec::new();
        for (key, e) in st.objects.iter_mut() {
            let Some(w) = e.watched.as_mut() else {
                continue;
            };
            loop {
                match w.rx.try_recv() {
                    Ok(change) => {
                        mark_changed(&mut e.changed, &change);
                        e.map.apply(&change);
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        let (map, rx) = w.object.chunk_feed();
                        e.changed.insert_range(0..map.chunk_count);
                        e.map = map;
                        w.rx = rx;
                    }
                    Err(_) => break,
                }
            }
            let p = w.object.progress();
            let elapsed = now.duration_since(e.sample.0);
            let mut rate = e.record.bytes_per_second;
            if elapsed >= Duration::from_millis(500) {
                let instant =
                    p.bytes_done.saturating_sub(e.sample.1) as f64 / elapsed.as_secs_f64();
                // Smoothed over a few seconds, so the ETA does not jump.
                rate = if rate == 0.0 {
                    instant
                } else {
                    0.6 * rate + 0.4 * instant
                };
                e.sample = (now, p.bytes_done);
            }
            let object = w.object.clone();
            let mut record = self.record_of_object(&object, &e.map, Some(rate));
            if !matches!(p.state, FillState::Filling | FillState::Following) {
                record.bytes_per_second = 0.0;
                if object.readers() == 0 {
                    finished.push(key.clone());
                }
            }
            if record != e.record {
                e.record = record;
                e.dirty = true;
            }
        }
        for key in finished {
            if let Some(e) = st.objects.get_mut(&key) {
                // Release the handle: status must not keep objects busy.
                e.watched = None;
            }
        }
        if self.frames.receiver_count() == 0 {
            // Nobody listens: keep the state, send nothing.
            for e in st.objects.values_mut() {
                e.changed.clear();
                e.dirty = false;
            }
            st.removed.clear();
            st.totals_dirty = false;
            st.errors_dirty = false;
            return;
        }
        if let Some(frame) = json::delta(&mut st, &self.mirrors.read()) {
            let _ = self.frames.send(frame);
        }
    }

    /// A snapshot event and a receiver of the deltas after it.
    pub(crate) async fn subscribe(self: &Arc<Self>) -> (Bytes, broadcast::Receiver<Bytes>) {
        self.ensure_started();
        self.refresh_list().await;
        self.tick();
        let st = self.state.lock();
        let rx = self.frames.subscribe();
        let snapshot = json::snapshot_event(&st, &self.mirrors.read());
        drop(st);
        self.wake.notify_one();
        (snapshot, rx)
    }

    /// The `/status` document.
    pub(crate) async fn status_json(self: &Arc<Self>) -> String {
        self.ensure_started();
        self.refresh_list().await;
        self.tick();
        let st = self.state.lock();
        json::status(&st, &self.mirrors.read(), false).to_string()
    }

    fn record_of_object(&self, o: &Object, map: &ChunkMap, rate: Option<f64>) -> Record {
        let info = o.info();
        let p = o.progress();
        let complete = p.state == FillState::Complete;
        let state = match &p.state {
            FillState::Complete => "complete",
            FillState::Failed(_) => "failed",
            _ if !map.damaged.is_empty() => "damaged",
            FillState::Filling => "filling",
            FillState::Following => "following",
            FillState::Idle if o.filler_pid().is_some() => "following",
            FillState::Idle => "paused",
        };
        Record {
            chunks_total: p.chunks_total,
            chunks_done: p.chunks_done,
            bytes_done: p.bytes_done,
            in_flight_chunks: map.in_flight.len(),
            demanded_chunks: map.demanded.len(),
            damaged_chunks: map.damaged.len(),
            state,
            error: match &p.state {
                FillState::Failed(e) => Some(e.clone()),
                _ => None,
            },
            bytes_per_second: if complete { 0.0 } else { rate.unwrap_or(0.0) },
            readers: o.readers(),
            filler_pid: if complete { None } else { o.filler_pid() },
            ..self.record_of_info(&info)
        }
    }

    /// The record of an object nobody here uses, from its static facts.
    fn record_of_info(&self, info: &cache_core::ObjectInfo) -> Record {
        let hex = |verified: bool| {
            info.blake3
                .filter(|_| info.verified == verified)
                .map(|h| h.to_hex().to_string())
        };
        Record {
            key: info.key.clone(),
            url: info.source.clone(),
            blake3: hex(true),
            expected_blake3: hex(false),
            length: info.len,
            chunk_size: info.chunk_size,
            chunks_total: 0,
            chunks_done: 0,
            bytes_done: 0,
            in_flight_chunks: 0,
            demanded_chunks: 0,
            damaged_chunks: 0,
            state: "paused",
            error: None,
            bytes_per_second: 0.0,
            readers: 0,
            origin_bytes: self.origin_of(&info.source),
            filler_pid: None,
        }
    }

    fn record_of_summary(&self, s: &ObjectSummary) -> Record {
        Record {
            chunks_total: s.chunks_total,
            chunks_done: s.chunks_done,
            bytes_done: s.bytes_done,
            state: match s.state {
                cache_core::ObjectState::Complete => "complete",
                s if s.is_filling() => "following",
                _ => "paused",
            },
            ..self.record_of_info(&s.info)
        }
    }
}

/// Marks the chunks a change touches.
fn mark_changed(changed: &mut RoaringBitmap, change: &ChunkChange) {
    match change {
        ChunkChange::Done(r)
        | ChunkChange::InFlight(r)
        | ChunkChange::Released(r)
        | ChunkChange::Withdrawn(r) => {
            changed.insert_range(r.clone());
        }
        ChunkChange::Demanded(c) | ChunkChange::Undemanded(c) | ChunkChange::Damaged(c) => {
            changed.insert(*c);
        }
        ChunkChange::State => {}
    }
}

/// Free bytes of the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `s` a valid,
    // writable statvfs the call fills in.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// Name shown for an object: the file name of its URL.
pub(crate) fn name_of_url(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(url)
}
