//! A shared tier behind the endpoint's mirrors (`serve --shared`): the
//! hook, not the bucket. cache-http does not link an S3 client; the
//! binary implements [`ServeTier`] (on `cache_s3::SharedTier`) and puts it
//! in [`EndpointConfig::shared`](super::server::EndpointConfig).
//!
//! For a mirror fill the sources are asked in this order: the local store,
//! the parents, the shared tier, the origin. What the endpoint does with
//! the tier:
//!
//! * **joining**: when a mirrored URL's version is not complete in the
//!   store, the endpoint hands the tier the chain (origin and parents) and
//!   the version the origin serves now (identity, validator, length); the
//!   tier adds what it has of it. The whole join is bounded by
//!   [`JOIN_BUDGET`]: a bucket that is down or slow delays a first request
//!   by at most that, then the fill goes on without it.
//! * **the lease**: an eager mirror asks the tier to claim the lease of the
//!   version when it is free, so `fetch --shared` nodes wait for this
//!   server's download instead of starting their own. A request never
//!   waits for a lease *another* node holds: the server then fills from
//!   the origin at once (it serves its client now; the fleet may download
//!   that image twice). A lazy mirror never claims (it may never hold the
//!   whole image) and never publishes; it still reads from the bucket.
//! * **publishing**: once the fill completed and the object's BLAKE3 root
//!   is verified locally, a background task publishes it (and releases the
//!   lease). It never delays or fails a response; its outcome is logged
//!   and counted (`blockcache_shared_publishes_total`,
//!   `blockcache_shared_errors_total`). A fill that fails or stops
//!   releases the lease at once.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{FillState, Object, SourceChain, SourceInfo};
use futures::future::BoxFuture;

/// Upper bound of a join: how long a first request waits for the bucket
/// (pointer look-up, lease claim) before its fill starts without it.
pub const JOIN_BUDGET: Duration = Duration::from_secs(5);

/// A shared tier the endpoint's mirror fills read from and publish to.
pub trait ServeTier: Send + Sync {
    /// How the tier is named in logs (`s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// Adds the tier's copy of the version `info` of `identity` (the
    /// origin's URL) to `chain`, after the alternates in it and before the
    /// origin. With `claim`, also claims the version's lease when no other
    /// node holds it (never waits for one that does). Never fails: bucket
    /// errors are the tier's to log and count; the chain comes back as far
    /// as it could be built.
    fn join<'a>(
        &'a self,
        chain: SourceChain,
        identity: &'a str,
        info: &'a SourceInfo,
        claim: bool,
    ) -> BoxFuture<'a, (SourceChain, Box<dyn TierFill>)>;

    /// Verified object bytes read from the tier so far (in this process).
    fn read_bytes(&self) -> u64;

    /// Errors of the tier so far (in this process): failed requests,
    /// refused records, manifests or chunks.
    fn errors(&self) -> u64;
}

/// What one fill owes the tier once its root is verified.
pub trait TierFill: Send {
    /// Publishes the complete, verified `object` and releases the lease:
    /// `Ok(true)` when the object's bytes were uploaded, `Ok(false)` when
    /// the tier had them (only the record naming this version was
    /// written). The error names the bucket key and the cause.
    fn publish(self: Box<Self>, object: Object) -> BoxFuture<'static, Result<bool, String>>;

    /// The fill failed or stopped: releases the lease at once.
    fn abandon(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// `chain` with the tier's copy added ([`ServeTier::join`], bounded by
/// [`JOIN_BUDGET`]), and what the fill then owes it. Without a tier, or
/// past the budget, the chain as it was and nothing owed.
pub(crate) async fn join(
    tier: Option<&Arc<dyn ServeTier>>,
    chain: SourceChain,
    identity: &str,
    info: &SourceInfo,
    claim: bool,
) -> (SourceChain, Option<Box<dyn TierFill>>) {
    let Some(tier) = tier else {
        return (chain, None);
    };
    let before = chain.clone();
    match tokio::time::timeout(JOIN_BUDGET, tier.join(chain, identity, info, claim)).await {
        Ok((chain, fill)) => (chain, Some(fill)),
        Err(_) => {
            // A lease claimed meanwhile was dropped with the future: it
            // stops being renewed and expires.
            tracing::warn!(bucket = %tier.describe(), url = %identity, "no answer from the shared tier within {JOIN_BUDGET:?}; filling without it");
            (before, None)
        }
    }
}

/// Publishes `object` in the background once its fill completed (see the
/// module docs); releases the lease when the fill fails or stops.
/// `published` is called once the bucket has it (a metric, say).
pub(crate) fn publish_when_verified(
    tier: &Arc<dyn ServeTier>,
    fill: Box<dyn TierFill>,
    object: &Object,
    published: impl FnOnce() + Send + 'static,
) {
    let bucket = tier.describe();
    let object = object.clone();
    tokio::spawn(async move {
        // Watches only: a stopped fill is not restarted for the bucket.
        let mut rx = object.watch_progress();
        loop {
            let state = object.progress().state;
            match state {
                FillState::Complete if object.blake3().is_some() => break,
                FillState::Filling | FillState::Following | FillState::Complete => {}
                FillState::Idle | FillState::Failed(_) => {
                    tracing::info!(%bucket, key = %object.key(), ?state, "fill ended incomplete: nothing published");
                    fill.abandon().await;
                    return;
                }
            }
            if rx.changed().await.is_err() {
                fill.abandon().await;
                return;
            }
        }
        let len = object.len();
        let key = object.key().to_owned();
        match fill.publish(object).await {
            Ok(uploaded) => {
                published();
                tracing::info!(%bucket, %key, len, uploaded, "published to the shared tier");
            }
            Err(e) => tracing::warn!(%bucket, %key, "not published to the shared tier: {e}"),
        }
    });
}
