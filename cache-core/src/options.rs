//! Options of a [`Store`](crate::Store): how objects found on disk get a
//! source, and how often fills make their chunks durable. Read by the
//! store, the objects and the filler alike, so it lives apart from all
//! three.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "internals")]
use crate::data::WriteFault;
use crate::source::{Source, SourceError};

/// Makes a [`Source`] for a source identity (URL) recorded in an object,
/// so the store can resume or repair objects it finds on disk.
pub type SourceFactory = Arc<dyn Fn(&str) -> Result<Arc<dyn Source>, SourceError> + Send + Sync>;

/// Test hook of [`StoreOptions::open_hook`]: called with an object's key.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub type OpenHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Options of a [`Store`](crate::Store).
#[derive(Clone)]
pub struct StoreOptions {
    /// Builds sources for objects found on disk (resume, repair, reads of
    /// incomplete objects opened by hash).
    pub source_factory: Option<SourceFactory>,
    /// Committed chunks are made durable (data `fdatasync`, then index
    /// records) at least this often; a crash loses at most this much
    /// progress. Followers in other processes are woken at each commit
    /// without waiting for it (where the system has Unix sockets; else
    /// they see chunks once durable).
    pub flush_interval: Duration,
    /// ... or as soon as this many bytes of chunks wait to be made durable.
    pub flush_bytes: u64,
    /// A fill starts the writeback of its data file each time this many
    /// more bytes of chunks were committed (Linux; 0: never), so the disk
    /// writes them while the download goes on and the flush that makes
    /// them durable finds them written or on their way. Without it the
    /// disk idles between flushes and each flush writes its whole batch:
    /// a 1 GiB fill from a loopback origin took 11 % longer (BENCHMARKS.md,
    /// fill at the disk's speed). Changes nothing about what is durable
    /// when.
    pub writeback_bytes: u64,
    /// The runtime objects' supervisors and fills run on. `None` (the
    /// default): the runtime of the call that starts them. A server that
    /// serves connections on runtimes of their own (one thread each) names
    /// its main runtime here, so a download is not tied to the thread of
    /// the request that started it.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Test hook: fails data writes (see [`WriteFault`]).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub write_fault: Option<WriteFault>,
    /// Test hook: called with the key each time an object is opened from
    /// disk or created, before its files are touched (a slow disk).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub open_hook: Option<OpenHook>,
    /// Benchmark switch: this process follows other processes' fills by
    /// polling their index only, without a wake-up socket (the behaviour
    /// before wake-ups, for comparisons).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub no_wake_ups: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            source_factory: None,
            flush_interval: Duration::from_millis(250),
            flush_bytes: 64 << 20,
            writeback_bytes: 16 << 20,
            runtime: None,
            #[cfg(feature = "internals")]
            write_fault: None,
            #[cfg(feature = "internals")]
            open_hook: None,
            #[cfg(feature = "internals")]
            no_wake_ups: false,
        }
    }
}

impl StoreOptions {
    /// Whether followers bind a wake-up socket (see `object::wake`).
    pub(crate) fn wake_ups(&self) -> bool {
        #[cfg(feature = "internals")]
        return !self.no_wake_ups;
        #[cfg(not(feature = "internals"))]
        true
    }

    /// The data-write fault hook of the `internals` feature, if any.
    pub(crate) fn write_fault(&self) -> Option<crate::data::WriteFault> {
        #[cfg(feature = "internals")]
        return self.write_fault.clone();
        #[cfg(not(feature = "internals"))]
        None
    }
}
