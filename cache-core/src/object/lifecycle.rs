//! An object's lifecycle: its states, the transitions between them, and
//! the messages that ask its supervisor for one.
//!
//! Every live object has one **supervisor** (`crate::supervisor`), a task
//! that alone decides who fills the object: it takes the writer's lease,
//! starts the fill, follows another process's fill, takes it over when
//! that process dies, runs verification, and sets the [`Phase`] — nothing
//! else writes it. Everyone else sends a [`Command`] and, where it needs
//! one, awaits the answer:
//!
//! * a fetch sends [`Command::Fill`] with its plan;
//! * a reader that waits on a chunk nothing fetches sends
//!   [`Command::Wanted`] (its demand is already queued: readers write the
//!   demand queue and subscribe to the bitmap, never the phase);
//! * [`crate::Object::verify`] sends [`Command::Verify`];
//! * the fill task reports its end with [`Command::FillEnded`].
//!
//! Because one task handles these one at a time, two decisions about one
//! object never race: no double lease, no fill started beside a take-over,
//! no verify during a fill of this process.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::plan::FillPlan;

/// What an object's fill is doing in this process: the lifecycle state
/// that only the supervisor sets. The moves it may make
/// ([`Phase::allows`]):
///
/// ```text
/// from                  to          when
/// Idle, Failed          Filling     a fetch or a waiting reader wants it; lease taken
/// Idle, Failed          Following   ... but another process holds the lease
/// Idle, Failed          Complete    ... and the index replayed under it has the root;
///                                   or (Idle) the index followed meanwhile completed
/// Idle, Failed          Failed      taking the lease (its index replay) failed
/// Filling               Complete    the fill committed every chunk and the root
/// Filling               Idle        the fill paused (lazy, nothing wanted) or its
///                                   last consumer left
/// Filling               Failed      the fill failed, panicked or was cancelled
/// Following             Filling     the holder died and the fill is wanted here
/// Following             Complete    the followed index completed
/// Following             Idle        the holder is gone and nothing here wants a fill
/// Following             Following,  a fetch tried the lease again
///                       Failed
/// any but Filling       Idle        verification cleared damaged chunks
/// ```
///
/// Never: a fill started over a running one, or a complete object filled
/// or followed again without a verification that found damage first.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Incomplete and nobody in this process fills it (another process
    /// may: the supervisor follows the index meanwhile).
    Idle,
    /// This process holds the lease and its fill task runs.
    Filling,
    /// Another process holds the lease; the supervisor tails its index
    /// and takes the fill over if that process dies while the fill is
    /// wanted here.
    Following,
    /// Every chunk is present and the BLAKE3 root is known.
    Complete,
    /// The last fill failed with this error (waiting readers get it).
    Failed(Arc<Error>),
}

impl Phase {
    /// Whether the lifecycle may move from `self` to `next` (see the
    /// diagram on the type).
    pub(crate) fn allows(&self, next: &Phase) -> bool {
        use Phase::*;
        match (self, next) {
            // A verification that cleared chunks: incomplete again.
            (Idle | Following | Complete | Failed(_), Idle) => true,
            (Idle | Following | Failed(_), Filling | Following | Complete | Failed(_)) => true,
            (Filling, Complete | Idle | Failed(_)) => true,
            _ => false,
        }
    }

    /// The phase a fill's end leaves the object in.
    pub(crate) fn after_fill(result: Result<FillEnd>) -> Phase {
        match result {
            Ok(FillEnd::Complete) => Phase::Complete,
            Ok(FillEnd::Paused) => Phase::Idle,
            Err(e) => Phase::Failed(Arc::new(e)),
        }
    }

    /// The phase's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Filling => "filling",
            Phase::Following => "following",
            Phase::Complete => "complete",
            Phase::Failed(_) => "failed",
        }
    }
}

/// How a fill ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FillEnd {
    /// Every chunk is committed and the root recorded.
    Complete,
    /// Stopped with chunks still missing: a lazy fill with no demand and
    /// no handle left, or the last consumer gave up.
    Paused,
}

/// A fill whose lease is taken, to be started from the task that asked
/// for it (see [`Command::Fill`]). Dropping it unstarted lets the lease go
/// and tells the supervisor the fill paused.
pub(crate) struct Launcher(Box<dyn FnOnce() + Send>);

impl Launcher {
    pub(crate) fn new(start: impl FnOnce() + Send + 'static) -> Launcher {
        Launcher(Box::new(start))
    }

    /// Spawns the fill task (needs a runtime; does no I/O).
    pub(crate) fn start(self) {
        (self.0)()
    }
}

/// What [`crate::Object::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunks that were present and re-hashed.
    pub chunks_checked: u64,
    /// Chunks whose bytes no longer match their chaining value. Their bits
    /// are cleared: the next fill fetches exactly these.
    pub damaged: Vec<u32>,
    /// The object's hash, when it is (still) complete.
    pub blake3: Option<blake3::Hash>,
}

/// A request to an object's supervisor (see the module docs).
pub(crate) enum Command {
    /// A fetch: fill with `plan`, or attach to (follow) what runs. The
    /// answer carries the fill to start when a new one was leased: the
    /// fetch starts it from its own task, so that a reader the caller
    /// starts right after is queued before the fill claims its first
    /// requests. `restart`: the stored chunks cannot be proven to be of
    /// the source's version (no validator), so they are forgotten first.
    Fill {
        plan: FillPlan,
        restart: bool,
        reply: oneshot::Sender<Result<Option<Launcher>>>,
    },
    /// A reader waits on a chunk and nothing fetches it: fill with the
    /// plan of an earlier fetch or a source from the store's factory, or
    /// follow another process's fill. Fails when nothing can fill it.
    Wanted { reply: oneshot::Sender<Result<()>> },
    /// Re-hash every present chunk; needs the object to itself.
    Verify {
        reply: oneshot::Sender<Result<VerifyReport>>,
    },
    /// The fill task ended (its lease already let go).
    FillEnded(Result<FillEnd>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Phase> {
        let e = Arc::new(Error::NotFound("x".into()));
        vec![
            Phase::Idle,
            Phase::Filling,
            Phase::Following,
            Phase::Complete,
            Phase::Failed(e),
        ]
    }

    #[test]
    fn transitions_follow_the_diagram() {
        let allowed: Vec<(&str, &str)> = all()
            .iter()
            .flat_map(|from| {
                all()
                    .into_iter()
                    .filter(|to| from.allows(to))
                    .map(|to| (from.name(), to.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let expected = [
            ("idle", "idle"),
            ("idle", "filling"),
            ("idle", "following"),
            ("idle", "complete"),
            ("idle", "failed"),
            ("filling", "idle"),
            ("filling", "complete"),
            ("filling", "failed"),
            ("following", "idle"),
            ("following", "filling"),
            ("following", "following"),
            ("following", "complete"),
            ("following", "failed"),
            ("complete", "idle"),
            ("failed", "idle"),
            ("failed", "filling"),
            ("failed", "following"),
            ("failed", "complete"),
            ("failed", "failed"),
        ];
        assert_eq!(allowed, expected);
        // Never: a second fill over a running one, or a complete object
        // filled, followed or failed without a verification first.
        assert!(!Phase::Filling.allows(&Phase::Filling));
        assert!(!Phase::Filling.allows(&Phase::Following));
        assert!(!Phase::Complete.allows(&Phase::Filling));
    }
}
