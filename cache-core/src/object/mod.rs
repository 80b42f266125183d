//! Objects: one data file plus its chunk index, shared by every reader in
//! the process and filled by at most one filler.
//!
//! An [`Object`] is a cheap handle. Its shared state holds the bitmap of
//! completed chunks, the demand queue and, per missing chunk, the readers
//! waiting for it. A reader that finds its chunk missing registers a waker
//! for *that* chunk and a demand for it, then sleeps; the filler's commit of
//! the chunk wakes exactly those readers (no polling, no timer). Who fills
//! the object is its supervisor's decision alone ([`lifecycle`]).

mod demand;
mod digests;
mod feed;
mod host;
mod lifecycle;
mod read;
mod remote_demand;
mod state;
mod wake;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

use crate::data::DataFile;
use crate::error::{Error, Result};
use crate::index::{IndexHeader, IndexState, Record};
use crate::plan::FillPlan;

pub(crate) use demand::DemandQueue;
use feed::ranges;
pub use feed::{ChunkChange, ChunkMap, FEED_CAPACITY};
pub(crate) use host::ObjectHost;
pub use lifecycle::VerifyReport;
pub(crate) use lifecycle::{Command, FillEnd, Launcher, Phase};
pub use read::{BlockingObjectReader, FileSpan, ObjectReader};
pub(crate) use remote_demand::read_remote_demand;
pub use state::ObjectState;
pub(crate) use wake::{Announcer, DemandBell, WakeListener};

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

/// A snapshot of an object's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Object length in bytes.
    pub len: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Chunks complete (visible to readers).
    pub chunks_done: u64,
    /// Chunks the object has.
    pub chunks_total: u64,
    /// Bytes of the complete chunks.
    pub bytes_done: u64,
    /// Who fills the object, if anyone, and how that ended.
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
    /// Object length in bytes.
    pub len: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// The object's BLAKE3 hash, known once it is complete (computed from
    /// its bytes: an expected hash is never shown here).
    pub blake3: Option<blake3::Hash>,
    /// Whether `blake3` is known (the object is complete).
    pub verified: bool,
}

/// Who hands an object its index state (see [`ObjectShared::take_index`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// This process took the writer's lease and replayed the log.
    ByLease,
    /// This process follows another process's fill.
    ByFollower,
}

pub(crate) struct State {
    pub(crate) done: RoaringBitmap,
    pub(crate) root: Option<[u8; 32]>,
    /// Set by the supervisor only (see [`lifecycle`]); read by everyone.
    pub(crate) phase: Phase,
    pub(crate) demand: DemandQueue,
    /// How to fill this object, once a fill is wanted (set by a fetch).
    pub(crate) plan: Option<FillPlan>,
    /// Chunks requested from the source by this process's filler (for the
    /// change feed; the scheduler keeps its own bookkeeping).
    pub(crate) in_flight: RoaringBitmap,
    /// Chunks verification cleared as damaged, until refetched.
    pub(crate) damaged: RoaringBitmap,
    /// Chunks of `done` that the filling process announced as committed
    /// and the index does not record yet (see `wake`): served to readers
    /// here, trusted by nothing durable.
    pub(crate) early: RoaringBitmap,
    waiters: HashMap<u32, Vec<oneshot::Sender<()>>>,
}

pub(crate) struct ObjectShared {
    pub(crate) key: String,
    pub(crate) dir: PathBuf,
    pub(crate) header: IndexHeader,
    /// The data file; replaced (never written over) by a repair, see the
    /// mapping contract in `data.rs`. Take it with [`ObjectShared::data`].
    data: parking_lot::RwLock<Arc<DataFile>>,
    pub(crate) state: Mutex<State>,
    pub(crate) progress: watch::Sender<Progress>,
    /// Changes of the chunk map, for live status ([`Object::chunk_feed`]).
    pub(crate) feed: broadcast::Sender<ChunkChange>,
    /// Wakes the filler: a demand arrived or the last handle went away.
    pub(crate) filler_wake: Notify,
    /// Wakes the supervisor while it follows another process's fill: a
    /// reader started waiting for a chunk, so announcements are taken at
    /// once from then on (see `supervisor`). Shared with the supervisor,
    /// which holds the object only weakly across its waits.
    pub(crate) follower_wake: Arc<Notify>,
    /// The store it lives in (options, names, fills), as the interface
    /// an object needs of it.
    pub(crate) host: Arc<dyn ObjectHost>,
    handles: AtomicUsize,
    readers: AtomicUsize,
    /// A consumer gave up ([`Object::release`]): the fill stops once no
    /// handle and no reader wants the object any more.
    pub(crate) released: AtomicBool,
    /// This object itself, for tasks spawned from `&self` methods.
    pub(crate) me: std::sync::Weak<ObjectShared>,
    /// Where this process publishes its readers' demands while another
    /// process fills the object.
    remote_demand: Mutex<Option<remote_demand::DemandFile>>,
    /// The supervisor's mailbox (see [`lifecycle`]), once one was started.
    mailbox: Mutex<Option<mpsc::UnboundedSender<Command>>>,
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
        host: Arc<dyn ObjectHost>,
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
            in_flight: RoaringBitmap::new(),
            damaged: RoaringBitmap::new(),
            early: RoaringBitmap::new(),
            waiters: HashMap::new(),
        };
        let (progress, _) = watch::channel(progress_of(&header, &state));
        Arc::new_cyclic(|me| ObjectShared {
            me: me.clone(),
            key,
            dir,
            header,
            data: parking_lot::RwLock::new(Arc::new(data)),
            state: Mutex::new(state),
            progress,
            feed: broadcast::channel(FEED_CAPACITY).0,
            filler_wake: Notify::new(),
            follower_wake: Arc::new(Notify::new()),
            host,
            handles: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
            released: AtomicBool::new(false),
            remote_demand: Mutex::new(None),
            mailbox: Mutex::new(None),
        })
    }

    /// The current data file.
    pub(crate) fn data(&self) -> Arc<DataFile> {
        self.data.read().clone()
    }

    /// Moves to a fresh copy of the data file before chunks are rewritten
    /// (a repair): `Bytes` handed out keep the old one. Call under the
    /// fill lock.
    pub(crate) fn fork_data_file(&self) -> Result<()> {
        let mut data = self.data.write();
        *data = Arc::new(data.fork()?);
        Ok(())
    }

    /// Follows a repair another process made: reopens the data file when
    /// a copy was renamed over it. Cheap (one `stat`) when nothing changed.
    pub(crate) fn refresh_data_file(&self) -> Result<()> {
        if self.data.read().is_current() {
            return Ok(());
        }
        let mut data = self.data.write();
        if !data.is_current() {
            *data = Arc::new(data.reopen()?);
        }
        Ok(())
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.dir.join(crate::layout::INDEX_FILE)
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
        // One lock per commit: the progress is taken and sent with the bit
        // (see `publish_progress` for why under the lock).
        let waiters = {
            let mut st = self.state.lock();
            if !st.done.insert(c) {
                return;
            }
            st.in_flight.remove(c);
            st.damaged.remove(c);
            self.send_change(ChunkChange::Done(c..c + 1));
            self.progress.send_replace(progress_of(&self.header, &st));
            st.waiters.remove(&c)
        };
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// Takes the state a replay of the index found as the truth: chunks it
    /// has and this process did not are published (and their readers
    /// woken); chunks it lacks — a record lost to damage, say — are missing
    /// again and will be fetched.
    pub(crate) fn adopt_index(&self, index: IndexState) {
        self.take_index(index, Taken::ByLease);
    }

    /// Applies records another process committed to the index, by the
    /// index's own rules ([`IndexState::apply`], the ones a replay on open
    /// uses): a record of a chunk the object does not have is ignored, and
    /// a root counts only once every chunk is done *in the index* (chunks
    /// only announced early do not count).
    pub(crate) fn apply_records(&self, records: &[Record]) {
        let clears = records.iter().any(|r| matches!(r, Record::Clear { .. }));
        if clears {
            // A repair: the writer switched to a copy of the data file
            // before recording the clears; its refetched chunks go there.
            if let Err(e) = self.refresh_data_file() {
                tracing::warn!(object = %self.key, "cannot follow the repaired data file: {e}");
            }
        }
        let next = {
            let mut st = self.state.lock();
            if clears && !st.early.is_empty() {
                // The writer rewrites history (a repair, a restart): chunks
                // only announced, by it or a writer before it, are not kept
                // through that; whatever it commits again is announced again.
                let early = std::mem::take(&mut st.early);
                st.done -= &early;
                for r in ranges(&early) {
                    self.send_change(ChunkChange::Withdrawn(r));
                }
            }
            let mut next = IndexState {
                done: &st.done - &st.early,
                root: st.root,
            };
            for r in records {
                next.apply(r, self.header.chunk_count());
            }
            next
        };
        self.follow_index(next);
    }

    /// Publishes `chunks` as newly done (their ranges go to the chunk
    /// feed, their damage marks are cleared) and returns the waiters to
    /// wake once the state lock is let go.
    pub(crate) fn publish_done(
        &self,
        st: &mut State,
        chunks: &RoaringBitmap,
    ) -> Vec<oneshot::Sender<()>> {
        let mut woken = Vec::new();
        for r in ranges(chunks) {
            self.send_change(ChunkChange::Done(r.clone()));
            for c in r {
                st.damaged.remove(c);
                woken.extend(st.waiters.remove(&c).into_iter().flatten());
            }
        }
        woken
    }

    /// Takes the index state another process wrote, as its follower: new
    /// chunks are published (their readers woken), cleared ones are
    /// damaged, and with a root and every chunk the object is complete.
    pub(crate) fn follow_index(&self, index: IndexState) {
        self.take_index(index, Taken::ByFollower);
    }

    /// Makes `index` the object's done set and root, publishing what
    /// changed (see [`Self::adopt_index`] and [`Self::follow_index`]).
    /// Chunks only announced early (see `wake`) stay done for a follower
    /// until the index records them; a lease holder's replay withdraws
    /// them: they are fetched again, never trusted.
    fn take_index(&self, index: IndexState, how: Taken) {
        let woken = {
            let mut st = self.state.lock();
            let early = match how {
                Taken::ByFollower => &st.early - &index.done,
                Taken::ByLease => RoaringBitmap::new(),
            };
            let done = &index.done | &early;
            let lost = &st.done - &done;
            let withdrawn = &lost & &st.early;
            let damaged = &lost - &withdrawn;
            let found = &done - &st.done;
            for c in damaged.iter() {
                st.damaged.insert(c);
                self.send_change(ChunkChange::Damaged(c));
            }
            for r in ranges(&withdrawn) {
                self.send_change(ChunkChange::Withdrawn(r));
            }
            let woken = self.publish_done(&mut st, &found);
            if how == Taken::ByLease && !damaged.is_empty() {
                tracing::warn!(
                    object = %self.key,
                    chunks = damaged.len(),
                    "chunks without a trusted index record are missing again"
                );
            }
            if !withdrawn.is_empty() {
                tracing::info!(
                    object = %self.key,
                    chunks = withdrawn.len(),
                    "chunks the last filler announced but never recorded are fetched again"
                );
            }
            let complete =
                index.root.is_some() && index.done.len() == u64::from(self.header.chunk_count());
            st.done = done;
            st.early = early;
            st.root = index.root;
            if how == Taken::ByFollower && complete && !matches!(st.phase, Phase::Complete) {
                debug_assert!(st.phase.allows(&Phase::Complete));
                st.phase = Phase::Complete;
            }
            woken
        };
        for w in woken {
            let _ = w.send(());
        }
        self.publish_progress();
    }

    /// The supervisor's mailbox, starting the supervisor when none runs
    /// (or the runtime it ran on is gone) on the store's runtime
    /// ([`StoreOptions::runtime`](crate::StoreOptions::runtime)), else
    /// on the current one. `None` outside a runtime without a store
    /// runtime.
    pub(crate) fn supervisor(&self) -> Option<mpsc::UnboundedSender<Command>> {
        let mut mailbox = self.mailbox.lock();
        if let Some(tx) = mailbox.as_ref().filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let runtime = self.background_runtime()?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.host.spawn_supervisor(self.me.clone(), rx, &runtime);
        *mailbox = Some(tx.clone());
        Some(tx)
    }

    /// Where this object's supervisor and fills run: the store's runtime
    /// if it names one, else the current runtime.
    pub(crate) fn background_runtime(&self) -> Option<tokio::runtime::Handle> {
        match &self.host.options().runtime {
            Some(handle) => Some(handle.clone()),
            None => tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Sends `make(reply)` to the supervisor and waits for its answer.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let gone = || Error::Task {
            what: "object supervisor",
            reason: "ended without an answer".into(),
        };
        let tx = self.supervisor().ok_or_else(|| Error::Task {
            what: "object supervisor",
            reason: "needs a tokio runtime".into(),
        })?;
        let (reply, answer) = oneshot::channel();
        tx.send(make(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// A reader waits: unless something fills the object (here or in
    /// another process) or it is complete, asks the supervisor for a fill.
    pub(crate) async fn want_fill(&self) -> Result<()> {
        if !matches!(self.state.lock().phase, Phase::Idle | Phase::Failed(_)) {
            return Ok(());
        }
        self.ask(|reply| Command::Wanted { reply }).await
    }

    /// Ends the current phase with `phase`, waking every waiter so it
    /// re-checks (a failed fill fails its readers; a completed one serves
    /// them). The supervisor's to call (see [`lifecycle`]).
    pub(crate) fn set_phase(&self, phase: Phase) {
        let waiters = {
            let mut st = self.state.lock();
            debug_assert!(
                st.phase.allows(&phase),
                "object {}: no move from {} to {}",
                self.key,
                st.phase.name(),
                phase.name()
            );
            if !matches!(phase, Phase::Filling) {
                self.release_all_in_flight(&mut st);
            }
            st.phase = phase;
            self.send_change(ChunkChange::State);
            std::mem::take(&mut st.waiters)
        };
        drop(waiters);
        self.publish_progress();
    }

    /// Publishes the progress. Sent under the state lock, so snapshots
    /// reach the watchers in the order they were taken: a commit's snapshot
    /// (taken before a phase change) never lands after the phase change's.
    pub(crate) fn publish_progress(&self) {
        let st = self.state.lock();
        self.progress.send_replace(progress_of(&self.header, &st));
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
        self.follower_wake.notify_one();
        Ok(Some(rx))
    }

    /// Whether a reader waits for a chunk.
    pub(crate) fn has_waiters(&self) -> bool {
        !self.state.lock().waiters.is_empty()
    }

    pub(crate) fn is_done(&self, c: u32) -> bool {
        self.state.lock().done.contains(c)
    }
}

/// Bytes held by the chunks in `done` (the last chunk may be short).
pub(crate) fn bytes_done(header: &IndexHeader, done: &RoaringBitmap) -> u64 {
    let cs = u64::from(header.chunk_size);
    let mut bytes = done.len() * cs;
    if !done.is_empty() && done.contains(header.chunk_count() - 1) {
        let last = header.chunk_range(header.chunk_count() - 1);
        bytes -= cs - (last.end - last.start);
    }
    bytes.min(header.len)
}

fn progress_of(header: &IndexHeader, st: &State) -> Progress {
    let total = u64::from(header.chunk_count());
    let done = st.done.len();
    let bytes = bytes_done(header, &st.done);
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
        bytes_done: bytes,
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

    /// The pid of the other process that downloads this object (the one
    /// this process follows), when recorded and still running; `None` when
    /// this process fills it, it is complete, or nobody is known to.
    pub fn filler_pid(&self) -> Option<u32> {
        if matches!(
            self.progress().state,
            FillState::Filling | FillState::Complete
        ) {
            return None;
        }
        crate::layout::filler_pid(&self.shared.dir).filter(|&p| p != std::process::id())
    }

    /// The object's state by its status name (see [`ObjectState`]): the
    /// fill's phase, damage verification found, and whether another
    /// process is known to fill it.
    pub fn state(&self) -> ObjectState {
        let damaged = !self.shared.state.lock().damaged.is_empty();
        match self.progress().state {
            FillState::Complete => ObjectState::Complete,
            FillState::Failed(_) => ObjectState::Failed,
            _ if damaged => ObjectState::Damaged,
            FillState::Filling => ObjectState::Filling,
            FillState::Following => ObjectState::Following,
            FillState::Idle if self.filler_pid().is_some() => ObjectState::Following,
            FillState::Idle => ObjectState::Partial,
        }
    }

    /// Number of readers currently streaming from this object in this
    /// process.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    /// Gives this handle up because its consumer no longer wants the bytes
    /// (say, the pipe it wrote to closed). When no other handle or reader
    /// in this process wants the object, the fill this process runs stops,
    /// after making every chunk that arrived durable (a later fetch resumes
    /// from there; a follower in another process takes the fill over).
    /// Returns once the fill stopped, or at once when it goes on for
    /// someone else.
    pub async fn release(self) {
        let shared = self.shared.clone();
        let mut rx = self.watch_progress();
        shared.released.store(true, Ordering::Release);
        drop(self);
        loop {
            {
                let st = shared.state.lock();
                let filling = matches!(st.phase, Phase::Filling);
                if !filling || shared.handles() > 0 {
                    return;
                }
            }
            shared.filler_wake.notify_one();
            if rx.changed().await.is_err() {
                return;
            }
        }
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
                    Phase::Idle | Phase::Filling | Phase::Following => {}
                }
            }
            self.shared.want_fill().await?;
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
        blake3: root.map(blake3::Hash::from_bytes),
        verified: root.is_some(),
    }
}
