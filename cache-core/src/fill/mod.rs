//! Filling objects from a [`Source`]: one filler per object.
//!
//! * [`scheduler`] decides which chunks to request (demand first).
//! * `filler` runs the requests, up to N at once plus one lane kept for
//!   demands, and turns their bytes into committed chunks.
//! * `durability` batches the `fdatasync` of the data file and the
//!   appending of index records (data first, never one sync per chunk).
//!
//! Who fills: the process that holds the exclusive OS lock on the object's
//! index file. In one process, every request attaches to the running fill
//! (the object's phase says `Filling`); another process follows the index
//! and takes over when the lock holder dies.

mod alternates;
mod durability;
mod fetch;
mod filler;
mod scheduler;
mod verify;

use std::fs::File;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::IndexWriter;
use crate::object::{ObjectShared, Phase};
use crate::source::SourceInfo;

pub(crate) use crate::plan::{FillOptions, FillPlan};
pub use alternates::{chunk_verify_failures, count_chunk_verify_failure};
pub use verify::VerifyReport;

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

/// Starts filling `obj` with `plan`, or attaches to the fill that runs.
pub(crate) fn start_fill(obj: &Arc<ObjectShared>, plan: FillPlan) -> Result<()> {
    if let Some(launch) = prepare_fill(obj, plan)? {
        launch.spawn();
    }
    Ok(())
}

/// The file work of [`start_fill`] (the lease, with its index replay),
/// for a caller on a blocking thread: the fill task itself is spawned
/// later by [`Launch::spawn`] from the caller's task. Spawned from there,
/// it runs only once that task yields, so the request that started the
/// fill has said which chunk it waits for before the fill claims its
/// first requests (a fill spawned from a blocking thread would start on
/// another worker at once and claim the object in order first).
pub(crate) fn prepare_fill(obj: &Arc<ObjectShared>, plan: FillPlan) -> Result<Option<Launch>> {
    {
        let mut st = obj.state.lock();
        st.plan = Some(plan.clone());
        // Someone wants the object filled again.
        obj.released
            .store(false, std::sync::atomic::Ordering::Release);
        match st.phase {
            Phase::Filling | Phase::Complete => return Ok(None),
            Phase::Idle | Phase::Following | Phase::Failed(_) => st.phase = Phase::Filling,
        }
    }
    lease_for(obj, plan)
}

/// A fill that holds its lease and waits to be spawned.
pub(crate) struct Launch {
    obj: Arc<ObjectShared>,
    plan: FillPlan,
    lease: WriterLease,
}

impl Launch {
    /// Spawns the fill task (needs a runtime; does no I/O).
    pub(crate) fn spawn(self) {
        let obj = self.obj.clone();
        filler::spawn(self.obj, self.plan, self.lease);
        obj.publish_progress();
    }
}

/// Called by the follower: takes the fill over if the lock is free now.
pub(crate) fn try_take_over(obj: &Arc<ObjectShared>) -> Result<()> {
    let plan = match obj.state.lock().plan.clone() {
        Some(plan) => plan,
        None => factory_plan(obj)?,
    };
    {
        let mut st = obj.state.lock();
        match st.phase {
            Phase::Following | Phase::Idle => {
                st.plan = Some(plan.clone());
                st.phase = Phase::Filling;
            }
            _ => return Ok(()),
        }
    }
    begin(obj, plan)
}

/// The object is marked `Filling` by the caller; lease, then spawn.
fn begin(obj: &Arc<ObjectShared>, plan: FillPlan) -> Result<()> {
    if let Some(launch) = lease_for(obj, plan)? {
        launch.spawn();
    }
    Ok(())
}

/// The object is marked `Filling` by the caller: takes the lease, and
/// returns the fill to spawn (none when the object turned out complete or
/// another process fills it: it is followed then).
fn lease_for(obj: &Arc<ObjectShared>, plan: FillPlan) -> Result<Option<Launch>> {
    match try_lease(obj) {
        Ok(Some(lease)) => {
            if obj.state.lock().root.is_some() {
                obj.set_phase(Phase::Complete);
                return Ok(None);
            }
            obj.state.lock().watching = false;
            Ok(Some(Launch {
                obj: obj.clone(),
                plan,
                lease,
            }))
        }
        Ok(None) => {
            obj.set_phase(Phase::Following);
            obj.ensure_watching();
            Ok(None)
        }
        Err(e) => {
            obj.set_phase(Phase::Failed(Arc::new(e.clone())));
            Err(e)
        }
    }
}

/// Makes sure something fills `obj` (a reader is waiting): the fill that
/// runs, the plan of an earlier fetch, or a source from the store's source
/// factory. Fails when nothing can fill it.
pub(crate) fn ensure_fill(obj: &ObjectShared) -> Result<()> {
    let Some(obj) = obj.me.upgrade() else {
        return Ok(());
    };
    let plan = {
        let st = obj.state.lock();
        match st.phase {
            Phase::Filling | Phase::Complete | Phase::Following => return Ok(()),
            Phase::Idle | Phase::Failed(_) => st.plan.clone(),
        }
    };
    let plan = match plan {
        Some(p) => p,
        None => match factory_plan(&obj) {
            Ok(p) => p,
            // Nothing here can fetch it, but another process may be
            // filling it: follow that fill instead of failing the reader.
            Err(e @ Error::NoSource { .. }) => {
                return if lock_held_elsewhere(&obj)? {
                    obj.set_phase(Phase::Following);
                    obj.ensure_watching();
                    Ok(())
                } else {
                    Err(e)
                };
            }
            Err(e) => return Err(e),
        },
    };
    start_fill(&obj, plan)
}

/// Whether another process holds the index lock of `obj` (fills it). The
/// lock is let go at once when it was free.
fn lock_held_elsewhere(obj: &ObjectShared) -> Result<bool> {
    Ok(crate::layout::try_lock_exclusive(&obj.index_path())?.is_none())
}

/// A plan from the store's source factory and the object's header, for
/// objects opened from disk (resume, repair, reads by hash).
fn factory_plan(obj: &ObjectShared) -> Result<FillPlan> {
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
