//! Objects: one data file plus its chunk index, shared by every reader in
//! the process and filled by at most one filler.
//!
//! An [`Object`] is a cheap handle. Its shared state holds the bitmap of
//! completed chunks, the demand queue and, per missing chunk, the readers
//! waiting for it. A reader that finds its chunk missing registers a waker
//! for *that* chunk and a demand for it, then sleeps; the filler's commit of
//! the chunk wakes exactly those readers (no polling, no timer).

mod demand;
mod follow;
mod read;
mod remote_demand;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use tokio::sync::{oneshot, watch, Notify};

use crate::data::DataFile;
use crate::error::{Error, Result};
use crate::fill::FillPlan;
use crate::index::{IndexHeader, Record};
use crate::store::StoreShared;

pub(crate) use demand::DemandQueue;
pub use read::ObjectReader;
pub(crate) use remote_demand::read_remote_demand;
pub use verify::VerifyReport;

/// What an object's fill is doing, as seen from this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillState {
    /// Incomplete and nobody is filling it.
    Idle,
    /// This process is filling it.
    Filling,
    /// Another process is filling it; this one follows its index.
    Following,
    /// Every chunk is present and the BLAKE3 hash is known.
    Complete,
    /// The last fill failed with this error.
    Failed(String),
}

impl FillState {
    /// A short lowercase name (`idle`, `filling`, ...), for status output.
    pub fn name(&self) -> &'static str {
        match self {
            FillState::Idle => "idle",
            FillState::Filling => "filling",
            FillState::Following => "following",
            FillState::Complete => "complete",
            FillState::Failed(_) => "failed",
        }
    }
}

/// A snapshot of an object's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub len: u64,
    pub chunk_size: u32,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_done: u64,
    pub state: FillState,
}

/// Static facts about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key of the object in the store (its directory name).
    pub key: String,
    /// Source identity (URL, or `import:` for imported files).
    pub source: String,
    /// Source validator the bytes belong to.
    pub validator: String,
    pub len: u64,
    pub chunk_size: u32,
    /// The object's BLAKE3 hash when known (complete), else the expected
    /// hash when one was given up front.
    pub blake3: Option<blake3::Hash>,
    /// Whether `blake3` is verified (the object is complete).
    pub verified: bool,
}

#[derive(Debug)]
pub(crate) enum Phase {
    Idle,
    Filling,
    Following,
    Complete,
    Failed(Arc<Error>),
}

pub(crate) struct State {
    pub(crate) done: RoaringBitmap,
    pub(crate) root: Option<[u8; 32]>,
    pub(crate) phase: Phase,
    pub(crate) demand: DemandQueue,
    /// How to fill this object, once a fill is wanted (set by a fetch).
    pub(crate) plan: Option<FillPlan>,
    /// A follower task is watching the index for another process's commits.
    pub(crate) watching: bool,
    waiters: HashMap<u32, Vec<oneshot::Sender<()>>>,
}

pub(crate) struct ObjectShared {
    pub(crate) key: String,
    pub(crate) dir: PathBuf,
    pub(crate) header: IndexHeader,
    pub(crate) data: DataFile,
    pub(crate) state: Mutex<State>,
    pub(crate) progress: watch::Sender<Progress>,
    /// Wakes the filler: a demand arrived or the last handle went away.
    pub(crate) filler_wake: Notify,
    pub(crate) store: Arc<StoreShared>,
    handles: AtomicUsize,
    readers: AtomicUsize,
    /// This object itself, for tasks spawned from `&self` methods.
    pub(crate) me: std::sync::Weak<ObjectShared>,
    /// Where this process publishes its readers' demands while another
    /// process fills the object.
    remote_demand: Mutex<Option<remote_demand::DemandFile>>,
}

/// A handle to an object of the store. Cheap to clone.
///
/// ```no_run
/// # async fn demo(store: cache_core::Store, src: std::sync::Arc<dyn cache_core::Source>) -> cache_core::Result<()> {
/// let object = store.fetch(src, Default::default()).await?;
/// let head = object.read_at(0, 4096).await?; // waits for chunk 0 only
/// # let _ = head; Ok(()) }
/// ```
pub struct Object {
    pub(crate) shared: Arc<ObjectShared>,
}

impl Clone for Object {
    fn clone(&self) -> Self {
        Object::from_shared(self.shared.clone())
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.filler_wake.notify_one();
        }
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("key", &self.shared.key)
            .field("len", &self.shared.header.len)
            .finish_non_exhaustive()
    }
}

impl ObjectShared {
    pub(crate) fn new(
        key: String,
        dir: PathBuf,
        header: IndexHeader,
        data: DataFile,
        done: RoaringBitmap,
        root: Option<[u8; 32]>,
        store: Arc<StoreShared>,
    ) -> Arc<ObjectShared> {
        let phase = if root.is_some() {
            Phase::Complete
        } else {
            Phase::Idle
        };
        let state = State {
            done,
            root,
            phase,
            demand: DemandQueue::default(),
            plan: None,
            watching: false,
            waiters: HashMap::new(),
        };
        let (progress, _) = watch::channel(progress_of(&header, &state));
        Arc::new_cyclic(|me| ObjectShared {
            me: me.clone(),
            key,
            dir,
            header,
            data,
            state: Mutex::new(state),
            progress,
            filler_wake: Notify::new(),
            store,
            handles: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
            remote_demand: Mutex::new(None),
        })
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.dir.join(crate::store::INDEX_FILE)
    }

    /// Number of live [`Object`] handles.
    pub(crate) fn handles(&self) -> usize {
        self.handles.load(Ordering::Acquire)
    }

    pub(crate) fn chunk_len(&self, c: u32) -> u64 {
        let r = self.header.chunk_range(c);
        r.end - r.start
    }

    /// Marks chunk `c` complete and wakes the readers waiting for it.
    pub(crate) fn mark_done(&self, c: u32) {
        // One lock per commit: the progress is taken with the bit.
        let (waiters, progress) = {
            let mut st = self.state.lock();
            if !st.done.insert(c) {
                return;
            }
            (st.waiters.remove(&c), progress_of(&self.header, &st))
        };
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
        self.progress.send_replace(progress);
    }

    /// Applies records another process committed to the index.
    pub(crate) fn apply_records(&self, records: &[Record]) {
        let mut woken = Vec::new();
        {
            let mut st = self.state.lock();
            for r in records {
                match *r {
                    Record::Chunk { index, .. } => {
                        if st.done.insert(index) {
                            if let Some(w) = st.waiters.remove(&index) {
                                woken.extend(w);
                            }
                        }
                    }
                    Record::Clear { index } => {
                        st.done.remove(index);
                        st.root = None;
                    }
                    Record::Root { hash } => {
                        st.root = Some(hash);
                        if st.done.len() == u64::from(self.header.chunk_count()) {
                            st.phase = Phase::Complete;
                        }
                    }
                }
            }
        }
        for w in woken {
            let _ = w.send(());
        }
        self.publish_progress();
    }

    /// Ends the current phase with `phase`, waking every waiter so it
    /// re-checks (a failed fill fails its readers; a completed one serves
    /// them).
    pub(crate) fn set_phase(&self, phase: Phase) {
        let waiters = {
            let mut st = self.state.lock();
            st.phase = phase;
            std::mem::take(&mut st.waiters)
        };
        drop(waiters);
        self.publish_progress();
    }

    pub(crate) fn publish_progress(&self) {
        let p = {
            let st = self.state.lock();
            progress_of(&self.header, &st)
        };
        self.progress.send_replace(p);
    }

    /// Registers a waiter for chunk `c`, unless it is already done (None).
    /// Fails when the fill failed.
    pub(crate) fn waiter(&self, c: u32) -> Result<Option<oneshot::Receiver<()>>> {
        let mut st = self.state.lock();
        if st.done.contains(c) {
            return Ok(None);
        }
        if let Phase::Failed(e) = &st.phase {
            return Err(Error::FillFailed {
                key: self.key.clone(),
                cause: e.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.entry(c).or_default().push(tx);
        Ok(Some(rx))
    }

    pub(crate) fn is_done(&self, c: u32) -> bool {
        self.state.lock().done.contains(c)
    }
}

fn progress_of(header: &IndexHeader, st: &State) -> Progress {
    let total = u64::from(header.chunk_count());
    let done = st.done.len();
    let cs = u64::from(header.chunk_size);
    let mut bytes = done * cs;
    if done > 0 && st.done.contains(header.chunk_count() - 1) {
        let last = header.chunk_range(header.chunk_count() - 1);
        bytes -= cs - (last.end - last.start);
    }
    let state = match &st.phase {
        Phase::Idle => FillState::Idle,
        Phase::Filling => FillState::Filling,
        Phase::Following => FillState::Following,
        Phase::Complete => FillState::Complete,
        Phase::Failed(e) => FillState::Failed(e.to_string()),
    };
    Progress {
        len: header.len,
        chunk_size: header.chunk_size,
        chunks_done: done,
        chunks_total: total,
        bytes_done: bytes.min(header.len),
        state,
    }
}

impl Object {
    pub(crate) fn from_shared(shared: Arc<ObjectShared>) -> Object {
        shared.handles.fetch_add(1, Ordering::AcqRel);
        Object { shared }
    }

    /// The object's key in the store.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.shared.header.len
    }

    /// Whether the object has no bytes.
    pub fn is_empty(&self) -> bool {
        self.shared.header.len == 0
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.shared.header.chunk_size
    }

    /// Path of the object's data file (its bytes at their own offsets;
    /// only the completed chunks are meaningful until it is complete).
    /// For copying a complete object out, e.g. by reflink.
    pub fn data_path(&self) -> PathBuf {
        self.shared.dir.join(self.shared.header.data_file_name())
    }

    /// Static facts: source, validator, length, hash.
    pub fn info(&self) -> ObjectInfo {
        let root = self.shared.state.lock().root;
        info_of(&self.shared.key, &self.shared.header, root)
    }

    /// The verified BLAKE3 hash, once every chunk is present.
    pub fn blake3(&self) -> Option<blake3::Hash> {
        self.shared.state.lock().root.map(blake3::Hash::from_bytes)
    }

    /// The object's [`Manifest`](crate::Manifest) (its chunk chaining
    /// values), once it is complete; `None` while it is incomplete.
    pub fn manifest(&self) -> Result<Option<crate::Manifest>> {
        if self.blake3().is_none() {
            return Ok(None);
        }
        let path = self.shared.index_path();
        let cvs = crate::index::read_cvs(&path)?;
        let header = &self.shared.header;
        let mut out = Vec::with_capacity(cvs.len());
        for cv in cvs {
            let Some(cv) = cv else {
                // Cleared since (verify found it damaged): incomplete again.
                return Ok(None);
            };
            out.push(cv);
        }
        crate::Manifest::new(header.len, header.chunk_size, out)
            .map(Some)
            .map_err(|e| {
                crate::index::IndexError::Corrupt {
                    path,
                    detail: e.to_string(),
                }
                .into()
            })
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        self.shared.progress.borrow().clone()
    }

    /// A receiver that sees every progress change (for progress bars).
    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    /// Number of readers currently streaming from this object in this
    /// process.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    /// Waits until the object is complete and returns its BLAKE3 hash, or
    /// the error that ended its fill.
    pub async fn wait_complete(&self) -> Result<blake3::Hash> {
        let mut rx = self.watch_progress();
        loop {
            {
                let st = self.shared.state.lock();
                match &st.phase {
                    Phase::Complete => {
                        if let Some(root) = st.root {
                            return Ok(blake3::Hash::from_bytes(root));
                        }
                    }
                    Phase::Failed(e) => {
                        return Err(Error::FillFailed {
                            key: self.shared.key.clone(),
                            cause: e.clone(),
                        })
                    }
                    Phase::Idle => {
                        drop(st);
                        crate::fill::ensure_fill(&self.shared)?;
                    }
                    Phase::Filling | Phase::Following => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::NotFound(self.shared.key.clone()));
            }
        }
    }
}

pub(crate) fn info_of(key: &str, header: &IndexHeader, root: Option<[u8; 32]>) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        source: header.source.clone(),
        validator: header.validator.clone(),
        len: header.len,
        chunk_size: header.chunk_size,
        blake3: root.or(header.expected).map(blake3::Hash::from_bytes),
        verified: root.is_some(),
    }
}
