//! Making committed chunks durable, in the one safe order.
//!
//! A chunk is committed in memory (visible to this process's readers, and
//! announced to the processes that follow the fill, see `object::wake`)
//! as soon as its bytes are written and its chaining value is computed.
//! Nothing of that is durable: its index record waits in `pending` until a
//! flush, and only the record makes a chunk count for a resume:
//!
//! 1. take the pending records (their bytes were all written before),
//! 2. `fdatasync` the data file,
//! 3. append the records to the index (one write, one `fdatasync`).
//!
//! Flushes happen by bytes or by time (`StoreOptions::flush_bytes`,
//! `flush_interval`). Between them, every `StoreOptions::writeback_bytes`
//! of commits the filler starts the data file's writeback without waiting
//! ([`crosses`]), so the disk is busy with the batch before its flush.
//! So a record on disk is never ahead of its data (invariant 1), and the
//! cost is one pair of syncs per batch (by bytes or by time), not per
//! chunk.

use parking_lot::Mutex;

use crate::error::Result;
use crate::index::{IndexState, IndexWriter, Record};
use crate::object::ObjectShared;

/// Write a snapshot of the bitmap after this many records.
const SNAPSHOT_EVERY: u64 = 4096;

pub(crate) struct Pending {
    pub(crate) records: Vec<Record>,
    pub(crate) bytes: u64,
    /// Set when the fill ends with an error: nothing commits after it.
    pub(crate) stopped: bool,
}

/// Whether a batch that grew from `before` to `after` bytes passed a
/// multiple of `every` (never for 0): the filler starts the writeback of
/// the data file there.
pub(crate) fn crosses(before: u64, after: u64, every: u64) -> bool {
    every > 0 && before / every != after / every
}

pub(crate) struct Durability {
    inner: Mutex<DurableIndex>,
}

struct DurableIndex {
    writer: IndexWriter,
    /// What the index on disk says.
    state: IndexState,
    since_snapshot: u64,
}

impl Durability {
    pub(crate) fn new(writer: IndexWriter, state: IndexState) -> Self {
        Durability {
            inner: Mutex::new(DurableIndex {
                writer,
                state,
                since_snapshot: 0,
            }),
        }
    }

    /// Flushes the pending records (blocking: call from a blocking thread).
    pub(crate) fn flush(&self, obj: &ObjectShared, pending: &Mutex<Pending>) -> Result<()> {
        let mut inner = self.inner.lock();
        let batch = {
            let mut p = pending.lock();
            p.bytes = 0;
            std::mem::take(&mut p.records)
        };
        if batch.is_empty() {
            return Ok(());
        }
        obj.data().sync()?;
        inner.append(&batch)
    }

    /// Appends the root record and writes a final snapshot.
    pub(crate) fn finish(&self, root: [u8; 32]) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.append(&[Record::Root { hash: root }])?;
        let DurableIndex { writer, state, .. } = &mut *inner;
        writer.snapshot(state)?;
        Ok(())
    }
}

impl DurableIndex {
    fn append(&mut self, batch: &[Record]) -> Result<()> {
        self.writer.append(batch)?;
        let chunk_count = self.writer.chunk_count();
        for r in batch {
            self.state.apply(r, chunk_count);
        }
        self.since_snapshot += batch.len() as u64;
        if self.since_snapshot >= SNAPSHOT_EVERY {
            self.writer.snapshot(&self.state)?;
            self.since_snapshot = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::crosses;

    #[test]
    fn writeback_starts_at_each_multiple_passed() {
        let mib = 1u64 << 20;
        // 1 MiB commits with a 4 MiB step: at 4, 8, ... MiB.
        let starts: Vec<u64> = (0..12)
            .filter(|i| crosses(i * mib, (i + 1) * mib, 4 * mib))
            .map(|i| i + 1)
            .collect();
        assert_eq!(starts, vec![4, 8, 12]);
        // A commit larger than the step passes it once.
        assert!(crosses(mib, 10 * mib, 4 * mib));
        assert!(!crosses(5 * mib, 7 * mib, 4 * mib));
        // Off.
        assert!(!crosses(0, u64::MAX, 0));
    }
}
