//! Following a fill that another process runs.
//!
//! The filling process holds an exclusive OS lock on the object's index
//! file and appends a record for each durable chunk. A follower learns of
//! chunks two ways:
//!
//! * **Wake-ups** (`wake`): the filler announces each chunk on a datagram
//!   socket this process binds, the moment it commits it in memory —
//!   before it is durable. The follower publishes it to its readers at
//!   once, as an *early* chunk that nothing durable trusts.
//! * **The index**: the follower tails it (a cheap `read` of new bytes),
//!   on every wake-up and on a timer as the fallback — every
//!   [`POLL_BOUND`] while its socket is bound, every [`POLL`] where none
//!   can be — and takes what it records as the truth, by the index's own
//!   rules: durable chunks, repairs, and the root that completes the
//!   object.
//!
//! When a fill is wanted here, the follower tries the lock every
//! [`TAKEOVER_EVERY`]: the lock dies with its holder, so a crashed filler
//! is taken over within that time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wake::WakeListener;
use super::{ObjectShared, Phase};
use crate::index::IndexReader;

/// How often a follower without a wake-up socket reads the index.
const POLL: Duration = Duration::from_millis(20);
/// How often a follower with a wake-up socket reads the index anyway (in
/// case a wake-up was dropped).
const POLL_BOUND: Duration = Duration::from_millis(100);
/// How often a follower that wants the object filled tries the lock.
const TAKEOVER_EVERY: Duration = Duration::from_millis(100);

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
        let header = self.header.clone();
        rt.spawn(async move {
            // Bound before the index is first read: a commit after that
            // read is announced to this socket (and an announcement also
            // names the filler's latest commits before it).
            let mut wake = match weak.upgrade() {
                Some(obj) => WakeListener::bind(&obj),
                None => return,
            };
            let mut reader: Option<IndexReader> = None;
            let poll = if wake.is_bound() { POLL_BOUND } else { POLL };
            let mut last_try = Instant::now();
            loop {
                let announced = tokio::select! {
                    () = tokio::time::sleep(poll) => None,
                    chunks = wake.recv(&header) => Some(chunks),
                };
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
                if let Some(chunks) = announced {
                    obj.take_announced(&chunks);
                }
                if let Some(r) = reader.as_mut() {
                    match r.poll() {
                        Ok(records) if !records.is_empty() => obj.apply_records(&records),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(object = %obj.key, "cannot follow index: {e}"),
                    }
                }
                if last_try.elapsed() >= TAKEOVER_EVERY {
                    last_try = Instant::now();
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
