//! Following a fill that another process runs.
//!
//! The filling process holds an exclusive OS lock on the object's index
//! file and appends a record for each durable chunk. A follower tails the
//! index (a cheap `read` of new bytes every few milliseconds: there is no
//! portable cross-process wake-up), publishes the new chunks to its readers,
//! and, when a fill is wanted here, tries the lock now and then: the lock
//! dies with its holder, so a crashed filler is taken over within a poll.

use std::sync::Arc;
use std::time::Duration;

use super::{ObjectShared, Phase};
use crate::index::IndexReader;

/// How often a follower looks for new index records.
const POLL: Duration = Duration::from_millis(20);
/// Lock attempts happen every this many polls.
const TAKEOVER_EVERY: u32 = 5;

impl ObjectShared {
    /// Starts the follower task unless one runs (needs a tokio runtime;
    /// without one, the object is only refreshed when reopened).
    pub(crate) fn ensure_watching(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut st = self.state.lock();
            if st.watching || matches!(st.phase, Phase::Complete | Phase::Filling) {
                return;
            }
            st.watching = true;
        }
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut reader: Option<IndexReader> = None;
            let mut tick: u32 = 0;
            loop {
                tokio::time::sleep(POLL).await;
                let Some(obj) = weak.upgrade() else { return };
                let stop = {
                    let mut st = obj.state.lock();
                    let stop = matches!(st.phase, Phase::Complete | Phase::Filling);
                    if stop {
                        st.watching = false;
                    }
                    stop
                };
                if stop {
                    return;
                }
                if reader.is_none() {
                    match IndexReader::open(&obj.index_path()) {
                        Ok((r, _, state)) => {
                            // The replay's state as it is (its own rules):
                            // no records made up to carry it.
                            obj.follow_index(state);
                            reader = Some(r);
                        }
                        Err(e) => tracing::warn!(object = %obj.key, "cannot follow index: {e}"),
                    }
                }
                if let Some(r) = reader.as_mut() {
                    match r.poll() {
                        Ok(records) if !records.is_empty() => obj.apply_records(&records),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(object = %obj.key, "cannot follow index: {e}"),
                    }
                }
                tick = tick.wrapping_add(1);
                if tick.is_multiple_of(TAKEOVER_EVERY) {
                    // Take over when this process wants the object filled:
                    // it fetched it (a plan), or readers wait and the
                    // store can make a source for it.
                    let wanted = {
                        let st = obj.state.lock();
                        st.plan.is_some()
                            || (!st.demand.is_empty()
                                && obj.host.options().source_factory.is_some())
                    };
                    if wanted {
                        // Clears `watching` itself when it takes over.
                        if let Err(e) = obj.host.take_over(&obj) {
                            tracing::warn!(object = %obj.key, "take-over failed: {e}");
                        }
                    }
                }
            }
        });
    }
}
