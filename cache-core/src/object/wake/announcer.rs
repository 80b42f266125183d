//! The filler's side: announcing commits to every follower socket.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::message::{encode, INDEX_GREW, RECENT};
use super::{FILLER_PREFIX, WAKE_DIR};
use crate::object::ObjectShared;
use crate::platform::DatagramSender;

/// While the directory changed this recently, it is listed on every send:
/// file times are coarse (a clock tick), so a second follower arriving in
/// the tick of the last listing leaves the time unchanged.
const RESCAN_WHILE: Duration = Duration::from_secs(1);

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

#[cfg(all(test, unix))]
mod tests {
    use super::super::message::MAX_LEN;
    use super::super::{ring_filler, test_header as header, DemandBell, WakeListener};
    use super::*;
    use crate::object::feed::ranges;
    use crate::platform::DatagramListener;
    use std::path::Path;
    use std::time::Instant;

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
