//! Which chunks to fetch next: demand first, then the lowest missing chunk.
//!
//! The [`FillScheduler`] is pure bookkeeping (no I/O, no clock) so its
//! decisions can be tested exhaustively. The filler asks it for the next
//! run of chunks whenever a connection is free and tells it when chunks
//! complete and requests end.
//!
//! A demanded chunk that sits deep inside a running request (a 16 MiB
//! prefetch that will reach it only after many chunks) is not left to
//! wait: that request is *cut* just before it ([`FillScheduler::take_cuts`])
//! and the chunk gets a request of its own.

use std::collections::HashMap;
use std::ops::Range;

use roaring::RoaringBitmap;

pub use crate::plan::FillPolicy;

/// Identifies one request of a fill.
pub type RunId = u64;

/// A request to make: fetch `chunks` (in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: RunId,
    pub chunks: Range<u32>,
}

/// Decides the order chunks are requested in.
#[derive(Debug)]
pub struct FillScheduler {
    chunk_count: u32,
    done: RoaringBitmap,
    in_flight: RoaringBitmap,
    /// Chunks each running request still owns (its end may be cut).
    runs: HashMap<RunId, Range<u32>>,
    next_id: RunId,
    cuts: Vec<(RunId, u32)>,
    policy: FillPolicy,
    /// Longest run one request may cover, in chunks.
    max_run: u32,
    /// Chunks fetched after a demanded one, in the same request.
    readahead: u32,
    /// Every chunk below `cursor` is done (lets eager scans skip the prefix).
    cursor: u32,
    /// The source cannot serve ranges: one request for everything.
    single_stream: bool,
    /// The one-stream request running, if any.
    stream_run: Option<RunId>,
    /// The one stream starts at offset 0, not at the first missing chunk
    /// (a resumed stream was answered with the whole object).
    stream_from_zero: bool,
}

impl FillScheduler {
    /// A scheduler for `chunk_count` chunks of which `done` are complete.
    pub fn new(
        chunk_count: u32,
        done: RoaringBitmap,
        policy: FillPolicy,
        max_run: u32,
        readahead: u32,
    ) -> Self {
        let mut s = FillScheduler {
            chunk_count,
            done,
            in_flight: RoaringBitmap::new(),
            runs: HashMap::new(),
            next_id: 0,
            cuts: Vec::new(),
            policy,
            max_run: max_run.max(1),
            readahead,
            cursor: 0,
            single_stream: false,
            stream_run: None,
            stream_from_zero: false,
        };
        s.advance_cursor();
        s
    }

    /// All chunks are complete.
    pub fn is_complete(&self) -> bool {
        self.done.len() == u64::from(self.chunk_count)
    }

    /// How many chunks are complete.
    pub fn done_chunks(&self) -> u64 {
        self.done.len()
    }

    /// Whether chunk `c` is complete.
    pub fn is_done(&self, c: u32) -> bool {
        self.done.contains(c)
    }

    /// Switches to one stream for the whole object (the source ignores
    /// ranges). Takes effect once the running requests have ended.
    pub fn set_single_stream(&mut self) {
        self.single_stream = true;
    }

    /// Whether the fill runs as one stream.
    pub fn single_stream(&self) -> bool {
        self.single_stream
    }

    /// Whether request `id` is the one stream.
    pub fn is_stream_run(&self, id: RunId) -> bool {
        self.stream_run == Some(id)
    }

    /// Makes the one stream start at offset 0: the source answered a
    /// stream resumed further on with the whole object.
    pub fn set_stream_from_zero(&mut self) {
        self.stream_from_zero = true;
    }

    /// Whether the one stream starts at offset 0.
    pub fn stream_from_zero(&self) -> bool {
        self.stream_from_zero
    }

    /// The next request to make, its chunks claimed as in flight.
    ///
    /// `demanded` lists chunks readers wait for, oldest demand first.
    /// `may_prefetch` is false when only a demand may use the free slot
    /// (the reserved demand lane).
    pub fn next_run(&mut self, demanded: &[u32], may_prefetch: bool) -> Option<Run> {
        if self.single_stream {
            if !self.in_flight.is_empty() || self.is_complete() {
                return None;
            }
            // From the first missing chunk (a source that ignores ranges
            // only for some requests still serves that), or from 0 once
            // such a stream got the whole object.
            let first = if self.stream_from_zero {
                0
            } else {
                self.cursor
            };
            let run = self.claim(first..self.chunk_count);
            self.stream_run = Some(run.id);
            return Some(run);
        }
        for &d in demanded {
            if d >= self.chunk_count || self.done.contains(d) {
                continue;
            }
            if self.in_flight.contains(d) && !self.cut_before(d) {
                continue; // it arrives soon in its request
            }
            let limit = self.max_run.min(self.readahead.saturating_add(1));
            let end = self.run_end(d, limit);
            return Some(self.claim(d..end));
        }
        if !may_prefetch || self.policy == FillPolicy::Lazy {
            return None;
        }
        let mut c = self.cursor;
        while c < self.chunk_count && !self.is_missing(c) {
            c += 1;
        }
        if c >= self.chunk_count {
            return None;
        }
        let end = self.run_end(c, self.max_run);
        Some(self.claim(c..end))
    }

    /// Requests to cut short since the last call: `(run, new_end)` — the
    /// run must not commit chunks from `new_end` on.
    pub fn take_cuts(&mut self) -> Vec<(RunId, u32)> {
        std::mem::take(&mut self.cuts)
    }

    /// Chunk `index` is complete.
    pub fn chunk_done(&mut self, index: u32) {
        self.done.insert(index);
        self.in_flight.remove(index);
        self.advance_cursor();
    }

    /// Request `id` ended (finished, failed or cut short): its chunks that
    /// did not complete become missing again. Returns the chunks it still
    /// owned (its range, minus a cut-off tail).
    pub fn run_ended(&mut self, id: RunId) -> Option<Range<u32>> {
        let range = self.runs.remove(&id)?;
        self.in_flight.remove_range(range.clone());
        Some(range)
    }

    fn is_missing(&self, c: u32) -> bool {
        !self.done.contains(c) && !self.in_flight.contains(c)
    }

    fn run_end(&self, start: u32, limit: u32) -> u32 {
        let mut end = start + 1;
        while end < self.chunk_count && end - start < limit && self.is_missing(end) {
            end += 1;
        }
        end
    }

    fn claim(&mut self, chunks: Range<u32>) -> Run {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert_range(chunks.clone());
        self.runs.insert(id, chunks.clone());
        Run { id, chunks }
    }

    /// Cuts the run holding in-flight chunk `d` just before `d`, when `d`
    /// is more than one chunk away from what that run delivers next.
    fn cut_before(&mut self, d: u32) -> bool {
        let Some((&id, range)) = self.runs.iter().find(|(_, r)| r.contains(&d)) else {
            return false;
        };
        let mut next = range.start;
        while next < range.end && self.done.contains(next) {
            next += 1;
        }
        if d < next + 2 {
            return false;
        }
        let old_end = range.end;
        self.runs.insert(id, range.start..d);
        self.in_flight.remove_range(d..old_end);
        self.cuts.push((id, d));
        true
    }

    fn advance_cursor(&mut self) {
        while self.cursor < self.chunk_count && self.done.contains(self.cursor) {
            self.cursor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(n: u32, policy: FillPolicy) -> FillScheduler {
        FillScheduler::new(n, RoaringBitmap::new(), policy, 4, 2)
    }

    fn chunks(r: Option<Run>) -> Option<Range<u32>> {
        r.map(|r| r.chunks)
    }

    #[test]
    fn eager_fills_lowest_missing_in_merged_runs() {
        let mut s = sched(10, FillPolicy::Eager);
        assert_eq!(chunks(s.next_run(&[], true)), Some(0..4));
        assert_eq!(chunks(s.next_run(&[], true)), Some(4..8));
        assert_eq!(chunks(s.next_run(&[], true)), Some(8..10));
        assert_eq!(chunks(s.next_run(&[], true)), None);
    }

    #[test]
    fn runs_stop_at_done_chunks() {
        let done: RoaringBitmap = [2u32, 3].into_iter().collect();
        let mut s = FillScheduler::new(6, done, FillPolicy::Eager, 8, 2);
        assert_eq!(chunks(s.next_run(&[], true)), Some(0..2));
        assert_eq!(chunks(s.next_run(&[], true)), Some(4..6));
    }

    #[test]
    fn demand_comes_first_with_readahead() {
        let mut s = sched(100, FillPolicy::Eager);
        assert_eq!(chunks(s.next_run(&[90], false)), Some(90..93));
        // 90 is next in its run: no cut; the next demand and prefetch go.
        assert_eq!(chunks(s.next_run(&[90, 50], true)), Some(50..53));
        assert_eq!(chunks(s.next_run(&[90], true)), Some(0..4));
        assert_eq!(
            chunks(s.next_run(&[], false)),
            None,
            "no prefetch in the demand lane"
        );
        assert!(s.take_cuts().is_empty());
    }

    #[test]
    fn a_demand_deep_inside_a_running_request_cuts_it() {
        let mut s = FillScheduler::new(100, RoaringBitmap::new(), FillPolicy::Eager, 64, 2);
        let big = s.next_run(&[], true).unwrap();
        assert_eq!(big.chunks, 0..64);
        s.chunk_done(0);
        // Chunk 1 is next: no cut needed.
        assert_eq!(s.next_run(&[1], false), None);
        // Chunk 40 is far: cut the big run at 40, fetch 40.. on its own.
        assert_eq!(chunks(s.next_run(&[40], false)), Some(40..43));
        assert_eq!(s.take_cuts(), vec![(big.id, 40)]);
        // The cut run's tail is missing again (bar the demand run's part).
        assert_eq!(chunks(s.next_run(&[], true)), Some(43..100));
        s.run_ended(big.id);
        // Ending the cut run released only its own chunks.
        assert_eq!(chunks(s.next_run(&[], true)), Some(1..40));
    }

    #[test]
    fn lazy_fetches_only_demand() {
        let mut s = sched(10, FillPolicy::Lazy);
        assert_eq!(chunks(s.next_run(&[], true)), None);
        assert_eq!(chunks(s.next_run(&[9], true)), Some(9..10));
    }

    #[test]
    fn ended_runs_release_unfinished_chunks() {
        let mut s = sched(8, FillPolicy::Eager);
        let run = s.next_run(&[], true).unwrap();
        s.chunk_done(0);
        s.chunk_done(1);
        s.run_ended(run.id);
        assert_eq!(chunks(s.next_run(&[], true)), Some(2..6));
    }

    #[test]
    fn single_stream_claims_everything_once() {
        let mut s = sched(5, FillPolicy::Eager);
        s.set_single_stream();
        assert_eq!(chunks(s.next_run(&[3], true)), Some(0..5));
        assert_eq!(chunks(s.next_run(&[3], true)), None);
    }

    #[test]
    fn complete_when_all_done() {
        let mut s = sched(3, FillPolicy::Eager);
        for c in 0..3 {
            assert!(!s.is_complete());
            s.chunk_done(c);
        }
        assert!(s.is_complete());
        assert_eq!(chunks(s.next_run(&[1], true)), None);
    }
}
