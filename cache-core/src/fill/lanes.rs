//! How many range requests a fill keeps in flight: few while the origin
//! is fast, all of them from the moment it is not.
//!
//! More requests in flight help when each connection is slow on its own
//! (a round trip per request, an origin's per-connection limit): then
//! the fill needs [`FillOptions::connections`] of them to reach the link.
//! From a fast origin (this host, a fast LAN) a fill is CPU-bound, and
//! requests beyond the cores only take turns on them, each turn a
//! context switch, a contended lock or file write and a colder cache.
//!
//! So a fill starts with [`FillOptions::fast_origin_connections`] and
//! measures itself in windows of [`WINDOW`]: a window that brings less
//! than [`FillOptions::fast_origin_rate`] per request in flight opens the
//! rest, for the rest of the fill (it never narrows again: an origin that
//! was slow once is not trusted to stay fast). A far origin shows itself
//! in the first window, before its first byte has arrived.
//!
//! [`FillOptions::connections`]: crate::FillOptions::connections
//! [`FillOptions::fast_origin_connections`]: crate::FillOptions::fast_origin_connections
//! [`FillOptions::fast_origin_rate`]: crate::FillOptions::fast_origin_rate

use std::time::{Duration, Instant};

use crate::plan::FillOptions;

/// Length of one measuring window: long enough for a fast origin's first
/// chunks to arrive (a loopback nginx sends 1 MiB in ~2 ms), short enough
/// that a far origin's fill does not run long with fewer connections.
pub(super) const WINDOW: Duration = Duration::from_millis(50);

/// The lane count of one fill and the window it is measuring.
#[derive(Debug)]
pub(super) struct LaneRamp {
    narrow: usize,
    rate: u64,
    wide: bool,
    window_start: Instant,
    /// The fill's committed bytes when the window started.
    window_bytes: u64,
}

impl LaneRamp {
    /// A ramp starting now, with `done_bytes` already committed.
    pub(super) fn new(options: &FillOptions, now: Instant, done_bytes: u64) -> LaneRamp {
        let narrow = options.fast_origin_connections.max(1);
        LaneRamp {
            narrow,
            rate: options.fast_origin_rate,
            // Nothing to ramp up to.
            wide: narrow >= options.connections,
            window_start: now,
            window_bytes: done_bytes,
        }
    }

    /// Requests to keep in flight when the sources allow `max`.
    pub(super) fn lanes(&self, max: usize) -> usize {
        if self.wide {
            max
        } else {
            self.narrow.min(max)
        }
    }

    /// Whether every lane is open (nothing left to measure).
    pub(super) fn is_wide(&self) -> bool {
        self.wide
    }

    /// When the current window ends.
    pub(super) fn deadline(&self) -> Instant {
        self.window_start + WINDOW
    }

    /// Ends the window at `now` with `done_bytes` committed so far, and
    /// `lanes` requests allowed during it; returns true when that opened
    /// every lane.
    pub(super) fn tick(&mut self, now: Instant, done_bytes: u64, lanes: usize) -> bool {
        if self.wide {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return false;
        }
        let got = done_bytes.saturating_sub(self.window_bytes);
        let want = self.rate as f64 * lanes.max(1) as f64 * elapsed.as_secs_f64();
        self.window_start = now;
        self.window_bytes = done_bytes;
        if (got as f64) < want {
            self.wide = true;
        }
        self.wide
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(connections: usize, narrow: usize) -> FillOptions {
        FillOptions {
            connections,
            fast_origin_connections: narrow,
            fast_origin_rate: 100_000_000,
            ..FillOptions::default()
        }
    }

    #[test]
    fn a_fast_origin_keeps_the_narrow_lanes() {
        let t0 = Instant::now();
        let mut r = LaneRamp::new(&options(8, 2), t0, 0);
        assert_eq!(r.lanes(8), 2);
        // 2 lanes x 100 MB/s x 50 ms = 10 MB wanted per window.
        let mut bytes = 0;
        for i in 1..=20 {
            bytes += 12_000_000;
            assert!(!r.tick(t0 + WINDOW * i, bytes, 2), "window {i}");
        }
        assert_eq!(r.lanes(8), 2);
        assert!(!r.is_wide());
    }

    #[test]
    fn one_slow_window_opens_every_lane_for_good() {
        let t0 = Instant::now();
        let mut r = LaneRamp::new(&options(8, 2), t0, 0);
        assert!(!r.tick(t0 + WINDOW, 12_000_000, 2));
        assert!(r.tick(t0 + WINDOW * 2, 12_000_000 + 9_000_000, 2));
        assert_eq!(r.lanes(8), 8);
        // Fast again: stays wide.
        assert!(!r.tick(t0 + WINDOW * 3, 100_000_000, 8));
        assert_eq!(r.lanes(8), 8);
    }

    #[test]
    fn a_far_origin_opens_at_the_first_window() {
        // Nothing arrived in the first 50 ms (a round trip or more).
        let t0 = Instant::now();
        let mut r = LaneRamp::new(&options(8, 2), t0, 0);
        assert_eq!(r.deadline(), t0 + WINDOW);
        assert!(r.tick(t0 + WINDOW, 0, 2));
        assert_eq!(r.lanes(8), 8);
    }

    #[test]
    fn early_ticks_and_resumed_bytes_do_not_count() {
        let t0 = Instant::now();
        // A resume: 500 MB were already there.
        let mut r = LaneRamp::new(&options(8, 2), t0, 500_000_000);
        assert!(
            !r.tick(t0 + WINDOW / 2, 500_000_000, 2),
            "before the window ends"
        );
        assert!(r.tick(t0 + WINDOW, 500_000_000 + 1_000_000, 2));
    }

    #[test]
    fn the_rate_scales_with_the_lanes_allowed() {
        let t0 = Instant::now();
        // One lane allowed (an alternate serving): 5 MB per window suffice.
        let mut r = LaneRamp::new(&options(8, 2), t0, 0);
        assert!(!r.tick(t0 + WINDOW, 5_500_000, 1));
        assert!(r.tick(t0 + WINDOW * 2, 5_500_000 + 5_500_000, 2));
    }

    #[test]
    fn nothing_to_ramp_when_narrow_is_all() {
        let t0 = Instant::now();
        let r = LaneRamp::new(&options(2, 2), t0, 0);
        assert!(r.is_wide());
        assert_eq!(r.lanes(2), 2);
        let one = LaneRamp::new(&options(1, 4), t0, 0);
        assert_eq!(one.lanes(1), 1);
        // The sources' limit still applies when narrow.
        let r = LaneRamp::new(&options(8, 4), t0, 0);
        assert_eq!(r.lanes(1), 1);
    }
}
