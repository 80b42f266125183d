//! `fetch --shared s3://BUCKET[/PREFIX]`: the shared S3 tier in a fetch
//! (the model and the bucket layout are in `cache-s3`'s crate docs; the
//! work is [`cache_s3::SharedTier::join`] and [`cache_s3::SharedFill`]).
//! This module parses the flags and prints: who this node waits for,
//! the publishing progress, and what went wrong — never failing a fetch.

use std::io::{IsTerminal, Write};

use cache_core::{Object, SourceChain, SourceInfo};
use cache_s3::{Lease, SharedFill, SharedOptions, SharedTier};

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
    fill: SharedFill,
    quiet: bool,
}

/// Puts the bucket into `chain` (after the parents already in it) and,
/// unless the store has the object already (`local`), claims or waits for
/// the lease of the origin's version.
pub async fn prepare(
    tier: &SharedTier,
    chain: SourceChain,
    identity: &str,
    info: &SourceInfo,
    expected_root: Option<blake3::Hash>,
    local: bool,
    quiet: bool,
) -> (SourceChain, SharedFetch) {
    let on_wait = |c: &cache_s3::Claim| {
        if !quiet {
            eprintln!(
                "blockcache: {} is downloading this from the origin for the fleet; waiting for it to publish to {}",
                c.holder,
                tier.url()
            );
        }
    };
    let lease = if local { Lease::Skip } else { Lease::Wait };
    let (chain, fill) = tier
        .join(chain, identity, info, expected_root, lease, on_wait)
        .await;
    (chain, SharedFetch { fill, quiet })
}

impl SharedFetch {
    /// Publishes the verified `object` (unless the bucket has it) and
    /// releases the lease. Errors are reported on stderr, never returned.
    pub async fn publish(self, object: &Object) {
        let len = object.len();
        let tty = std::io::stderr().is_terminal() && !self.quiet;
        let url = self.fill.tier().url();
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
        let result = self.fill.publish(object, progress).await;
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
    }

    /// The fetch failed: release the lease at once so a waiting node
    /// takes over without waiting for it to expire.
    pub async fn abandon(self) {
        self.fill.abandon().await;
    }
}
