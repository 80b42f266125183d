//! What an object needs from the store it lives in, as a trait the store
//! implements, so that the object (and the filler, which works on objects)
//! depends on this interface and not on the store's or the filler's module:
//! data flows one way, store → filler → object → readers.
//!
//! An object asks for a fill through [`ObjectHost::ensure_fill`] when a
//! reader waits on a chunk that nothing fetches, and its follower asks for
//! a take-over when the process that filled it is gone; what a fill is and
//! who runs it stays behind the store.

use std::path::Path;
use std::sync::Arc;

use super::ObjectShared;
use crate::digest::Digest;
use crate::error::Result;
use crate::index::IndexHeader;
use crate::options::StoreOptions;

/// The store side of an object (see the module docs).
pub(crate) trait ObjectHost: Send + Sync {
    /// The store's options (source factory, durability cadence).
    fn options(&self) -> &StoreOptions;
    /// A reader waits on `obj`: make sure something fills it (the fill
    /// that runs, another process's fill followed, or a new fill from the
    /// object's plan or the source factory). Fails when nothing can.
    fn ensure_fill(&self, obj: &ObjectShared) -> Result<()>;
    /// The follower of `obj` saw the filling process go: take the fill
    /// over if the lock is free now.
    fn take_over(&self, obj: &Arc<ObjectShared>) -> Result<()>;
    /// Makes `digest` a name of the complete object `key`.
    fn name_object(&self, digest: &Digest, key: &str) -> Result<()>;
    /// Records `digests` of the complete object in `dir` (its digests file).
    fn store_digests(&self, dir: &Path, header: &IndexHeader, digests: &[Digest]) -> Result<()>;
    /// The object `key` completed with `root`: share one data file with
    /// another complete copy of the same bytes, if there is one.
    fn share_data(&self, key: &str, header: &IndexHeader, root: &blake3::Hash);
}
