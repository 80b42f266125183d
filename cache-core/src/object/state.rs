//! The state of an object as every status output names it.

use std::fmt;

/// What an object is doing, in the one vocabulary of `ls`, `/status`, the
/// store metrics and gc. [`crate::FillState`] is the finer view of one
/// process's fill (with the error); this is its status-level name, which
/// also covers objects nobody in this process has open
/// ([`crate::ObjectSummary::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectState {
    /// Every chunk is present and the BLAKE3 hash is known.
    Complete,
    /// This process fills it.
    Filling,
    /// Another process fills it; this one follows its index.
    Following,
    /// Verification cleared damaged chunks; incomplete until refetched.
    Damaged,
    /// The last fill in this process failed.
    Failed,
    /// Incomplete and nobody fills it (paused, interrupted, or never
    /// demanded past what it has).
    Partial,
}

impl ObjectState {
    /// Every state, in display order.
    pub const ALL: [ObjectState; 6] = [
        ObjectState::Complete,
        ObjectState::Filling,
        ObjectState::Following,
        ObjectState::Damaged,
        ObjectState::Failed,
        ObjectState::Partial,
    ];

    /// The lowercase name (`complete`, `filling`, ...), as printed.
    pub fn name(self) -> &'static str {
        match self {
            ObjectState::Complete => "complete",
            ObjectState::Filling => "filling",
            ObjectState::Following => "following",
            ObjectState::Damaged => "damaged",
            ObjectState::Failed => "failed",
            ObjectState::Partial => "partial",
        }
    }

    /// Whether some process is downloading it right now.
    pub fn is_filling(self) -> bool {
        matches!(self, ObjectState::Filling | ObjectState::Following)
    }
}

impl fmt::Display for ObjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
