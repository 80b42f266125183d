//! What an object needs from the store it lives in, as a trait the store
//! implements, so that the object (and the filler, which works on objects)
//! depends on this interface and not on the store's, the supervisor's or
//! the filler's module: data flows one way, store → supervisor → filler →
//! object → readers.
//!
//! An object asks its host to start its supervisor (the task that decides
//! who fills it, see `lifecycle`); what a fill is and who runs it stays
//! behind the store.

use std::path::Path;
use std::sync::Weak;

use tokio::sync::mpsc;

use super::{Command, ObjectShared};
use crate::digest::Digest;
use crate::error::Result;
use crate::index::IndexHeader;
use crate::options::StoreOptions;

/// The store side of an object (see the module docs).
pub(crate) trait ObjectHost: Send + Sync {
    /// The store's options (source factory, durability cadence).
    fn options(&self) -> &StoreOptions;
    /// Starts the supervisor of `obj` on `runtime`, reading `commands`.
    fn spawn_supervisor(
        &self,
        obj: Weak<ObjectShared>,
        commands: mpsc::UnboundedReceiver<Command>,
        runtime: &tokio::runtime::Handle,
    );
    /// Makes `digest` a name of the complete object `key`.
    fn name_object(&self, digest: &Digest, key: &str) -> Result<()>;
    /// Records `digests` of the complete object in `dir` (its digests file).
    fn store_digests(&self, dir: &Path, header: &IndexHeader, digests: &[Digest]) -> Result<()>;
    /// The object `key` completed with `root`: share one data file with
    /// another complete copy of the same bytes, if there is one.
    fn share_data(&self, key: &str, header: &IndexHeader, root: &blake3::Hash);
    /// Writes `contents` to `path` (a file of an object directory)
    /// atomically: temp file in the store's `tmp/`, fsync, rename.
    fn write_atomic(&self, path: &Path, contents: &[u8]) -> Result<()>;
}
