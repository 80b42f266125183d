//! Store-wide bookkeeping of a serving endpoint, off the request path: the
//! store's size and object counts for `/metrics`, and the size limit.
//!
//! A pass lists the store (one index read per object), so it runs on a
//! timer in the background, never per scrape. The size limit is kept by
//! the `gc` rules of cache-core: superseded partial objects first, then
//! complete objects least recently used first; an object being filled or
//! read by any process is never evicted.

use std::sync::Arc;
use std::time::Duration;

use cache_core::Store;

use super::app::App;

/// Refreshes the store metrics (and enforces the size limit) every
/// `interval`, until aborted.
pub(crate) async fn run(app: Arc<App>, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        app.hot_blobs.prune();
        app.hot_keys.prune();
        // Requests no longer sweep the tracker (`Tracker::track`).
        app.tracker.prune();
        let a = app.clone();
        let pass = tokio::task::spawn_blocking(move || {
            if let Some(max) = a.max_size {
                if let Err(e) = make_room(&a, max) {
                    tracing::warn!(error = %e, "size limit: eviction failed");
                }
            }
            refresh(&a.store, &a)
        })
        .await;
        if let Ok(Err(e)) = pass {
            tracing::warn!(error = %e, "store metrics: cannot list the store");
        }
    }
}

/// Sets `blockcache_store_bytes` and `blockcache_store_objects`.
fn refresh(store: &Store, app: &App) -> cache_core::Result<()> {
    let list = store.list()?;
    let bytes = list.iter().map(|o| o.disk_bytes).sum();
    let counts: Vec<(&'static str, usize)> = cache_core::ObjectState::ALL
        .iter()
        .map(|&state| {
            (
                state.name(),
                list.iter().filter(|o| o.state == state).count(),
            )
        })
        .collect();
    app.metrics.set_store(bytes, &counts);
    Ok(())
}

/// Evicts until the store takes at most `budget` bytes. Returns whether
/// it got there (false: what is left is in use).
///
/// All or nothing ([`Store::gc_to_fit`]): when the objects that nobody
/// uses cannot free enough, nothing is evicted at all, so a refused fill
/// never costs the store the objects it would have displaced.
pub(crate) fn make_room(app: &App, budget: u64) -> cache_core::Result<bool> {
    app.tracker.prune();
    app.live.release_idle();
    app.hot_blobs.release_idle();
    app.hot_keys.release_idle();
    let report = app.store.gc_to_fit(budget)?;
    if report.bytes_after > budget {
        return Ok(false);
    }
    if !report.evicted.is_empty() {
        app.metrics.evicted(report.evicted.len() as u64);
        for (key, bytes) in &report.evicted {
            tracing::info!(object = %key, bytes, "evicted to keep the store under its size limit");
        }
    }
    Ok(report.bytes_after <= budget)
}
