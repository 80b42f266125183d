//! Demand across processes.
//!
//! A reader in a process that follows another process's fill cannot push
//! its chunks onto that fill's queue directly. Instead, each such process
//! keeps one small *demand file* per object in `<object>/demand/`, listing
//! the chunks its readers wait for (decimal, one per line), and rewrites
//! it when the list changes, then rings the filler's doorbell (see
//! `wake`). The filler reads the directory when rung, and on a slow tick
//! as the fallback, and treats those chunks like local demands.
//!
//! Each demand file carries a shared `flock` held by its writer. The filler
//! tries an exclusive lock on each file: success means the writer is gone
//! (the lock died with it), so the file is stale and removed. As with the
//! fill lock, nothing ever needs cleaning up by hand.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ObjectShared, Phase};

pub(crate) const DEMAND_DIR: &str = "demand";
/// At most this many demanded chunks are published per process.
const MAX_PUBLISHED: usize = 16;

/// This process's demand file for one object.
pub(crate) struct DemandFile {
    file: File,
    path: PathBuf,
}

impl DemandFile {
    fn create(object_dir: &Path) -> std::io::Result<DemandFile> {
        let dir = object_dir.join(DEMAND_DIR);
        fs::create_dir_all(&dir)?;
        let name = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        file.lock_shared()?;
        Ok(DemandFile { file, path })
    }

    fn write(&self, chunks: &[u32]) -> std::io::Result<()> {
        let text: String = chunks.iter().map(|c| format!("{c}\n")).collect();
        crate::platform::pwrite_all(&self.file, text.as_bytes(), 0)?;
        self.file.set_len(text.len() as u64)
    }
}

impl Drop for DemandFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl ObjectShared {
    /// Publishes the chunks this process's readers wait for, when another
    /// process fills the object. Best effort: a failure only costs
    /// priority, never correctness.
    pub(crate) fn publish_remote_demand(&self) {
        let (following, chunks) = {
            let st = self.state.lock();
            (
                matches!(st.phase, Phase::Following),
                st.demand.oldest(MAX_PUBLISHED),
            )
        };
        let mut slot = self.remote_demand.lock();
        if !following && slot.is_none() {
            return;
        }
        if slot.is_none() {
            if chunks.is_empty() {
                return;
            }
            match DemandFile::create(&self.dir) {
                Ok(f) => *slot = Some(f),
                Err(e) => {
                    tracing::debug!(object = %self.key, "cannot publish demand: {e}");
                    return;
                }
            }
        }
        if let Some(f) = slot.as_ref() {
            match f.write(if following { &chunks } else { &[] }) {
                Ok(()) if following && !chunks.is_empty() && self.host.options().wake_ups() => {
                    super::wake::ring_filler(&self.dir);
                }
                Ok(()) => {}
                Err(e) => tracing::debug!(object = %self.key, "cannot publish demand: {e}"),
            }
        }
    }
}

/// The chunks other processes' readers wait for (files of dead processes
/// are removed on the way).
pub(crate) fn read_remote_demand(object_dir: &Path, out: &mut Vec<u32>) {
    let dir = object_dir.join(DEMAND_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            // Its writer is gone.
            let _ = fs::remove_file(&path);
            continue;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            continue;
        }
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
}
