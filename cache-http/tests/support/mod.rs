//! Shared test helpers.
#![allow(dead_code)]

pub mod endpoint;
pub mod fault_origin;
pub mod nginx;

use std::ops::Range;
use std::time::Duration;

use cache_core::{RangeBody, Source, SourceError, SourceInfo};
use cache_http::{HttpSourceConfig, ProxyConfig};
use futures::StreamExt;

/// Test config: no proxy from the environment, fast retries. The stall
/// time-out stays generous so a loaded CI machine never trips it by accident;
/// stall tests set their own short one.
pub fn fast_config() -> HttpSourceConfig {
    HttpSourceConfig {
        proxy: ProxyConfig::None,
        max_retries: 4,
        retry_base: Duration::from_millis(5),
        retry_cap: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        stall_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..HttpSourceConfig::default()
    }
}

/// What a probe of an origin serving `len` bytes with `etag` finds.
pub fn source_info(len: usize, etag: &str) -> SourceInfo {
    SourceInfo {
        len: len as u64,
        validator: etag.into(),
        ranges: true,
    }
}

/// Bound for any single test step; generous, never used as an assertion
/// about speed, only to turn a hang into a failure.
pub const STEP: Duration = Duration::from_secs(60);

/// Deterministic pseudo-random bytes (xorshift), distinct per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&b[..n]);
    }
    v
}

/// Collects a body into memory, returning the first error.
pub async fn collect(body: RangeBody) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    let mut s = body.stream;
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

/// `read_range` + collect, bounded by [`STEP`].
pub async fn read(
    src: &dyn Source,
    range: Range<u64>,
    expect: &SourceInfo,
) -> Result<(Range<u64>, Vec<u8>), SourceError> {
    tokio::time::timeout(STEP, async {
        let body = src.read_range(range, expect).await?;
        let r = body.range.clone();
        Ok((r, collect(body).await?))
    })
    .await
    .expect("read did not finish within the step bound")
}

/// `probe`, bounded by [`STEP`].
pub async fn probe(src: &dyn Source) -> Result<SourceInfo, SourceError> {
    tokio::time::timeout(STEP, src.probe())
        .await
        .expect("probe did not finish within the step bound")
}
