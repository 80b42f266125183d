//! Size-limited eviction: least recently used complete objects go first;
//! an object being filled or read (in any process) is never evicted.

use super::Store;
use crate::error::{Error, Result};

/// What [`Store::gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Keys of the evicted objects, oldest first, with their disk bytes.
    pub evicted: Vec<(String, u64)>,
    /// Disk bytes of all objects before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Objects that would have been evicted but were in use.
    pub skipped_busy: Vec<String>,
}

impl Store {
    /// Evicts least recently used complete objects until the objects take
    /// at most `max_bytes` on disk (or nothing more can be evicted).
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport> {
        let mut objects = self.list()?;
        let total: u64 = objects.iter().map(|o| o.disk_bytes).sum();
        let mut report = GcReport {
            bytes_before: total,
            bytes_after: total,
            ..GcReport::default()
        };
        objects.retain(|o| o.state == "complete");
        objects.sort_by_key(|o| o.last_used);
        for o in objects {
            if report.bytes_after <= max_bytes {
                break;
            }
            match self.shared.remove_key(&o.info.key) {
                Ok(()) => {
                    report.bytes_after -= o.disk_bytes;
                    report.evicted.push((o.info.key, o.disk_bytes));
                }
                Err(Error::Busy { .. }) => report.skipped_busy.push(o.info.key),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
