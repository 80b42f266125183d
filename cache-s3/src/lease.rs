//! Leases: of N nodes missing the same image at once, one downloads it
//! from the origin and the others wait for its pointer.
//!
//! A lease is a create-only object (`If-None-Match: *`: the store answers
//! 412 to all but the first writer) at `lease/<id>` holding JSON
//! `{"holder": "<host>:<pid>:<nonce>", "expires_unix_ms": N}`. Its holder
//! renews it every third of [`SharedOptions::lease`](crate::SharedOptions)
//! and deletes it after publishing the pointer. A node that finds a lease
//! polls for the pointer; when the lease expired (its holder was killed
//! or lost the bucket), the waiters race to create the next epoch's key
//! `lease/<id>.<n+1>`, so exactly one of them takes over. Expiry compares
//! wall clocks of different machines: keep them in sync (NTP), and keep
//! the lease well above the clock skew.
//!
//! Where the store ignores create-only writes (probed once per process,
//! [`SharedTier::create_only_honoured`]) there is no lease: every node
//! missing the image downloads it (said once in the log).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;

use crate::layout::{source_id, Pointer};
use crate::tier::SharedTier;

/// Takeovers tried before a waiter gives up on leases and downloads.
const MAX_EPOCH: u32 = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn record(holder: &str, lease: Duration) -> Vec<u8> {
    serde_json::json!({
        "holder": holder,
        "expires_unix_ms": now_ms() + lease.as_millis() as u64,
    })
    .to_string()
    .into_bytes()
}

/// A lease another node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Who (`host:pid:nonce`).
    pub holder: String,
    /// Until when, in Unix milliseconds (renewed while it downloads).
    pub expires_unix_ms: u64,
}

impl Claim {
    fn decode(bytes: &[u8]) -> Option<Claim> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Claim {
            holder: v["holder"].as_str()?.to_owned(),
            expires_unix_ms: v["expires_unix_ms"].as_u64()?,
        })
    }

    fn expired(&self) -> bool {
        now_ms() >= self.expires_unix_ms
    }
}

/// The lease this node holds: renewed in the background until
/// [`LeaseGuard::release`] (or drop, which stops renewing and leaves the
/// key to expire).
#[derive(Debug)]
pub struct LeaseGuard {
    tier: SharedTier,
    key: Path,
    renewal: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    /// The key held, `s3://bucket/lease/<id>[.<n>]`.
    pub fn name(&self) -> String {
        self.tier.name(&self.key)
    }

    /// Stops renewing and deletes the lease (after the pointer was
    /// published, or when this node gives up).
    pub async fn release(self) {
        self.renewal.abort();
        let _ = self.tier.delete(&self.key).await;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// How a wait for another node's download ended.
#[derive(Debug)]
pub enum WaitOutcome {
    /// The pointer is there: read the object from the bucket.
    Published(Pointer),
    /// This node holds the lease: download, publish, release.
    Claimed(LeaseGuard),
    /// No lease (not supported, a bucket error, the wait bound): download
    /// without one.
    NoLease,
}

impl SharedTier {
    /// Looks for the pointer of (`identity`, `validator`, `len`); when there
    /// is none, claims the lease or waits for whoever holds it (see the
    /// module docs). `on_wait` is called once when this node starts waiting
    /// for another, with that node's claim.
    pub async fn find_or_claim(
        &self,
        identity: &str,
        validator: &str,
        len: u64,
        on_wait: impl FnOnce(&Claim),
    ) -> WaitOutcome {
        self.find_or_lease(identity, validator, len, on_wait, true)
            .await
    }

    /// Like [`find_or_claim`](Self::find_or_claim), but never waits: when
    /// a live lease is held by another node, `on_wait` is called with its
    /// claim and the outcome is [`WaitOutcome::NoLease`] (the caller
    /// downloads without one). Expired leases are still taken over.
    pub async fn find_or_try_claim(
        &self,
        identity: &str,
        validator: &str,
        len: u64,
        on_held: impl FnOnce(&Claim),
    ) -> WaitOutcome {
        self.find_or_lease(identity, validator, len, on_held, false)
            .await
    }

    async fn find_or_lease(
        &self,
        identity: &str,
        validator: &str,
        len: u64,
        on_wait: impl FnOnce(&Claim),
        wait: bool,
    ) -> WaitOutcome {
        if let Some(p) = self.find(identity, validator, len).await {
            return WaitOutcome::Published(p);
        }
        if validator.is_empty() || !self.create_only_honoured().await {
            return WaitOutcome::NoLease;
        }
        let options = &self.inner.options;
        let id = source_id(identity, validator);
        let deadline = tokio::time::Instant::now() + options.max_wait;
        let mut on_wait = Some(on_wait);
        let mut epoch = 0;
        let mut tried = false;
        while epoch <= MAX_EPOCH {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(bucket = %self.url(), "gave up waiting for another node's download after {:?}", options.max_wait);
                return WaitOutcome::NoLease;
            }
            let key = self.inner.layout.lease(&id, epoch);
            if !tried {
                tried = true;
                let holder = holder_name();
                match self.create(&key, record(&holder, options.lease)).await {
                    Ok(true) => {
                        let guard = self.hold(key, holder);
                        // It may have been published between the look and
                        // the claim (its holder deleted its lease).
                        if let Some(p) = self.find(identity, validator, len).await {
                            guard.release().await;
                            return WaitOutcome::Published(p);
                        }
                        return WaitOutcome::Claimed(guard);
                    }
                    Ok(false) => {}
                    Err(_) => return WaitOutcome::NoLease,
                }
            }
            let claim = match self.get_small(&key, 64 << 10).await {
                // Deleted in the meantime: published, or released by a
                // holder that gave up; look again and claim it anew.
                Ok(None) => None,
                Ok(Some(bytes)) => Claim::decode(&bytes).or_else(|| {
                    self.fail(&key, "lease record refused: not a lease");
                    // Unreadable: treat as expired.
                    Some(Claim {
                        holder: "?".into(),
                        expires_unix_ms: 0,
                    })
                }),
                Err(_) => return WaitOutcome::NoLease,
            };
            match claim {
                None => tried = false,
                Some(c) if c.expired() => {
                    tracing::warn!(bucket = %self.url(), holder = %c.holder, "lease {} expired: taking over", self.name(&key));
                    epoch += 1;
                    tried = false;
                    continue;
                }
                Some(c) => {
                    if let Some(f) = on_wait.take() {
                        f(&c);
                    }
                    if !wait {
                        return WaitOutcome::NoLease;
                    }
                }
            }
            tokio::time::sleep(options.poll).await;
            if let Some(p) = self.find(identity, validator, len).await {
                return WaitOutcome::Published(p);
            }
        }
        WaitOutcome::NoLease
    }

    /// Starts renewing `key` for `holder`.
    fn hold(&self, key: Path, holder: String) -> LeaseGuard {
        let tier = self.clone();
        let renew_key = key.clone();
        let lease = self.inner.options.lease;
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let _ = tier.put(&renew_key, record(&holder, lease)).await;
            }
        });
        LeaseGuard {
            tier: self.clone(),
            key,
            renewal,
        }
    }
}
