//! Chunks readers are waiting for, oldest demand first.
//!
//! A demand lives exactly as long as the waiting reader: dropping the
//! reader's future (a client hung up) withdraws it, so the filler never
//! fetches ahead for a reader that left.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub(crate) struct DemandQueue {
    next_seq: u64,
    /// seq → chunk, in the order the demands arrived.
    order: BTreeMap<u64, u32>,
    /// chunk → (seq, number of readers waiting for it).
    chunks: HashMap<u32, (u64, usize)>,
}

impl DemandQueue {
    /// Adds a reader's demand; true when `chunk` was not demanded before.
    pub(crate) fn add(&mut self, chunk: u32) -> bool {
        if let Some((_, count)) = self.chunks.get_mut(&chunk) {
            *count += 1;
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, chunk);
        self.chunks.insert(chunk, (seq, 1));
        true
    }

    /// Withdraws a reader's demand; true when no reader demands `chunk`
    /// any more.
    pub(crate) fn remove(&mut self, chunk: u32) -> bool {
        if let Some((seq, count)) = self.chunks.get_mut(&chunk) {
            *count -= 1;
            if *count == 0 {
                let seq = *seq;
                self.chunks.remove(&chunk);
                self.order.remove(&seq);
                return true;
            }
        }
        false
    }

    /// Every demanded chunk, in no particular order.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.keys().copied()
    }

    /// Up to `max` demanded chunks, oldest first.
    pub(crate) fn oldest(&self, max: usize) -> Vec<u32> {
        self.order.values().take(max).copied().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_orders_demands() {
        let mut q = DemandQueue::default();
        q.add(7);
        q.add(3);
        q.add(7);
        assert_eq!(q.oldest(10), vec![7, 3]);
        q.remove(7);
        assert_eq!(q.oldest(10), vec![7, 3], "one reader still waits for 7");
        q.remove(7);
        assert_eq!(q.oldest(10), vec![3]);
        q.remove(3);
        assert!(q.is_empty());
        q.remove(3); // removing an absent demand is harmless
    }
}
