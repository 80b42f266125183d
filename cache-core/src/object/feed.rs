//! A change feed of one object's chunk map, for live status pages.
//!
//! Every change of a chunk's state — complete, requested from the source
//! (in flight), released by a request that ended or was cut, demanded or
//! no longer demanded by a waiting reader, found damaged, withdrawn (an
//! announced chunk a take-over fetches again) — is sent as a
//! small [`ChunkChange`] on a tokio broadcast channel, *while the object's
//! state lock is held*. [`Object::chunk_feed`] takes a snapshot of the
//! chunk map and subscribes under that same lock, so a subscriber sees
//! every change after its snapshot exactly once.
//!
//! The cost is O(changes): one send per committed chunk, per request start
//! and end, per demand; with no subscriber a send is one uncontended
//! mutex. A subscriber that falls more than [`FEED_CAPACITY`] changes
//! behind gets `RecvError::Lagged` and takes a new snapshot instead of
//! growing a queue.

use std::ops::Range;

use roaring::RoaringBitmap;
use tokio::sync::broadcast;

use super::{Object, ObjectShared, State};

/// Changes a subscriber may fall behind before it must resync.
pub const FEED_CAPACITY: usize = 4096;

/// One change of an object's chunk map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkChange {
    /// These chunks are complete (visible to readers).
    Done(Range<u32>),
    /// A request for these chunks was sent to the source.
    InFlight(Range<u32>),
    /// A request ended or was cut short: those of these chunks that are not
    /// complete are missing again (a later `InFlight` may claim them).
    Released(Range<u32>),
    /// A reader waits for this chunk (it is fetched first).
    Demanded(u32),
    /// No reader waits for this chunk any more.
    Undemanded(u32),
    /// Verification found this chunk damaged and cleared it: missing until
    /// refetched.
    Damaged(u32),
    /// These chunks, announced complete by the process that filled the
    /// object but not recorded by it, are missing again: that process went
    /// away first and this one took the fill over (or the index was
    /// rewritten, by a repair or a restart); whoever fills the object
    /// fetches them again.
    Withdrawn(Range<u32>),
    /// The fill state changed (see [`Object::progress`]).
    State,
}

/// A snapshot of an object's chunk map (the states a page draws).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkMap {
    /// Chunks the object has.
    pub chunk_count: u32,
    /// Complete chunks.
    pub done: RoaringBitmap,
    /// Chunks requested from the source and not complete yet.
    pub in_flight: RoaringBitmap,
    /// Chunks readers of this process wait for.
    pub demanded: RoaringBitmap,
    /// Chunks found damaged and not refetched yet.
    pub damaged: RoaringBitmap,
}

impl ChunkMap {
    /// Applies one change (what a subscriber does with its snapshot).
    pub fn apply(&mut self, change: &ChunkChange) {
        match change {
            ChunkChange::Done(r) => {
                self.done.insert_range(r.clone());
                self.in_flight.remove_range(r.clone());
                self.damaged.remove_range(r.clone());
            }
            ChunkChange::InFlight(r) => {
                let mut claimed = RoaringBitmap::new();
                claimed.insert_range(r.clone());
                self.in_flight |= claimed - &self.done;
            }
            ChunkChange::Released(r) => {
                self.in_flight.remove_range(r.clone());
            }
            ChunkChange::Demanded(c) => {
                self.demanded.insert(*c);
            }
            ChunkChange::Undemanded(c) => {
                self.demanded.remove(*c);
            }
            ChunkChange::Damaged(c) => {
                self.done.remove(*c);
                self.damaged.insert(*c);
            }
            ChunkChange::Withdrawn(r) => {
                self.done.remove_range(r.clone());
            }
            ChunkChange::State => {}
        }
    }
}

/// The ranges of consecutive values of `bits`, in order.
pub fn ranges(bits: &RoaringBitmap) -> Vec<Range<u32>> {
    let mut out: Vec<Range<u32>> = Vec::new();
    for c in bits.iter() {
        match out.last_mut() {
            Some(r) if r.end == c => r.end = c + 1,
            _ => out.push(c..c + 1),
        }
    }
    out
}

impl ObjectShared {
    /// Sends `change` (call with the state lock held, so snapshots and
    /// changes stay in order). No subscriber is not an error.
    pub(crate) fn send_change(&self, change: ChunkChange) {
        let _ = self.feed.send(change);
    }

    /// The filler sent a request for `chunks`.
    pub(crate) fn note_in_flight(&self, chunks: Range<u32>) {
        let mut st = self.state.lock();
        let mut claimed = RoaringBitmap::new();
        claimed.insert_range(chunks.clone());
        let claimed = claimed - &st.done;
        st.in_flight |= claimed;
        self.send_change(ChunkChange::InFlight(chunks));
    }

    /// A request of the filler ended or was cut: `chunks` are no longer
    /// claimed by it.
    pub(crate) fn note_released(&self, chunks: Range<u32>) {
        if chunks.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        st.in_flight.remove_range(chunks.clone());
        self.send_change(ChunkChange::Released(chunks));
    }

    /// No request is running any more (the fill ended): releases all.
    pub(crate) fn release_all_in_flight(&self, st: &mut State) {
        for r in ranges(&st.in_flight) {
            self.send_change(ChunkChange::Released(r));
        }
        st.in_flight.clear();
    }
}

impl Object {
    /// A snapshot of the chunk map and a receiver of every change after it
    /// (see `ChunkChange` for what each change means). On `Lagged`, call again.
    pub fn chunk_feed(&self) -> (ChunkMap, broadcast::Receiver<ChunkChange>) {
        let s = &self.shared;
        let st = s.state.lock();
        let rx = s.feed.subscribe();
        let map = ChunkMap {
            chunk_count: s.header.chunk_count(),
            done: st.done.clone(),
            in_flight: st.in_flight.clone(),
            demanded: st.demand.chunks().collect(),
            damaged: st.damaged.clone(),
        };
        (map, rx)
    }
}

impl crate::Store {
    /// The complete chunks of object `key` as recorded in its index,
    /// without opening the object (no follower, no LRU touch): for status
    /// pages showing objects nobody uses right now.
    pub fn stored_chunk_map(&self, key: &str) -> crate::Result<ChunkMap> {
        let path = self
            .dir()
            .join(crate::layout::OBJECTS)
            .join(key)
            .join(crate::layout::INDEX_FILE);
        let (_, header, state) = crate::index::IndexReader::open(&path)?;
        Ok(ChunkMap {
            chunk_count: header.chunk_count(),
            done: state.done,
            ..ChunkMap::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_bits() {
        let bits: RoaringBitmap = [0u32, 1, 2, 5, 7, 8].into_iter().collect();
        assert_eq!(ranges(&bits), vec![0..3, 5..6, 7..9]);
        assert!(ranges(&RoaringBitmap::new()).is_empty());
    }

    #[test]
    fn apply_keeps_done_over_in_flight() {
        let mut m = ChunkMap {
            chunk_count: 10,
            ..ChunkMap::default()
        };
        m.apply(&ChunkChange::InFlight(0..4));
        m.apply(&ChunkChange::Done(0..2));
        m.apply(&ChunkChange::Released(0..4));
        assert_eq!(ranges(&m.done), vec![0..2]);
        assert!(m.in_flight.is_empty());
        m.apply(&ChunkChange::InFlight(0..4));
        assert_eq!(
            ranges(&m.in_flight),
            vec![2..4],
            "done chunks are not in flight"
        );
        m.apply(&ChunkChange::Damaged(1));
        assert_eq!(ranges(&m.done), vec![0..1]);
        assert_eq!(ranges(&m.damaged), vec![1..2]);
        m.apply(&ChunkChange::Done(1..2));
        assert!(m.damaged.is_empty());
    }
}
