//! The shared tier in one fill: what `fetch --shared` does, and what a
//! server (`serve --shared`) calls for each object it fills.
//!
//! ```text
//! let (chain, shared) = tier.join(chain, &identity, &origin_info, expected_root, Lease::Wait, |_| {}).await;
//! let object = store.fetch_chain(chain, options).await?;
//! object.wait_verified(&expected).await?;
//! shared.publish(&object, |_| {}).await;          // serve: in a spawned task
//! ```

use std::sync::Arc;

use cache_core::{Object, SourceChain, SourceInfo};

use crate::lease::{Claim, LeaseGuard, WaitOutcome};
use crate::publish::Published;
use crate::source::S3Source;
use crate::tier::{SharedError, SharedTier};

/// Whether a fill takes part in the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Claim it, or wait for the node that holds it (a fetch).
    Wait,
    /// Claim it when it is free (or expired), but never wait for a node
    /// that holds it: the fill then goes to the origin at once (a server
    /// answering a request, `serve --shared`).
    Claim,
    /// Only look for the pointer: never wait (e.g. the object is already
    /// in the local store, or the caller must answer at once).
    Skip,
}

/// What a fill owes the bucket once its root is verified (see
/// [`SharedTier::join`]).
#[derive(Debug)]
pub struct SharedFill {
    tier: SharedTier,
    identity: String,
    validator: String,
    lease: Option<LeaseGuard>,
}

impl SharedTier {
    /// Puts the bucket into `chain` (after the alternates already in it,
    /// before the origin): `b3/<expected_root>` when the caller expects a
    /// root, and the object the pointer of (`identity`, `info`'s validator
    /// and length) names. When there is no pointer and `lease` is
    /// [`Lease::Wait`], claims the lease or waits (bounded) for the node
    /// that holds it, calling `on_wait` once with its claim; with
    /// [`Lease::Claim`], claims a free lease or calls `on_wait` with the
    /// holder's claim and returns at once. Never fails:
    /// bucket errors are logged and counted, and the chain is returned as
    /// far as it could be built.
    pub async fn join(
        &self,
        mut chain: SourceChain,
        identity: &str,
        info: &SourceInfo,
        expected_root: Option<blake3::Hash>,
        lease: Lease,
        on_wait: impl FnOnce(&Claim),
    ) -> (SourceChain, SharedFill) {
        if let Some(root) = expected_root {
            chain = chain.with_alternate(Arc::new(S3Source::new(self, root)));
        }
        let found = match lease {
            Lease::Wait => {
                self.find_or_claim(identity, &info.validator, info.len, on_wait)
                    .await
            }
            Lease::Claim => {
                self.find_or_try_claim(identity, &info.validator, info.len, on_wait)
                    .await
            }
            Lease::Skip => match self.find(identity, &info.validator, info.len).await {
                Some(p) => WaitOutcome::Published(p),
                None => WaitOutcome::NoLease,
            },
        };
        let mut held = None;
        match found {
            WaitOutcome::Published(p) => {
                if expected_root != Some(p.root) {
                    chain = chain.with_alternate(Arc::new(S3Source::new(self, p.root)));
                }
            }
            WaitOutcome::Claimed(guard) => {
                tracing::info!(lease = %guard.name(), "this node downloads from the origin for the fleet");
                held = Some(guard);
            }
            WaitOutcome::NoLease => {}
        }
        let fill = SharedFill {
            tier: self.clone(),
            identity: identity.to_owned(),
            validator: info.validator.clone(),
            lease: held,
        };
        (chain, fill)
    }
}

impl SharedFill {
    /// The tier.
    pub fn tier(&self) -> &SharedTier {
        &self.tier
    }

    /// Publishes the verified `object` with this source's pointer (object
    /// and manifest only when the bucket lacks them), then releases the
    /// lease. `progress`: bytes uploaded so far.
    pub async fn publish(
        self,
        object: &Object,
        progress: impl FnMut(u64),
    ) -> Result<Published, SharedError> {
        let result = self
            .tier
            .publish(object, Some((&self.identity, &self.validator)), progress)
            .await;
        if let Some(lease) = self.lease {
            lease.release().await;
        }
        result
    }

    /// The fill failed or stopped: releases the lease at once, so a
    /// waiting node takes over without waiting for it to expire.
    pub async fn abandon(self) {
        if let Some(lease) = self.lease {
            lease.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server publishes in the background: the publishing future must
    /// be `Send + 'static` once it owns the fill and the object (this
    /// fails to compile otherwise).
    #[allow(dead_code)]
    fn publish_runs_in_a_spawned_task(fill: SharedFill, object: Object) {
        tokio::spawn(async move {
            let _ = fill.publish(&object, |_| {}).await;
        });
    }

    #[test]
    fn bad_shared_urls_are_named() {
        for (url, says) in [
            ("http://b/p", "expected s3://"),
            ("s3:///p", "no bucket"),
            ("s3://user:pw@b/p", "no query or credentials"),
            ("not a url", "relative URL"),
        ] {
            let e = SharedTier::from_url(url, Default::default()).unwrap_err();
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
        let t = SharedTier::from_url("s3://images/fleet/ci/", Default::default()).unwrap();
        assert_eq!(t.url(), "s3://images/fleet/ci");
    }
}
