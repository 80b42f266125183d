//! The sources of one object, in the order they are asked.
//!
//! A fill copies an object from its **origin** (the source that names it:
//! its identity, validator and length make the object's key). A
//! [`SourceChain`] puts **alternates** in front of the origin — parent
//! caches now, a shared bucket later — each just another [`Source`]:
//!
//! * every range request goes to the first alternate still in good
//!   standing; when it fails (an error, a stall longer than the chain's
//!   stall bound, or a chunk that does not match a trusted manifest), the
//!   rest of that request goes to the next one, the origin last. The
//!   failing alternate is not asked again during this fill, so a source
//!   that is down or lies costs at most about one chunk's worth of time;
//! * when the caller knows the object's BLAKE3 root, the fill asks the
//!   sources for a [`Manifest`](crate::Manifest) (alternates first) and
//!   uses the first one whose chunk values merge to that root to check
//!   every chunk before it is committed, whoever sent it;
//! * without a known root an alternate is trusted as far as the checks of
//!   its own [`Source`] go (same length; a parent cache also vouches for
//!   the origin's validator) and the final root check; nothing proves a
//!   single chunk.
//!
//! Alternates are probed when the fill starts; one whose length differs
//! from the origin's, or whose probe fails, is left out (logged).

use std::sync::Arc;
use std::time::Duration;

use crate::source::Source;

/// Default bound on how long an alternate may go without delivering a
/// chunk before the fill gives up on it and asks the next source.
pub const DEFAULT_ALTERNATE_STALL: Duration = Duration::from_secs(10);

/// The sources of one object: alternates in order, then the origin.
#[derive(Clone)]
pub struct SourceChain {
    pub(crate) origin: Arc<dyn Source>,
    pub(crate) alternates: Vec<Arc<dyn Source>>,
    pub(crate) stall: Duration,
}

impl std::fmt::Debug for SourceChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alternates: Vec<String> = self.alternates.iter().map(|s| s.identity()).collect();
        f.debug_struct("SourceChain")
            .field("alternates", &alternates)
            .field("origin", &self.origin.identity())
            .finish()
    }
}

impl SourceChain {
    /// A chain of just the origin (what [`Store::fetch`](crate::Store::fetch) uses).
    pub fn new(origin: Arc<dyn Source>) -> SourceChain {
        SourceChain {
            origin,
            alternates: Vec::new(),
            stall: DEFAULT_ALTERNATE_STALL,
        }
    }

    /// Adds an alternate, asked after the ones added before and before the
    /// origin.
    pub fn with_alternate(mut self, source: Arc<dyn Source>) -> SourceChain {
        self.alternates.push(source);
        self
    }

    /// Sets how long an alternate may stall (no chunk delivered, or no
    /// answer to a probe or manifest request) before it is skipped.
    pub fn with_stall_timeout(mut self, stall: Duration) -> SourceChain {
        self.stall = stall;
        self
    }

    /// The origin.
    pub fn origin(&self) -> &Arc<dyn Source> {
        &self.origin
    }

    /// The alternates, in the order they are asked.
    pub fn alternates(&self) -> &[Arc<dyn Source>] {
        &self.alternates
    }
}
