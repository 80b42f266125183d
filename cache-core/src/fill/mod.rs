//! Filling objects from a [`Source`]: one filler per object.
//!
//! * [`scheduler`] decides which chunks to request (demand first).
//! * `filler` runs the requests, up to N at once plus one lane kept for
//!   demands, and turns their bytes into committed chunks; `lanes`
//!   decides N (few while the origin is fast, all once it is not).
//! * `fetch` turns one range request's body into committed chunks;
//!   `direct` does it for bodies that move into the data file in the
//!   kernel (see [`crate::DirectBody`]).
//! * `durability` batches the `fdatasync` of the data file and the
//!   appending of index records (data first, never one sync per chunk);
//!   the filler starts the data's writeback ahead of each batch's sync.
//! * `prefix` hashes SHA-256 (and SHA-512) over the completed prefix.
//!
//! Who fills: the process that holds the exclusive OS lock on the object's
//! index file. Within a process, the object's supervisor
//! (`crate::supervisor`) alone takes that lease and starts fills; this
//! module is the mechanism it uses.

mod alternates;
mod direct;
mod durability;
mod fetch;
mod filler;
mod lanes;
pub(crate) mod prefix;
mod scheduler;
mod verify;

use std::fs::File;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::index::{IndexWriter, Record};
use crate::object::{Command, FillEnd, Launcher, ObjectShared};
use crate::source::SourceInfo;

pub(crate) use crate::plan::{FillOptions, FillPlan};
pub use alternates::{chunk_verify_failures, count_chunk_verify_failure};
pub(crate) use verify::verify_blocking;

/// What the process that fills holds: the lock and the index writer.
pub(crate) struct WriterLease {
    /// Exclusive `flock` on the index file; released when dropped (or when
    /// the process dies — there is never a stale lock to clean up).
    pub(crate) _lock: File,
    pub(crate) writer: IndexWriter,
    pub(crate) cvs: Vec<Option<[u8; 32]>>,
}

/// Tries to become the writer of `obj`: the OS lock, then a recovering
/// open of the index (a torn tail is truncated here, under the lock).
/// `Ok(None)`: another process holds the lock.
pub(crate) fn try_lease(obj: &ObjectShared) -> Result<Option<WriterLease>> {
    let path = obj.index_path();
    let Some(lock) = crate::layout::try_lock_exclusive(&path)? else {
        return Ok(None);
    };
    write_filler_pid(obj);
    // A repair elsewhere may have switched the data file: write the current one.
    obj.refresh_data_file()?;
    // One replay gives the done set and the CVs: they cannot disagree.
    let (writer, _header, replayed, recovery) = IndexWriter::open_replayed(&path)?;
    if recovery.dropped_bytes > 0 {
        tracing::warn!(
            object = %obj.key,
            dropped_bytes = recovery.dropped_bytes,
            "dropped a torn or damaged index tail; those chunks will be fetched again"
        );
    }
    obj.adopt_index(replayed.state);
    Ok(Some(WriterLease {
        _lock: lock,
        writer,
        cvs: replayed.cvs,
    }))
}

/// Records this process as the lock holder (best effort: a follower
/// without it just cannot name the pid).
fn write_filler_pid(obj: &ObjectShared) {
    let path = obj.dir.join(crate::layout::FILLER_PID_FILE);
    if let Err(e) = std::fs::write(&path, format!("{}\n", std::process::id())) {
        tracing::debug!(object = %obj.key, "cannot record the filler pid: {e}");
    }
}

/// A fill that holds its lease and waits to be started, as the
/// supervisor hands it out: [`Launcher::start`] spawns the fill task, which
/// reports its end to `mailbox`. Dropped unstarted, the lease goes and the
/// supervisor hears that the fill paused.
pub(crate) fn launcher(
    obj: &Arc<ObjectShared>,
    plan: FillPlan,
    lease: WriterLease,
    mailbox: mpsc::UnboundedSender<Command>,
) -> Launcher {
    let mut pending = PendingFill {
        fill: Some((obj.clone(), plan, lease)),
        mailbox,
    };
    Launcher::new(move || {
        if let Some((obj, plan, lease)) = pending.fill.take() {
            filler::spawn(obj.clone(), plan, lease, pending.mailbox.clone());
            obj.publish_progress();
        }
    })
}

/// The fill inside a [`Launcher`], until it is started.
struct PendingFill {
    fill: Option<(Arc<ObjectShared>, FillPlan, WriterLease)>,
    mailbox: mpsc::UnboundedSender<Command>,
}

impl Drop for PendingFill {
    fn drop(&mut self) {
        if let Some((_, _, lease)) = self.fill.take() {
            drop(lease);
            let _ = self.mailbox.send(Command::FillEnded(Ok(FillEnd::Paused)));
        }
    }
}

/// Appends a Clear record for every done chunk under `lease` (the object
/// restarts from nothing: its stored chunks cannot be proven to be of the
/// source's current version).
pub(crate) fn forget_chunks(obj: &ObjectShared, lease: &mut WriterLease) -> Result<()> {
    let records: Vec<Record> = obj
        .state
        .lock()
        .done
        .iter()
        .map(|index| Record::Clear { index })
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    lease.writer.append(&records)?;
    obj.state.lock().done.clear();
    lease.cvs.iter_mut().for_each(|cv| *cv = None);
    obj.publish_progress();
    Ok(())
}

/// Whether another process holds the index lock of `obj` (fills it). The
/// lock is let go at once when it was free.
pub(crate) fn lock_held_elsewhere(obj: &ObjectShared) -> Result<bool> {
    Ok(crate::layout::try_lock_exclusive(&obj.index_path())?.is_none())
}

/// A plan from the store's source factory and the object's header, for
/// objects opened from disk (resume, repair, reads by hash).
pub(crate) fn factory_plan(obj: &ObjectShared) -> Result<FillPlan> {
    let Some(factory) = obj.host.options().source_factory.clone() else {
        return Err(Error::NoSource {
            key: obj.key.clone(),
            url: obj.header.source.clone(),
        });
    };
    let source = factory(&obj.header.source).map_err(|cause| Error::Source {
        url: obj.header.source.clone(),
        cause,
    })?;
    Ok(FillPlan {
        source,
        alternates: Vec::new(),
        stall: crate::chain::DEFAULT_ALTERNATE_STALL,
        info: SourceInfo {
            len: obj.header.len,
            validator: obj.header.validator.clone(),
            ranges: true,
        },
        options: FillOptions::default(),
        digests: vec![crate::digest::Algo::Sha256],
        expected_root: None,
    })
}
