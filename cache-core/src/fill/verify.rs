//! Verifying stored chunks against their recorded chaining values.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::Record;
use crate::object::{Command, Object, ObjectShared, VerifyReport};

impl Object {
    /// Re-hashes every present chunk against the chaining value recorded
    /// when it was committed, and clears the chunks that differ (durably,
    /// with index records), so a later fill fetches only those.
    ///
    /// Needs the object to itself: fails with [`Error::Busy`] while a fill
    /// runs (here or in another process).
    pub async fn verify(&self) -> Result<VerifyReport> {
        self.shared.ask(|reply| Command::Verify { reply }).await
    }
}

/// The verification itself, on a blocking thread, for the supervisor
/// (which knows no fill of this process runs): takes the lease, re-hashes,
/// and records the clears. The caller moves the phase.
pub(crate) fn verify_blocking(obj: &Arc<ObjectShared>) -> Result<VerifyReport> {
    let busy = |what| Error::Busy {
        key: obj.key.clone(),
        what,
    };
    let Some(mut lease) = super::try_lease(obj)? else {
        return Err(busy("it is being filled by another process"));
    };
    let header = &obj.header;
    let done = obj.state.lock().done.clone();
    let mut report = VerifyReport::default();
    for c in done.iter() {
        let range = header.chunk_range(c);
        let bytes = obj.data().bytes(range);
        let cv = crate::hash::chunk_cv(&bytes, c, header.chunk_size, header.len);
        report.chunks_checked += 1;
        if lease.cvs.get(c as usize).copied().flatten() != Some(cv) {
            report.damaged.push(c);
        }
    }
    if !report.damaged.is_empty() {
        // The refetch must not write under `Bytes` already handed out (or
        // into a data file shared with another object): it goes to a copy,
        // switched to before the clearing is recorded, so a follower that
        // sees the Clear records finds the copy at the path.
        obj.fork_data_file()?;
        let records: Vec<Record> = report
            .damaged
            .iter()
            .map(|&index| Record::Clear { index })
            .collect();
        lease.writer.append(&records)?;
        {
            let mut st = obj.state.lock();
            for &c in &report.damaged {
                st.done.remove(c);
                st.damaged.insert(c);
                obj.send_change(crate::object::ChunkChange::Damaged(c));
            }
            st.root = None;
        }
        tracing::warn!(object = %obj.key, damaged = ?report.damaged, "damaged chunks cleared");
    }
    report.blake3 = obj.state.lock().root.map(blake3::Hash::from_bytes);
    Ok(report)
}
