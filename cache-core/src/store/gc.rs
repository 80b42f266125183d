//! Size-limited eviction. First to go are partial objects of an upstream
//! version that has since been superseded (a newer object of the same URL
//! exists: their fill can never resume, since bytes of two versions never
//! mix); then complete objects, least recently used first. Other partial
//! objects are kept (they resume), and an object being filled or read (in
//! any process) is never evicted.

use std::collections::HashMap;

use super::Store;
use crate::error::{Error, Result};
use crate::object::ObjectState;

/// What [`Store::gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Keys of the evicted objects, oldest first, with their disk bytes.
    pub evicted: Vec<(String, u64)>,
    /// Disk bytes of all objects before.
    pub bytes_before: u64,
    /// Disk bytes of all objects after (what remains).
    pub bytes_after: u64,
    /// Objects that would have been evicted but were in use.
    pub skipped_busy: Vec<String>,
}

impl Store {
    /// Evicts superseded partial objects, then least recently used complete
    /// objects, until the objects take at most `max_bytes` on disk (or
    /// nothing more can be evicted).
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport> {
        Ok(self.gc_plan(max_bytes, false)?.0)
    }

    /// What [`Store::gc`] would evict now, without evicting anything.
    /// Objects some process fills or reads now are reported in
    /// `skipped_busy`, as the real gc would (a reader arriving between the
    /// two keeps its object then).
    pub fn gc_dry_run(&self, max_bytes: u64) -> Result<GcReport> {
        Ok(self.gc_plan(max_bytes, true)?.0)
    }

    /// Like [`Store::gc`], but all or nothing: when the objects nobody
    /// uses cannot bring the store down to `max_bytes`, nothing is
    /// evicted (the report says what would have been, and
    /// `bytes_after > max_bytes` tells). For admission: a fill refused for
    /// room must not cost the store the objects it would have displaced.
    /// One listing of the store serves both the plan and the eviction.
    pub fn gc_to_fit(&self, max_bytes: u64) -> Result<GcReport> {
        let (plan, candidates) = self.gc_plan(max_bytes, true)?;
        if plan.bytes_after > max_bytes || plan.evicted.is_empty() {
            return Ok(plan);
        }
        // Evict what the plan chose; an object that became busy since is
        // skipped and the next candidate (in the same order) taken.
        self.gc_candidates(max_bytes, plan.bytes_before, &candidates, false)
    }

    /// Lists the store, orders the eviction candidates and evicts (or
    /// checks, with `dry_run`) them; returns the report and the ordered
    /// candidates.
    fn gc_plan(
        &self,
        max_bytes: u64,
        dry_run: bool,
    ) -> Result<(GcReport, Vec<super::ObjectSummary>)> {
        let mut objects = self.list()?;
        let total: u64 = objects.iter().map(|o| o.disk_bytes).sum();
        let mut newest: HashMap<String, u64> = HashMap::new();
        for o in &objects {
            let n = newest.entry(o.info.source.clone()).or_default();
            *n = (*n).max(o.created_unix);
        }
        let superseded = |o: &super::ObjectSummary| {
            // Incomplete and nobody downloads it (partial, or failed here).
            !o.state.is_filling()
                && o.state != ObjectState::Complete
                && newest
                    .get(&o.info.source)
                    .is_some_and(|&n| n > o.created_unix)
        };
        objects.retain(|o| o.state == ObjectState::Complete || superseded(o));
        // Superseded partials first (false < true), then least recently used.
        objects.sort_by_key(|o| (!superseded(o), o.last_used));
        let report = self.gc_candidates(max_bytes, total, &objects, dry_run)?;
        Ok((report, objects))
    }

    /// Evicts (or checks) `candidates` in order until `total` minus what
    /// went is at most `max_bytes`.
    fn gc_candidates(
        &self,
        max_bytes: u64,
        total: u64,
        candidates: &[super::ObjectSummary],
        dry_run: bool,
    ) -> Result<GcReport> {
        let mut report = GcReport {
            bytes_before: total,
            bytes_after: total,
            ..GcReport::default()
        };
        for o in candidates {
            if report.bytes_after <= max_bytes {
                break;
            }
            let removed = if dry_run {
                // The same locks the removal takes, let go at once: an
                // object being read counts as busy here too.
                self.shared.check_removable(&o.info.key)
            } else {
                self.shared.remove_key(&o.info.key)
            };
            match removed {
                Ok(()) => {
                    report.bytes_after -= o.disk_bytes;
                    report.evicted.push((o.info.key.clone(), o.disk_bytes));
                }
                Err(Error::Busy { .. }) => report.skipped_busy.push(o.info.key.clone()),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
