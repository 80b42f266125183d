//! `fetch --shared s3://BUCKET[/PREFIX]` and `serve --shared`: the shared
//! S3 tier in a fetch and behind the endpoint's mirrors (the model and the bucket layout are in `cache-s3`'s crate docs; the
//! work is [`cache_s3::SharedTier::join`] and [`cache_s3::SharedFill`]).
//! This module parses the flags and prints: who this node waits for,
//! the publishing progress, and what went wrong — never failing a fetch.

use std::io::{IsTerminal, Write};

use cache_core::{Object, SourceChain, SourceInfo};
use cache_http::endpoint::{ServeTier, TierFill};
use cache_s3::{Lease, SharedFill, SharedOptions, SharedTier};
use futures::future::BoxFuture;

use crate::cli::SharedArgs;
use crate::size::human;
use crate::Failure;

/// The tier named by `--shared`, if given (a malformed URL is a usage
/// error; nothing is contacted yet).
pub fn open(a: &SharedArgs) -> Result<Option<SharedTier>, Failure> {
    open_url(a.shared.as_deref(), a.shared_lease, a.shared_timeout)
}

/// The tier at `url` (`s3://BUCKET[/PREFIX]`; none when absent or empty),
/// its lease lasting `lease` (default 60 s), a request unanswered for
/// `timeout` failing (default [`cache_s3::DEFAULT_ANSWER_TIMEOUT`]).
pub fn open_url(
    url: Option<&str>,
    lease: Option<std::time::Duration>,
    timeout: Option<std::time::Duration>,
) -> Result<Option<SharedTier>, Failure> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let defaults = SharedOptions::default();
    let options = SharedOptions {
        lease: lease.unwrap_or(defaults.lease),
        answer_timeout: timeout.unwrap_or(defaults.answer_timeout),
        ..defaults
    };
    SharedTier::from_url(url, options)
        .map(Some)
        .map_err(|e| Failure::usage(format!("--shared: {e}")))
}

/// `serve --shared`: the bucket as the endpoint's [`ServeTier`] (the
/// endpoint's side is `cache_http::endpoint::shared_tier`). A request
/// never waits for another node's lease ([`Lease::Claim`]); a lazy mirror
/// only reads ([`Lease::Skip`]).
pub struct ServeShared(pub SharedTier);

impl ServeTier for ServeShared {
    fn describe(&self) -> String {
        self.0.url()
    }

    fn join<'a>(
        &'a self,
        chain: SourceChain,
        identity: &'a str,
        info: &'a SourceInfo,
        claim: bool,
    ) -> BoxFuture<'a, (SourceChain, Box<dyn TierFill>)> {
        Box::pin(async move {
            let lease = if claim { Lease::Claim } else { Lease::Skip };
            let on_held = |c: &cache_s3::Claim| {
                tracing::warn!(
                    bucket = %self.0.url(),
                    url = %identity,
                    "{} holds the lease of this image (downloading it for the fleet); this server fills from the origin without waiting",
                    c.holder
                );
            };
            let (chain, fill) = self
                .0
                .join(chain, identity, info, None, lease, on_held)
                .await;
            (chain, Box::new(ServeFill(fill)) as Box<dyn TierFill>)
        })
    }

    fn read_bytes(&self) -> u64 {
        cache_s3::shared_read_bytes()
    }

    fn errors(&self) -> u64 {
        cache_s3::shared_errors()
    }
}

/// What one mirror fill of `serve` owes the bucket.
struct ServeFill(SharedFill);

impl TierFill for ServeFill {
    fn publish(self: Box<Self>, object: Object) -> BoxFuture<'static, Result<bool, String>> {
        Box::pin(async move {
            self.0
                .publish(&object, |_| {})
                .await
                .map(|p| p == cache_s3::Published::Uploaded)
                .map_err(|e| e.to_string())
        })
    }

    fn abandon(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.0.abandon())
    }
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
