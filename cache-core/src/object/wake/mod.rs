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
//! A datagram carries the chunks of the filler's last [`message::RECENT`] commits
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

mod announcer;
mod message;

use std::fs::{self, File};
use std::io;
use std::time::Duration;

use roaring::RoaringBitmap;

pub(crate) use announcer::Announcer;
pub(crate) use message::Announced;
use message::{decode, MAX_LEN};

use super::{ObjectShared, Phase};
use crate::index::IndexHeader;
use crate::platform::{DatagramListener, DatagramSender};

/// The directory of the followers' sockets, in the object's directory.
pub(crate) const WAKE_DIR: &str = "wake";

/// Names of filler doorbells in the wake directory start with this (every
/// other name there is a follower's).
const FILLER_PREFIX: &str = "filler-";

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
        let sock = bind_in_wake_dir(obj, "", "no wake-up socket, polling the index");
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

/// Binds a socket named `prefix`, this process's id and a random suffix
/// in `obj`'s wake-up directory; `None` when it cannot, logged as
/// `fallback` (what is done instead).
fn bind_in_wake_dir(obj: &ObjectShared, prefix: &str, fallback: &str) -> Option<DatagramListener> {
    let dir = obj.dir.join(WAKE_DIR);
    let name = format!(
        "{prefix}{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    match fs::create_dir_all(&dir).and_then(|()| DatagramListener::bind(&dir, &name)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(object = %obj.key, "{fallback}: {e}");
            None
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
        let sock = bind_in_wake_dir(obj, FILLER_PREFIX, "no demand doorbell, polling demands");
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
            self.publish_done(&mut st, &new)
        };
        for w in woken {
            let _ = w.send(());
        }
        self.publish_progress();
    }
}

/// A header of `chunks` chunks of 64 KiB, for this module's tests.
#[cfg(test)]
fn test_header(chunks: u32) -> IndexHeader {
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
