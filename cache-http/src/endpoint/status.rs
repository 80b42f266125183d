//! The objects this endpoint serves, for the `active_fills` metric. (The
//! `/status` document and the status page live in [`super::live`].)

use std::collections::HashMap;

use cache_core::{FillState, Object};
use parking_lot::Mutex;

struct Tracked {
    object: Object,
}

/// The objects this endpoint has served recently, for live status. A
/// handle is kept while the object fills or is read, and released once
/// nobody reads it and it is complete, failed or paused (so eviction is not
/// blocked by status bookkeeping).
#[derive(Default)]
pub(crate) struct Tracker {
    objects: Mutex<HashMap<String, Tracked>>,
}

fn idle_done(t: &Tracked) -> bool {
    let state = t.object.progress().state;
    t.object.readers() == 0
        && matches!(
            state,
            FillState::Complete | FillState::Failed(_) | FillState::Idle
        )
}

impl Tracker {
    /// Remembers `object` (a request is about to read it).
    pub(crate) fn track(&self, object: &Object) {
        let mut map = self.objects.lock();
        // Every request of an object tracked already ends here: no key
        // copied, no sweep (housekeeping prunes).
        if map.contains_key(object.key()) {
            return;
        }
        map.retain(|_, t| !idle_done(t));
        map.entry(object.key().to_owned())
            .or_insert_with(|| Tracked {
                object: object.clone(),
            });
    }

    /// Lets go of objects nobody reads any more (so eviction may take
    /// them).
    pub(crate) fn prune(&self) {
        self.objects.lock().retain(|_, t| !idle_done(t));
    }

    /// Number of fills this process runs for the objects it serves, from
    /// memory (a scrape must not read every object's index).
    pub(crate) fn active_fills(&self) -> usize {
        self.objects
            .lock()
            .values()
            .filter(|t| t.object.progress().state == FillState::Filling)
            .count()
    }
}
