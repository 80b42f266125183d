//! Cross-process wake-up: the filling process tells the processes that
//! follow its fill which chunks it committed, the moment it commits them.
//!
//! A follower (the object's supervisor) learns of durable chunks from the
//! index, but a record reaches the index only with the next flush (up to
//! `StoreOptions::flush_interval` later). The bytes themselves are in the
//! shared data file's page cache as soon as the filler's `pwrite` returns,
//! so a reader in another process can be served then — it only needs to
//! be told.
//!
//! # The channel
//!
//! Each following process binds a Unix datagram socket in the object's
//! `wake/` directory, named `<pid>-<random>`. The filler, right after it
//! commits a chunk in memory (bytes written, chaining value known, its own
//! readers woken), sends one small datagram to every socket there:
//! non-blocking, never waiting on a follower (a full queue drops the
//! datagram), never slowing the fill by more than a `sendto` per follower.
//! It sends one more after each flush and after the root record, so the
//! followers read the index at once instead of at their next poll.
//!
//! A datagram carries the chunks of the filler's last [`RECENT`] commits
//! (as ranges), not just the newest, so a dropped datagram is made good
//! by the next one, and a follower that bound its socket a moment ago
//! learns what it missed. Liveness needs no bookkeeping: a follower's
//! socket dies with its process, a send to it is refused, and the filler
//! removes the name. The filler finds new followers by the directory's
//! modification time (one `fstat` per commit; a `readdir` only after a
//! change).
//!
//! The other way, the filler binds a socket there too (`filler-<pid>-…`,
//! its [`DemandBell`]): a follower whose readers' demands changed rings it
//! after rewriting its demand file (`remote_demand`), so the filler reads
//! the demand files at once instead of at its next poll.
//!
//! The index poll stays as the fallback (slower once the socket is bound)
//! for whatever a datagram cannot carry: where sockets are missing (not
//! Unix) or cannot be bound, and when every datagram to a follower was
//! dropped.
//!
//! # What an announcement is worth
//!
//! A chunk a follower learns of this way is *early*: complete in memory
//! for that follower's readers, never trusted by anything durable.
//!
//! * The follower never records it (followers write no index at all).
//! * The root and the `Complete` state still come from the index alone:
//!   an index record of the root counts once the *index* has every chunk,
//!   whatever was announced.
//! * A process that takes the fill over replays the index as the truth:
//!   its early chunks are missing again ([`super::ChunkChange::Withdrawn`])
//!   and refetched, exactly as if it had never heard of them. A follower
//!   that sees the index rewritten (`Clear` records: a repair, a restart)
//!   withdraws its early chunks the same way.
//!
//! The bytes a follower served from an early chunk are the ones the filler
//! hashed (and, with a trusted manifest, checked) before announcing it.
//! They live in the page cache, which outlives the filler's process; only
//! a crash of the machine loses them, and that takes the follower with it.
//! A fill that takes over from a killed filler writes those chunks again,
//! with the same bytes for the same source version (the object's key names
//! the version; with a trusted manifest they are checked to be the same).
//!
//! Anyone who can write the object's directory can send a datagram; the
//! store directory is trusted as a whole already (such a writer could
//! write the data file), and a datagram names chunks of the object with
//! its `data_id` only: one for another object or out of range is ignored.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use roaring::RoaringBitmap;

use super::feed::ranges;
use super::{ChunkChange, ObjectShared, Phase};
use crate::index::IndexHeader;
use crate::platform::{DatagramListener, DatagramSender};

/// The directory of the followers' sockets, in the object's directory.
pub(crate) const WAKE_DIR: &str = "wake";
/// A datagram announces the chunks of this many of the latest commits.
const RECENT: usize = 256;
/// At most this many ranges go into one datagram (the newest commits win).
const MAX_RANGES: usize = 128;
const MAGIC: [u8; 4] = *b"BCWK";
const VERSION: u8 = 1;
/// Magic, version, flags, range count, sender pid, data id.
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 16;
/// Bytes one datagram can have.
const MAX_LEN: usize = HEADER_LEN + MAX_RANGES * 8;
/// While the directory changed this recently, it is listed on every send:
/// file times are coarse (a clock tick), so a second follower arriving in
/// the tick of the last listing leaves the time unchanged.
const RESCAN_WHILE: Duration = Duration::from_secs(1);

/// Names of filler doorbells in the wake directory start with this (every
/// other name there is a follower's).
const FILLER_PREFIX: &str = "filler-";

/// Flag of a datagram sent because the index grew (a flush, the root):
/// the follower reads the index at once. Announcements of commits alone
/// do not make it read the index.
const INDEX_GREW: u8 = 1;

/// What a follower took from the datagrams it was woken by.
#[derive(Default)]
pub(crate) struct Announced {
    /// Chunks announced as committed.
    pub(crate) chunks: RoaringBitmap,
    /// The index grew: read it now.
    pub(crate) index_grew: bool,
}

/// Encodes an announcement of `chunks` (most recent last) with `flags`.
fn encode(data_id: &[u8; 16], chunks: &[u32], flags: u8) -> Vec<u8> {
    let mut recent: &[u32] = chunks;
    let ranges = loop {
        let bits: RoaringBitmap = recent.iter().copied().collect();
        let r = ranges(&bits);
        if r.len() <= MAX_RANGES {
            break r;
        }
        recent = &recent[recent.len() / 2..];
    };
    let mut b = Vec::with_capacity(HEADER_LEN + ranges.len() * 8);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(flags);
    b.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
    b.extend_from_slice(&std::process::id().to_le_bytes());
    b.extend_from_slice(data_id);
    for r in ranges {
        b.extend_from_slice(&r.start.to_le_bytes());
        b.extend_from_slice(&r.end.to_le_bytes());
    }
    b
}

/// Decodes an announcement for the object of `header` into `out`.
/// Anything else (another format, another object, chunks out of range)
/// is ignored: `false`.
fn decode(b: &[u8], header: &IndexHeader, out: &mut Announced) -> bool {
    if b.len() < HEADER_LEN || b[..4] != MAGIC || b[4] != VERSION {
        return false;
    }
    let count = usize::from(u16::from_le_bytes([b[6], b[7]]));
    if b.len() != HEADER_LEN + count * 8 || b[12..28] != header.data_id {
        return false;
    }
    let chunks = header.chunk_count();
    let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut bits = RoaringBitmap::new();
    for i in 0..count {
        let (start, end) = (u32_at(HEADER_LEN + i * 8), u32_at(HEADER_LEN + i * 8 + 4));
        if start >= end || end > chunks {
            return false;
        }
        bits.insert_range(start..end);
    }
    out.chunks |= bits;
    out.index_grew |= b[5] & INDEX_GREW != 0;
    true
}

/// A follower's end of the channel: its socket in the object's `wake/`
/// directory, removed when dropped. Where none can be bound, [`recv`]
/// never returns and the index poll does all the work.
///
/// [`recv`]: WakeListener::recv
pub(crate) struct WakeListener {
    sock: Option<DatagramListener>,
    buf: Vec<u8>,
}

impl WakeListener {
    /// Binds this process's socket for `obj` (best effort).
    pub(crate) fn bind(obj: &ObjectShared) -> WakeListener {
        if !obj.host.options().wake_ups() {
            return WakeListener {
                sock: None,
                buf: Vec::new(),
            };
        }
        let dir = obj.dir.join(WAKE_DIR);
        let name = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let sock = fs::create_dir_all(&dir).and_then(|()| DatagramListener::bind(&dir, &name));
        let sock = match sock {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(object = %obj.key, "no wake-up socket, polling the index: {e}");
                None
            }
        };
        WakeListener {
            sock,
            buf: vec![0; MAX_LEN + 1],
        }
    }

    /// Whether the socket is bound (announcements can arrive).
    pub(crate) fn is_bound(&self) -> bool {
        self.sock.is_some()
    }

    /// Waits for announcements for the object of `header` and returns
    /// what they say (every datagram queued is taken).
    pub(crate) async fn recv(&mut self, header: &IndexHeader) -> Announced {
        let Some(sock) = &self.sock else {
            return std::future::pending().await;
        };
        let mut out = Announced::default();
        match sock.recv(&mut self.buf).await {
            Ok(n) => {
                decode(&self.buf[..n], header, &mut out);
            }
            Err(e) => {
                tracing::debug!("wake-up socket: {e}");
                // Not a busy loop on a broken socket: the poll takes over.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return out;
            }
        }
        while let Ok(n) = sock.try_recv(&mut self.buf) {
            decode(&self.buf[..n], header, &mut out);
        }
        out
    }
}

/// The filler's end of the channel: announces its commits to every
/// follower socket of the object (see the module docs). Cheap when nobody
/// follows: one failed `open` of the directory per commit.
pub(crate) struct Announcer {
    inner: Option<Mutex<Peers>>,
    /// Whether the last announcement found follower sockets.
    followers: AtomicBool,
}

struct Peers {
    sender: DatagramSender,
    dir: PathBuf,
    data_id: [u8; 16],
    /// The directory, open (`None` until it exists).
    dir_fd: Option<File>,
    /// Its modification time at the last listing.
    listed_at: Option<SystemTime>,
    names: Vec<String>,
    /// The latest commits, oldest first.
    recent: VecDeque<u32>,
    /// Datagrams dropped on a full follower queue.
    dropped: u64,
}

impl Announcer {
    pub(crate) fn new(obj: &ObjectShared) -> Announcer {
        let inner = match DatagramSender::new() {
            Ok(sender) => Some(Mutex::new(Peers {
                sender,
                dir: obj.dir.join(WAKE_DIR),
                data_id: obj.header.data_id,
                dir_fd: None,
                listed_at: None,
                names: Vec::new(),
                recent: VecDeque::with_capacity(RECENT),
                dropped: 0,
            })),
            Err(e) => {
                tracing::debug!(object = %obj.key, "no wake-up sender, followers poll: {e}");
                None
            }
        };
        Announcer {
            inner,
            followers: AtomicBool::new(false),
        }
    }

    /// Chunk `c` is committed in memory: tell the followers (blocking,
    /// but only for a `sendto` per follower).
    pub(crate) fn committed(&self, c: u32) {
        let Some(inner) = &self.inner else { return };
        let mut p = inner.lock();
        if p.recent.len() == RECENT {
            p.recent.pop_front();
        }
        p.recent.push_back(c);
        p.announce(0);
        self.followers.store(!p.names.is_empty(), Ordering::Relaxed);
    }

    /// The index grew (a flush, the root): followers read it now.
    pub(crate) fn index_grew(&self) {
        let Some(inner) = &self.inner else { return };
        let mut p = inner.lock();
        p.announce(INDEX_GREW);
        self.followers.store(!p.names.is_empty(), Ordering::Relaxed);
    }

    /// A follower's readers demand chunks (it rang the doorbell): announce
    /// the latest commits again, in case the one they wait for was in a
    /// datagram dropped while that follower was not listening.
    pub(crate) fn repeat(&self) {
        let Some(inner) = &self.inner else { return };
        inner.lock().announce(0);
    }

    /// Whether followers with a socket were found at the last announcement
    /// (they see commits without waiting for a flush).
    pub(crate) fn has_followers(&self) -> bool {
        self.followers.load(Ordering::Relaxed)
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let p = inner.lock();
            if p.dropped > 0 {
                tracing::debug!(
                    dropped = p.dropped,
                    "wake-ups dropped on full follower queues (the index poll made up for them)"
                );
            }
        }
    }
}

impl Peers {
    fn announce(&mut self, flags: u8) {
        self.list();
        if self.names.is_empty() {
            return;
        }
        let (recent, _) = self.recent.as_slices();
        let msg = if recent.len() == self.recent.len() {
            encode(&self.data_id, recent, flags)
        } else {
            let all: Vec<u32> = self.recent.iter().copied().collect();
            encode(&self.data_id, &all, flags)
        };
        let Some(dir_fd) = &self.dir_fd else { return };
        let mut gone = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            match self.sender.send(&self.dir, dir_fd, name, &msg) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dropped += 1,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody holds that socket: its process died.
                    let _ = fs::remove_file(self.dir.join(name));
                    gone.push(i);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => gone.push(i),
                Err(e) => {
                    tracing::debug!(socket = %name, "cannot wake a follower: {e}");
                    gone.push(i);
                }
            }
        }
        for i in gone.into_iter().rev() {
            self.names.swap_remove(i);
        }
    }

    /// Lists the follower sockets when the directory changed.
    fn list(&mut self) {
        if self.dir_fd.is_none() {
            match File::open(&self.dir) {
                Ok(f) => self.dir_fd = Some(f),
                Err(_) => return,
            }
        }
        let Some(dir_fd) = &self.dir_fd else { return };
        let Ok(mtime) = dir_fd.metadata().and_then(|m| m.modified()) else {
            return;
        };
        let settled = SystemTime::now()
            .duration_since(mtime)
            .is_ok_and(|d| d > RESCAN_WHILE);
        if self.listed_at == Some(mtime) && settled {
            return;
        }
        self.listed_at = Some(mtime);
        self.names.clear();
        // Sockets of this process are announced to as well: two stores on
        // one directory in one process follow each other like processes.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    if !name.starts_with('.') && !name.starts_with(FILLER_PREFIX) {
                        self.names.push(name.to_owned());
                    }
                }
            }
        }
    }
}

/// The filler's doorbell: followers ring it when their readers' demands
/// change (see the module docs). Where none can be bound, [`rung`] never
/// returns and the filler's demand poll does all the work.
///
/// [`rung`]: DemandBell::rung
pub(crate) struct DemandBell {
    sock: Option<DatagramListener>,
}

impl DemandBell {
    /// Binds the filler's doorbell for `obj` (best effort).
    pub(crate) fn bind(obj: &ObjectShared) -> DemandBell {
        let dir = obj.dir.join(WAKE_DIR);
        let name = format!(
            "{FILLER_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let sock = fs::create_dir_all(&dir).and_then(|()| DatagramListener::bind(&dir, &name));
        let sock = match sock {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(object = %obj.key, "no demand doorbell, polling demands: {e}");
                None
            }
        };
        DemandBell { sock }
    }

    /// Whether the doorbell is bound (followers can ring it).
    pub(crate) fn is_bound(&self) -> bool {
        self.sock.is_some()
    }

    /// Waits until a follower rings (every ring queued is taken).
    pub(crate) async fn rung(&self) {
        let Some(sock) = &self.sock else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 16];
        if let Err(e) = sock.recv(&mut buf).await {
            tracing::debug!("demand doorbell: {e}");
            // Not a busy loop on a broken socket: the poll takes over.
            return std::future::pending().await;
        }
        while sock.try_recv(&mut buf).is_ok() {}
    }
}

/// Rings the doorbell of the filler of the object in `object_dir`, if it
/// has one (best effort, never blocking).
pub(crate) fn ring_filler(object_dir: &std::path::Path) {
    static SENDER: std::sync::OnceLock<Option<DatagramSender>> = std::sync::OnceLock::new();
    let Some(sender) = SENDER.get_or_init(|| DatagramSender::new().ok()) else {
        return;
    };
    let dir = object_dir.join(WAKE_DIR);
    let (Ok(dir_fd), Ok(entries)) = (File::open(&dir), fs::read_dir(&dir)) else {
        return;
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(FILLER_PREFIX) {
            continue;
        }
        if let Err(e) = sender.send(&dir, &dir_fd, &name, b"demand") {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                // Nobody holds that doorbell: its filler died.
                let _ = fs::remove_file(dir.join(&name));
            }
        }
    }
}

impl ObjectShared {
    /// Publishes chunks the filling process announced (see the module
    /// docs): complete for this process's readers, early until the index
    /// records them. Ignored once this process fills the object itself or
    /// it is complete.
    pub(crate) fn take_announced(&self, chunks: &RoaringBitmap) {
        // No check of the data file here: a repair renames a new one into
        // place and records its clears before it commits anything there,
        // and a follower reopens the file when it applies the clears. An
        // announced chunk it has not applied the clears of is one it has
        // (from before the damage): not new, nothing to read.
        let woken = {
            let mut st = self.state.lock();
            if matches!(st.phase, Phase::Filling | Phase::Complete) {
                return;
            }
            let new = chunks - &st.done;
            if new.is_empty() {
                return;
            }
            st.done |= &new;
            st.early |= &new;
            let mut woken = Vec::new();
            for r in ranges(&new) {
                self.send_change(ChunkChange::Done(r.clone()));
                for c in r {
                    st.damaged.remove(c);
                    woken.extend(st.waiters.remove(&c).into_iter().flatten());
                }
            }
            woken
        };
        for w in woken {
            let _ = w.send(());
        }
        self.publish_progress();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;

    fn header(chunks: u32) -> IndexHeader {
        IndexHeader {
            len: u64::from(chunks) * 65536,
            chunk_size: 65536,
            data_id: [7; 16],
            source: "mem://x".into(),
            validator: String::new(),
            expected: None,
            created_unix: 0,
        }
    }

    #[test]
    fn round_trip_keeps_the_newest_commits() {
        let h = header(100_000);
        let mut out = Announced::default();
        let m = encode(&h.data_id, &[5, 3, 4, 9], 0);
        assert!(decode(&m, &h, &mut out));
        assert_eq!(ranges(&out.chunks), vec![3..6, 9..10]);
        assert!(!out.index_grew);
        // More scattered commits than ranges fit: the newest half stays.
        let scattered: Vec<u32> = (0..RECENT as u32).map(|i| i * 2).collect();
        let m = encode(&h.data_id, &scattered, INDEX_GREW);
        assert!(m.len() <= MAX_LEN);
        let mut out = Announced::default();
        assert!(decode(&m, &h, &mut out));
        assert!(out.index_grew);
        assert!(out.chunks.contains(*scattered.last().unwrap()));
        assert!(!out.chunks.contains(0));
        assert_eq!(out.chunks.len(), MAX_RANGES as u64);
    }

    #[test]
    fn foreign_or_damaged_datagrams_are_ignored() {
        let h = header(10);
        let m = encode(&h.data_id, &[1, 2], 0);
        let mut out = Announced::default();
        assert!(!decode(&m, &header(2), &mut out), "chunk out of range");
        let mut other = header(10);
        other.data_id = [8; 16];
        assert!(!decode(&m, &other, &mut out), "another object");
        assert!(!decode(&m[..m.len() - 1], &h, &mut out), "truncated");
        let mut bad = m.clone();
        bad[0] ^= 1;
        assert!(!decode(&bad, &h, &mut out), "magic");
        assert!(out.chunks.is_empty());
    }

    fn peers(dir: &Path) -> Peers {
        Peers {
            sender: DatagramSender::new().unwrap(),
            dir: dir.to_owned(),
            data_id: [7; 16],
            dir_fd: None,
            listed_at: None,
            names: Vec::new(),
            recent: VecDeque::new(),
            dropped: 0,
        }
    }

    /// A socket left by a process that died: bound, closed, not removed.
    fn dead_socket(dir: &Path, name: &str) {
        use std::os::unix::net::UnixDatagram;
        #[cfg(target_os = "linux")]
        if dir.join(name).as_os_str().len() > 100 {
            use std::os::fd::AsRawFd;
            let d = File::open(dir).unwrap();
            let path = format!("/proc/self/fd/{}/{name}", d.as_raw_fd());
            drop(UnixDatagram::bind(path).unwrap());
            return;
        }
        drop(UnixDatagram::bind(dir.join(name)).unwrap());
    }

    async fn channel_works_in(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        let h = header(1000);
        let listener = DatagramListener::bind(dir, "1-a").unwrap();
        let mut l = WakeListener {
            sock: Some(listener),
            buf: vec![0; MAX_LEN + 1],
        };
        // A dead follower's socket: bound, then closed without removal.
        dead_socket(dir, "2-b");
        assert!(dir.join("2-b").exists());
        let mut p = peers(dir);
        for c in [3, 4, 10] {
            p.recent.push_back(c);
            p.announce(0);
        }
        assert!(
            !dir.join("2-b").exists(),
            "a dead follower's socket is removed"
        );
        assert_eq!(p.names, vec!["1-a".to_string()]);
        let got = tokio::time::timeout(Duration::from_secs(5), l.recv(&h))
            .await
            .unwrap();
        assert_eq!(ranges(&got.chunks), vec![3..5, 10..11]);
        drop(l);
        assert!(!dir.join("1-a").exists(), "a listener removes its socket");
    }

    #[tokio::test]
    async fn announcements_reach_listeners_and_dead_sockets_go() {
        let tmp = tempfile::tempdir().unwrap();
        channel_works_in(&tmp.path().join(WAKE_DIR)).await;
    }

    /// A directory path too long for a socket address still works (on
    /// Linux, through the open directory).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_deep_directory_still_gets_wake_ups() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        assert!(deep.join("1-a").as_os_str().len() > 108);
        channel_works_in(&deep).await;
    }

    #[tokio::test]
    async fn a_follower_rings_the_fillers_doorbell() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(WAKE_DIR);
        fs::create_dir_all(&dir).unwrap();
        let bell = DemandBell {
            sock: Some(DatagramListener::bind(&dir, "filler-1-a").unwrap()),
        };
        dead_socket(&dir, "filler-2-b");
        let mut p = peers(&dir);
        p.announce(0);
        assert!(p.names.is_empty(), "a doorbell is no follower");
        ring_filler(tmp.path());
        tokio::time::timeout(Duration::from_secs(5), bell.rung())
            .await
            .expect("rung");
        assert!(
            !dir.join("filler-2-b").exists(),
            "a dead filler's doorbell is removed"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(WAKE_DIR);
        fs::create_dir_all(&dir).unwrap();
        let _l = DatagramListener::bind(&dir, "1-a").unwrap();
        let mut p = peers(&dir);
        let t0 = Instant::now();
        for c in 0..10_000 {
            p.recent.push_back(c % 1000);
            if p.recent.len() > RECENT {
                p.recent.pop_front();
            }
            p.announce(0);
        }
        assert!(p.dropped > 0, "nobody read: the queue filled up");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
