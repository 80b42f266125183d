//! Running store work off the async runtime's threads.
//!
//! Every file operation of the store (opens, index replays, `fsync`s,
//! hashing whole files) may block for milliseconds to seconds; on a
//! runtime thread it would stall every other task scheduled there. Async
//! code runs such work through [`blocking`] (tokio's `asyncify` pattern:
//! `spawn_blocking` plus one mapping of a panic or cancellation to
//! [`Error::Task`]), and nowhere else maps a `JoinError`.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result. A panic in
/// `f` (or the pool shutting down) becomes [`Error::Task`] naming `what`.
pub(crate) async fn blocking<T, F>(what: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::task(what, e)),
    }
}
