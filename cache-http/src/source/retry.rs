//! Retry policy (bounded exponential backoff with full jitter, `Retry-After`)
//! and the shared bandwidth limiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use rand::Rng;

use cache_core::SourceErrorKind;

use super::diagnose::UNREACHABLE_TRIES;
use super::request::Failure;
/// Retries of every source of this process (for the endpoint's
/// `blockcache_upstream_retries_total`).
static RETRIES_TOTAL: AtomicU64 = AtomicU64::new(0);

/// How many upstream requests this process has retried so far.
pub fn retries_total() -> u64 {
    RETRIES_TOTAL.load(Ordering::Relaxed)
}

/// Backoff state of one logical request (a probe, or one `read_range` with
/// all its resumptions).
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
    max_retries: u32,
    base: Duration,
    cap: Duration,
    max_retry_after: Duration,
    /// Failed attempts in a row that found the origin unreachable.
    unreachable: u32,
}

impl Backoff {
    pub(crate) fn new(
        max_retries: u32,
        base: Duration,
        cap: Duration,
        max_retry_after: Duration,
    ) -> Self {
        Backoff {
            attempt: 0,
            max_retries,
            base,
            cap,
            max_retry_after,
            unreachable: 0,
        }
    }

    /// Decides what an unreachable origin (refused connection, name not
    /// resolved) is: transient the first time, final once unreachable
    /// [`UNREACHABLE_TRIES`] times in a row. Other failures pass through
    /// (and end such a run).
    pub(crate) fn settle(&mut self, failure: Failure) -> Failure {
        let Failure::Unreachable { cause } = failure else {
            self.unreachable = 0;
            return failure;
        };
        self.unreachable += 1;
        if self.unreachable >= UNREACHABLE_TRIES {
            Failure::fatal(SourceErrorKind::Network, cause)
        } else {
            Failure::transient(SourceErrorKind::Network, cause)
        }
    }

    /// The delay before the next attempt, or `None` when retries are spent.
    /// A server's `Retry-After` wins over the computed delay (bounded by
    /// `max_retry_after` so a hostile value cannot park a fill for hours).
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempt >= self.max_retries {
            return None;
        }
        self.attempt += 1;
        RETRIES_TOTAL.fetch_add(1, Ordering::Relaxed);
        if let Some(ra) = retry_after {
            return Some(ra.min(self.max_retry_after));
        }
        // Full jitter: uniform in [0, min(cap, base * 2^n)] spreads the
        // retries of many concurrent range reads hitting the same origin.
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt - 1).unwrap_or(u32::MAX))
            .min(self.cap);
        let nanos = exp.as_nanos().min(u64::MAX as u128) as u64;
        Some(Duration::from_nanos(
            rand::thread_rng().gen_range(0..=nanos),
        ))
    }

    /// Progress was made (body bytes arrived): a long download should not
    /// fail because of a handful of resets spread over hours.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
        self.unreachable = 0;
    }

    /// Number of attempts used so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A token bucket shared by every request of one source.
///
/// Bytes are charged after they arrive; a reader that overdraws sleeps until
/// the bucket is back to zero. TCP flow control then throttles the sender.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        // Allow ~100 ms of burst so small frames do not sleep one by one.
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        RateLimiter {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// Charges `n` bytes and waits while the bucket is in debt.
    pub(crate) async fn consume(&self, n: usize) {
        let wait = {
            // A poisoned lock only means another task panicked mid-update of
            // two plain numbers; the values are still usable.
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.burst) - n as f64;
            st.1 = now;
            if st.0 < 0.0 {
                Duration::from_secs_f64(-st.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::new(
            3,
            Duration::from_millis(100),
            Duration::from_millis(250),
            Duration::from_secs(1),
        );
        for _ in 0..3 {
            let d = b.next_delay(None).unwrap();
            assert!(d <= Duration::from_millis(250));
        }
        assert_eq!(b.next_delay(None), None);
        b.reset();
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            http::header::RETRY_AFTER,
            "Mon, 01 Jan 2001 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
