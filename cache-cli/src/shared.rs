//! `fetch --shared s3://BUCKET[/PREFIX]`: the shared S3 tier in a fetch
//! (the model and the bucket layout are in `cache-s3`'s crate docs).
//!
//! Before the fill: the bucket is put in the source chain after the
//! parents (by `--blake3`, and by the pointer of the URL's version); when
//! it has no pointer, this node claims the lease or waits for the node
//! that holds it. After the root is verified: publish (object, manifest,
//! pointer last), then release the lease. Nothing here fails a fetch: a
//! bucket error is logged, counted, and the fetch goes on without it.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use cache_core::{Object, SourceChain, SourceInfo};
use cache_s3::{LeaseGuard, S3Source, SharedOptions, SharedTier, WaitOutcome};

use crate::cli::SharedArgs;
use crate::size::human;
use crate::Failure;

/// The tier named by `--shared`, if given (a malformed URL is a usage
/// error; nothing is contacted yet).
pub fn open(a: &SharedArgs) -> Result<Option<SharedTier>, Failure> {
    let Some(url) = a.shared.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let defaults = SharedOptions::default();
    let options = SharedOptions {
        lease: a.shared_lease.unwrap_or(defaults.lease),
        ..defaults
    };
    SharedTier::from_url(url, options)
        .map(Some)
        .map_err(|e| Failure::usage(format!("--shared: {e}")))
}

/// What a fetch owes the bucket when it completes.
pub struct SharedFetch {
    tier: SharedTier,
    identity: String,
    validator: String,
    lease: Option<LeaseGuard>,
    quiet: bool,
}

/// Puts the bucket into `chain` (after the parents already in it) and
/// claims or waits for the lease of the origin's version (`origin`,
/// `info`).
pub async fn prepare(
    tier: &SharedTier,
    mut chain: SourceChain,
    identity: &str,
    info: &SourceInfo,
    expected_root: Option<blake3::Hash>,
    quiet: bool,
) -> (SourceChain, SharedFetch) {
    if let Some(root) = expected_root {
        chain = chain.with_alternate(Arc::new(S3Source::new(tier, root)));
    }
    let on_wait = |c: &cache_s3::Claim| {
        if !quiet {
            eprintln!(
                "blockcache: {} is downloading this from the origin for the fleet; waiting for it to publish to {}",
                c.holder,
                tier.url()
            );
        }
    };
    let mut lease = None;
    match tier
        .find_or_claim(identity, &info.validator, info.len, on_wait)
        .await
    {
        WaitOutcome::Published(p) => {
            if expected_root != Some(p.root) {
                chain = chain.with_alternate(Arc::new(S3Source::new(tier, p.root)));
            }
        }
        WaitOutcome::Claimed(guard) => {
            tracing::info!(lease = %guard.name(), "this node downloads from the origin for the fleet");
            lease = Some(guard);
        }
        WaitOutcome::NoLease => {}
    }
    let fetch = SharedFetch {
        tier: tier.clone(),
        identity: identity.to_owned(),
        validator: info.validator.clone(),
        lease,
        quiet,
    };
    (chain, fetch)
}

impl SharedFetch {
    /// Publishes the verified `object` (unless the bucket has it) and
    /// releases the lease. Errors are reported on stderr, never returned.
    pub async fn publish(self, object: &Object) {
        let len = object.len();
        let tty = std::io::stderr().is_terminal() && !self.quiet;
        let url = self.tier.url();
        let mut last_shown = 0u64;
        let progress = |sent: u64| {
            if tty && (sent - last_shown >= 64 << 20 || sent == len) {
                last_shown = sent;
                let pct = (sent * 100).checked_div(len).unwrap_or(100);
                let _ = write!(
                    std::io::stderr(),
                    "\rpublishing to {url}: {pct}% of {}",
                    human(len)
                );
            }
        };
        let result = self
            .tier
            .publish(object, Some((&self.identity, &self.validator)), progress)
            .await;
        if tty {
            let _ = writeln!(std::io::stderr());
        }
        match result {
            Ok(cache_s3::Published::Uploaded) if !self.quiet => {
                eprintln!("blockcache: published {} to {url}", human(len));
            }
            Ok(_) => {}
            Err(e) if !self.quiet => {
                eprintln!("blockcache: not published to {url}: {e}");
            }
            Err(_) => {}
        }
        if let Some(lease) = self.lease {
            lease.release().await;
        }
    }

    /// The fetch failed: release the lease at once so a waiting node
    /// takes over without waiting for it to expire.
    pub async fn abandon(self) {
        if let Some(lease) = self.lease {
            lease.release().await;
        }
    }
}
