//! Demands across processes.
//!
//! A reader in a process that only *follows* a fill (another process holds
//! the index lock) cannot reach the filler's demand queue directly. It
//! writes the chunks it waits for into a small file `demand-<id>` in the
//! object's directory (one line per chunk index, replaced atomically) and
//! removes it when the read ends. The filling process polls those files
//! while it fills and adds their chunks to its own demand queue, so a far
//! read from any process is fetched first. A file left behind by a reader
//! that crashed only names chunks the fill fetches anyway; the filler
//! removes such files once all their chunks are present.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{ObjectShared, Phase};

/// How often the filler looks for demand files.
const POLL: Duration = Duration::from_millis(20);
const PREFIX: &str = "demand-";

/// A reader's published demand; removed on drop.
pub(crate) struct RemoteDemand {
    path: PathBuf,
    tmp: PathBuf,
}

impl RemoteDemand {
    pub(crate) fn new(obj: &ObjectShared) -> RemoteDemand {
        let id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        RemoteDemand {
            path: obj.dir.join(format!("{PREFIX}{id}")),
            tmp: obj.dir.join(format!(".{PREFIX}{id}")),
        }
    }

    /// Publishes `chunks` (best effort: a failure only loses priority).
    pub(crate) fn publish(&self, chunks: &[u32]) {
        let text: String = chunks.iter().map(|c| format!("{c}\n")).collect();
        if fs::write(&self.tmp, text).is_ok() {
            let _ = fs::rename(&self.tmp, &self.path);
        }
    }
}

impl Drop for RemoteDemand {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.tmp);
    }
}

fn read_demands(obj: &ObjectShared) -> Vec<(PathBuf, Vec<u32>)> {
    let Ok(rd) = fs::read_dir(&obj.dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .filter_map(|e| {
            let path = e.path();
            let text = fs::read_to_string(&path).ok()?;
            let chunks = text
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .filter(|&c| c < obj.header.chunk_count())
                .collect();
            Some((path, chunks))
        })
        .collect()
}

/// Runs in the filling process while its fill runs: merges other
/// processes' demands into this process's demand queue.
pub(crate) fn spawn_poller(obj: &Arc<ObjectShared>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(obj);
    rt.spawn(async move {
        // Chunks this poller added to the demand queue.
        let mut added: HashSet<u32> = HashSet::new();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(obj) = weak.upgrade() else { return };
            let filling = matches!(obj.state.lock().phase, Phase::Filling);
            let wanted: HashSet<u32> = if filling {
                let mut wanted = HashSet::new();
                for (path, chunks) in read_demands(&obj) {
                    let st = obj.state.lock();
                    let missing: Vec<u32> = chunks
                        .into_iter()
                        .filter(|&c| !st.done.contains(c))
                        .collect();
                    drop(st);
                    if missing.is_empty() {
                        // Satisfied (or left by a reader that died).
                        let _ = fs::remove_file(&path);
                    }
                    wanted.extend(missing);
                }
                wanted
            } else {
                HashSet::new()
            };
            let mut new = false;
            {
                let mut st = obj.state.lock();
                for &c in added.difference(&wanted) {
                    st.demand.remove(c);
                }
                for &c in wanted.difference(&added) {
                    st.demand.add(c);
                    new = true;
                }
            }
            added = wanted;
            if new {
                obj.filler_wake.notify_one();
            }
            if !filling {
                return;
            }
        }
    });
}
