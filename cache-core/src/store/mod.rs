//! The store: a directory of objects, found by key, BLAKE3 hash or URL.
//!
//! The files are documented in `layout.rs`. In one process the store keeps one shared
//! state per open object (a registry of weak references), so every request
//! for an object attaches to the same fill and the same waiting readers.

mod gc;
mod import;
mod lookup;
pub(crate) mod names;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::chain::SourceChain;
use crate::data::DataFile;
use crate::digest::{Algo, Digest, Expected};
use crate::error::{Error, Result};
use crate::fill::{FillOptions, FillPlan};
use crate::index::{
    IndexHeader, IndexReader, IndexState, IndexWriter, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
use crate::object::{Command, Object, ObjectHost, ObjectInfo, ObjectShared};
use crate::source::Source;

pub use crate::layout::object_key;
use crate::layout::*;
pub use crate::options::StoreOptions;
pub use gc::GcReport;

/// Default chunk size (see BENCHMARKS.md for the measurement behind it).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// Options of one [`Store::fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Chunk size of a new object (an existing object keeps its own).
    pub chunk_size: u32,
    /// Digests this request expects (BLAKE3, SHA-256, SHA-512). They
    /// belong to the request, never to the object: they do not name it,
    /// and a mismatch fails only the request that expected them (see
    /// [`Object::wait_verified`]). An expected digest that already names a
    /// complete object makes the fetch return that object without asking
    /// the origin, unless `revalidate` is set.
    pub expected: Expected,
    /// Ask the origin even when an expected digest names a complete object.
    pub revalidate: bool,
    /// How to fill.
    pub fill: FillOptions,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            expected: Vec::new(),
            revalidate: false,
            fill: FillOptions::default(),
        }
    }
}

/// One line of [`Store::list`].
#[derive(Clone, Debug)]
pub struct ObjectSummary {
    /// The object's static facts (key, source, length, BLAKE3).
    pub info: ObjectInfo,
    /// Chunks durable on disk.
    pub chunks_done: u64,
    /// Chunks the object has.
    pub chunks_total: u64,
    /// Bytes of the durable chunks.
    pub bytes_done: u64,
    /// Complete, filling (this process), following (another process fills
    /// it), failed (this process's last fill) or partial.
    pub state: crate::ObjectState,
    /// Last time the object was opened.
    pub last_used: Option<SystemTime>,
    /// Bytes the object takes on disk.
    pub disk_bytes: u64,
    /// When the object was registered (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Digests other than BLAKE3 known for a complete object (SHA-256 is
    /// computed by every fill; SHA-512 when a request asked for it).
    pub digests: Vec<Digest>,
}

pub(crate) struct StoreShared {
    pub(crate) dir: PathBuf,
    pub(crate) options: StoreOptions,
    /// The objects open in this process, one slot per key. The map's lock
    /// is held only to find or add a slot (no I/O under it); opening an
    /// object from disk (index replay, creation with its fsyncs) holds only
    /// that key's slot, so opens of different objects run in parallel.
    registry: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A directory of objects. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Store {
    shared: Arc<StoreShared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// Checks a chunk size: a power of two from 64 KiB to 64 MiB.
pub fn check_chunk_size(size: u64) -> Result<u32> {
    if size.is_power_of_two()
        && (u64::from(MIN_CHUNK_SIZE)..=u64::from(MAX_CHUNK_SIZE)).contains(&size)
    {
        Ok(size as u32)
    } else {
        Err(Error::InvalidChunkSize(size))
    }
}

impl Store {
    /// The conventional store directory: `$BLOCKCACHE_STORE`, else
    /// `$XDG_CACHE_HOME/blockcache`, else `$HOME/.cache/blockcache` (empty
    /// variables count as unset). `None` when none of them is set.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        var("BLOCKCACHE_STORE")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("blockcache")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache").join("blockcache")))
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens the store in `dir` only if one is there: for commands that
    /// only read. Fails with [`Error::NoStore`] otherwise, having written
    /// nothing.
    pub fn open_existing_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref();
        match fs::metadata(dir.join(MARKER)) {
            Ok(m) if m.is_file() => Store::open_with(dir, options),
            _ => Err(Error::NoStore(dir.to_path_buf())),
        }
    }

    /// Opens the store in `dir` with `options`.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir.join(OBJECTS))?;
        create_dir(&dir.join(ALIASES))?;
        create_dir(&dir.join(TMP))?;
        let marker = dir.join(MARKER);
        match fs::read_to_string(&marker) {
            Ok(text) if text == MARKER_TEXT => {}
            Ok(text) => {
                return Err(Error::io(
                    &marker,
                    "check store layout",
                    std::io::Error::other(format!("unknown store layout {:?}", text.trim())),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&marker, &dir.join(TMP), MARKER_TEXT.as_bytes())?
            }
            Err(e) => return Err(Error::io(&marker, "read", e)),
        }
        let store = Store {
            shared: Arc::new(StoreShared {
                dir,
                options,
                registry: Mutex::new(HashMap::new()),
            }),
        };
        store.shared.clean_tmp();
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Opens the object `source` describes — probing it, creating and
    /// registering the object durably if new — and makes sure it is being
    /// filled: by a new fill, by the fill already running in this process
    /// (attach), or by another process (follow, and take over if it dies).
    /// Returns at once; read from the object or wait for it to complete.
    ///
    /// When an expected digest already names a complete object, that
    /// object is returned at once and the origin is not asked at all
    /// (unless [`FetchOptions::revalidate`]).
    pub async fn fetch(&self, source: Arc<dyn Source>, options: FetchOptions) -> Result<Object> {
        self.fetch_chain(SourceChain::new(source), options).await
    }

    /// [`Store::fetch`] from a [`SourceChain`]: the object is the origin's;
    /// its chunks come from the alternates first, each chunk checked
    /// against a manifest when `options.expected` is given and a source
    /// has a manifest that proves it (see [`crate::chain`]).
    pub async fn fetch_chain(&self, chain: SourceChain, options: FetchOptions) -> Result<Object> {
        check_chunk_size(u64::from(options.chunk_size))?;
        if !options.revalidate {
            let store = self.clone();
            let expected = options.expected.clone();
            let known = crate::task::blocking("look up expected digest", move || {
                for digest in &expected {
                    if let Some(object) = store.get_digest(digest)? {
                        if object.blake3().is_some() {
                            return Ok(Some(object));
                        }
                    }
                }
                Ok(None)
            })
            .await?;
            if let Some(object) = known {
                return Ok(object);
            }
        }
        let url = chain.origin.identity();
        let info = chain.origin.probe().await.map_err(|cause| Error::Source {
            url: url.clone(),
            cause,
        })?;
        // Creating the object (fsyncs), replaying its index and taking the
        // writer's lease are file work: on the blocking pool.
        let shared = self.shared.clone();
        let (object, fill) = crate::task::blocking("open object", move || {
            shared.open_for_fill(url, info, chain, options)
        })
        .await?;
        if let Some((plan, restart)) = fill {
            // The object's supervisor takes the lease (or finds the fill
            // that runs); a new fill is started from this task, so it runs
            // once the caller yields: a reader that asks for a chunk right
            // away is served first.
            let launcher = object
                .shared
                .ask(|reply| Command::Fill {
                    plan,
                    restart,
                    reply,
                })
                .await?;
            if let Some(launcher) = launcher {
                launcher.start();
            }
        }
        Ok(object)
    }

    /// Opens an object by reference: a BLAKE3 hex hash or unique prefix of
    /// one (at least 4 digits), an object key, or a source URL.
    pub fn open_ref(&self, reference: &str) -> Result<Object> {
        let key = self.resolve(reference)?;
        let (obj, _) = self.shared.open_or_create(&key, None)?;
        Ok(Object::from_shared(obj))
    }

    /// Opens the object with BLAKE3 hash `hash`, if the store has it.
    pub fn get(&self, hash: &blake3::Hash) -> Result<Option<Object>> {
        self.get_digest(&Digest::blake3(hash))
    }

    /// Opens a complete object named by `digest` (its BLAKE3, or a SHA-256
    /// / SHA-512 computed from its bytes), if the store has one.
    pub fn get_digest(&self, digest: &Digest) -> Result<Option<Object>> {
        let Some(key) = self.shared.read_alias(digest.algo, &digest.hex())? else {
            return Ok(None);
        };
        match self.shared.open_or_create(&key, None) {
            Ok((obj, _)) => Ok(Some(Object::from_shared(obj))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an object. Fails with [`Error::Busy`] when it is being
    /// filled or read (in this process or another).
    pub fn remove(&self, reference: &str) -> Result<()> {
        let key = self.resolve(reference)?;
        self.shared.remove_key(&key)
    }
}

impl StoreShared {
    /// The blocking half of [`Store::fetch_chain`], after the probe: open
    /// or create the object of this version, and say how to fill it (and
    /// whether its stored chunks must be forgotten first) unless it is
    /// complete.
    fn open_for_fill(
        self: &Arc<Self>,
        url: String,
        info: crate::source::SourceInfo,
        chain: SourceChain,
        options: FetchOptions,
    ) -> Result<(Object, Option<(FillPlan, bool)>)> {
        let SourceChain {
            origin: source,
            alternates,
            stall,
        } = chain;
        let key = object_key(&url, &info.validator, info.len);
        let header = IndexHeader {
            len: info.len,
            chunk_size: options.chunk_size,
            data_id: rand::random(),
            source: url,
            validator: info.validator.clone(),
            expected: None,
            created_unix: unix_now(),
        };
        let (obj, opened_from_disk) = self.open_or_create(&key, Some(header))?;
        let object = Object::from_shared(obj.clone());
        if let Some(root) = object.blake3() {
            // A wrong BLAKE3 expectation fails now; the object is untouched.
            object.check_blake3(&options.expected, &root)?;
            return Ok((object, None));
        }
        // Without a validator nothing proves the upstream bytes are the
        // version we stored: start over rather than mix versions.
        let restart = opened_from_disk && info.validator.is_empty();
        let mut digests = vec![Algo::Sha256];
        digests.extend(
            options
                .expected
                .iter()
                .map(|d| d.algo)
                .filter(|a| Algo::SEQUENTIAL.contains(a) && *a != Algo::Sha256),
        );
        let plan = FillPlan {
            source,
            alternates,
            stall,
            info,
            options: options.fill,
            digests,
            expected_root: Digest::find_blake3(&options.expected),
        };
        Ok((object, Some((plan, restart))))
    }

    pub(crate) fn live(&self, key: &str) -> Option<Arc<ObjectShared>> {
        let slot = self.registry.lock().get(key).cloned()?;
        let obj = slot.object.lock().upgrade();
        obj
    }

    /// The slot of `key`, added when missing (slots of objects nobody has
    /// open any more are dropped on the way).
    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut registry = self.registry.lock();
        if let Some(slot) = registry.get(key) {
            return slot.clone();
        }
        // Nobody holds a slot but the map, and its object is gone.
        registry.retain(|_, s| Arc::strong_count(s) > 1 || s.object.lock().strong_count() > 0);
        let slot = Arc::new(Slot::default());
        registry.insert(key.to_owned(), slot.clone());
        slot
    }

    /// Opens the object `key` (from the registry or from disk), creating it
    /// from `header` when it does not exist. Returns whether it was opened
    /// from disk (as opposed to live or new).
    fn open_or_create(
        self: &Arc<Self>,
        key: &str,
        header: Option<IndexHeader>,
    ) -> Result<(Arc<ObjectShared>, bool)> {
        let slot = self.slot(key);
        // Two openers of one key: the second waits for the first's open
        // and gets its object; other keys are not held up.
        let _opening = slot.opening.lock();
        if let Some(obj) = slot.object.lock().upgrade() {
            return Ok((obj, false));
        }
        #[cfg(feature = "internals")]
        if let Some(hook) = &self.options.open_hook {
            hook(key);
        }
        let dir = self.dir.join(OBJECTS).join(key);
        let mut from_disk = true;
        if !dir.join(INDEX_FILE).exists() {
            let Some(header) = header else {
                return Err(Error::NotFound(key.to_owned()));
            };
            from_disk = !self.create_object(key, &header)?;
        }
        let obj = self.open_dir(key, dir)?;
        *slot.object.lock() = Arc::downgrade(&obj);
        Ok((obj, from_disk))
    }

    /// Creates the object's directory atomically. Returns false when
    /// another process created it first.
    fn create_object(&self, key: &str, header: &IndexHeader) -> Result<bool> {
        let tmp = self
            .dir
            .join(TMP)
            .join(format!("new-{key}-{}", hex_id(&rand::random::<[u8; 4]>())));
        create_dir(&tmp)?;
        let made = (|| {
            let w = IndexWriter::create(&tmp.join(INDEX_FILE), header)?;
            drop(w);
            DataFile::create(&tmp.join(header.data_file_name()), header.len)?;
            sync_dir(&tmp)
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dest = self.dir.join(OBJECTS).join(key);
        match fs::rename(&tmp, &dest) {
            Ok(()) => {}
            Err(_) if dest.join(INDEX_FILE).exists() => {
                let _ = fs::remove_dir_all(&tmp);
                return Ok(false);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::io(&dest, "register object", e));
            }
        }
        sync_dir(&self.dir.join(OBJECTS))?;
        Ok(true)
    }

    fn open_dir(self: &Arc<Self>, key: &str, dir: PathBuf) -> Result<Arc<ObjectShared>> {
        let (_, header, state) = IndexReader::open(&dir.join(INDEX_FILE)).map_err(|e| match e {
            crate::index::IndexError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Error::NotFound(key.to_owned())
            }
            e => e.into(),
        })?;
        let data_path = dir.join(header.data_file_name());
        let data = DataFile::open(&data_path, header.len, self.options.write_fault())?;
        // The shared lock says "in use" to eviction in every process.
        if !data.lock_shared()? {
            return Err(Error::Busy {
                key: key.to_owned(),
                what: "it is being removed",
            });
        }
        if !data_path.exists() {
            return Err(Error::NotFound(key.to_owned()));
        }
        touch(&dir.join(USED_FILE));
        let root = state
            .root
            .filter(|_| state.done.len() == u64::from(header.chunk_count()));
        let obj = ObjectShared::new(
            key.to_owned(),
            dir,
            header,
            data,
            state.done,
            root,
            self.clone(),
        );
        if root.is_none() {
            // Its supervisor follows whoever fills it (when there is a
            // runtime; else it starts with the first request).
            obj.supervisor();
        }
        Ok(obj)
    }

    /// Opens object `key` for removal: its index and data file locked
    /// exclusively, so no process fills or reads it while they are held.
    /// [`Error::Busy`] when something uses it (this process has it open,
    /// another process fills or reads it).
    fn lock_for_removal(&self, key: &str) -> Result<Removable> {
        if self.live(key).is_some() {
            return Err(Error::Busy {
                key: key.to_owned(),
                what: "it is open in this process",
            });
        }
        let dir = self.dir.join(OBJECTS).join(key);
        let index_path = dir.join(INDEX_FILE);
        let (_, header, state) =
            IndexReader::open(&index_path).map_err(|_| Error::NotFound(key.to_owned()))?;
        let busy = |what| Error::Busy {
            key: key.to_owned(),
            what,
        };
        let Some(index) = try_lock_exclusive(&index_path)? else {
            return Err(busy("it is being filled"));
        };
        let data_path = dir.join(header.data_file_name());
        let Some(data) = try_lock_exclusive(&data_path)? else {
            // The lock lives on the data file, which complete copies of the
            // same bytes share (see `layout`): say so, or "being read"
            // names an object nobody reads.
            return Err(busy(if shares_data(&data_path) {
                "it, or another object sharing its bytes, is being read"
            } else {
                "it is being read"
            }));
        };
        Ok(Removable {
            dir,
            header,
            state,
            _locks: (index, data),
        })
    }

    /// Whether object `key` could be removed now (nothing uses it); the
    /// locks are let go at once. What a dry-run eviction asks.
    pub(crate) fn check_removable(&self, key: &str) -> Result<()> {
        self.lock_for_removal(key).map(drop)
    }

    /// Removes object `key` unless anything uses it.
    pub(crate) fn remove_key(&self, key: &str) -> Result<()> {
        let Removable {
            dir,
            header,
            state,
            _locks,
        } = self.lock_for_removal(key)?;
        let digests = read_digests(&dir, &header);
        if let Some(e) = header.expected {
            // An alias an older build wrote for an expected hash.
            self.remove_alias(&Digest::blake3(&blake3::Hash::from_bytes(e)), key);
        }
        let mut names_left = false;
        if let Some(root) = state.root {
            let by_root = Digest::blake3(&blake3::Hash::from_bytes(root));
            for d in std::iter::once(&by_root).chain(&digests) {
                names_left |= self.remove_alias(d, key);
            }
        }
        // Rename first so no opener finds a half-deleted directory.
        let grave = self
            .dir
            .join(TMP)
            .join(format!("rm-{key}-{}", hex_id(&rand::random::<[u8; 4]>())));
        fs::rename(&dir, &grave).map_err(|e| Error::io(&dir, "remove object", e))?;
        fs::remove_dir_all(&grave).map_err(|e| Error::io(&grave, "remove object", e))?;
        // Another copy of the same bytes keeps every name of this one.
        if let (true, Some(root)) = (names_left, state.root) {
            self.rehome_names(key, root, &digests)?;
        }
        Ok(())
    }

    /// Removes leftovers of creations and removals a crash interrupted.
    fn clean_tmp(&self) {
        let tmp = self.dir.join(TMP);
        let Ok(names) = list_names(&tmp) else { return };
        for name in names {
            let path = tmp.join(&name);
            // An import in progress holds its index lock: leave it alone.
            if let Ok(f) = fs::File::open(path.join(INDEX_FILE)) {
                if f.try_lock().is_err() {
                    continue;
                }
            }
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 60);
            if old {
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
}

/// One key of the registry: the object while it is open here, and the
/// lock an opener holds while it reads or creates it on disk.
#[derive(Default)]
struct Slot {
    object: Mutex<Weak<ObjectShared>>,
    opening: Mutex<()>,
}

/// The store as its objects and their filler see it: this is where an
/// object's call for a fill reaches the filler.
impl ObjectHost for StoreShared {
    fn options(&self) -> &StoreOptions {
        &self.options
    }

    fn spawn_supervisor(
        &self,
        obj: Weak<ObjectShared>,
        commands: mpsc::UnboundedReceiver<Command>,
        runtime: &tokio::runtime::Handle,
    ) {
        crate::supervisor::spawn(obj, commands, runtime)
    }

    fn name_object(&self, digest: &Digest, key: &str) -> Result<()> {
        StoreShared::name_object(self, digest, key)
    }

    fn store_digests(&self, dir: &Path, header: &IndexHeader, digests: &[Digest]) -> Result<()> {
        StoreShared::store_digests(self, dir, header, digests)
    }

    fn share_data(&self, key: &str, header: &IndexHeader, root: &blake3::Hash) {
        StoreShared::share_data(self, key, header, root)
    }

    fn write_atomic(&self, path: &Path, contents: &[u8]) -> Result<()> {
        write_atomic(path, &self.dir.join(TMP), contents)
    }
}

/// An object locked for removal by [`StoreShared::lock_for_removal`]: the
/// locks hold until it is dropped.
struct Removable {
    dir: PathBuf,
    header: IndexHeader,
    state: IndexState,
    _locks: (fs::File, fs::File),
}

/// Whether the data file at `path` is shared with another object (a hard
/// link of the same bytes).
fn shares_data(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).is_ok_and(|m| m.nlink() > 1)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, "list directory", e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, "list directory", e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn touch(path: &Path) {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path);
    if let Ok(f) = f {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Bytes an object directory takes on disk (allocated blocks). A data
/// file shared by several objects (same bytes, hard-linked) counts for
/// each of them in equal parts, so the sum over objects is the real usage.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| crate::platform::disk_usage(&m))
        .sum()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
