//! [`SharedTier`]: one configured bucket prefix, its client and counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

use crate::layout::{source_id, Layout, Pointer};

/// S3 errors in this process (each one logged, none fatal to a fetch).
static SHARED_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Object bytes read from the bucket (verified chunks) in this process.
static SHARED_READ_BYTES: AtomicU64 = AtomicU64::new(0);

/// S3 errors in this process: requests that failed, records that did not
/// parse, manifests and chunks that did not verify. Each one made the
/// caller fall back (the next source, no lease, no publishing). For the
/// endpoint's `blockcache_shared_errors_total`.
pub fn shared_errors() -> u64 {
    SHARED_ERRORS.load(Ordering::Relaxed)
}

/// Verified object bytes read from the bucket in this process. For the
/// endpoint's `blockcache_shared_read_bytes_total`.
pub fn shared_read_bytes() -> u64 {
    SHARED_READ_BYTES.load(Ordering::Relaxed)
}

pub(crate) fn count_read(n: u64) {
    SHARED_READ_BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Why the shared tier could not do something. The message names the
/// bucket key and the cause, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// `--shared` is not `s3://BUCKET[/PREFIX]`, or the client could not
    /// be configured from the environment.
    #[error("{0}")]
    Config(String),
    /// A request to the bucket failed.
    #[error("{key}: {cause}")]
    Request {
        /// The bucket key (`s3://bucket/key`).
        key: String,
        /// What went wrong.
        cause: String,
    },
}

/// [`SharedOptions::answer_timeout`] by default: a healthy bucket answers
/// a HEAD in milliseconds, a busy one in seconds.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// How the shared tier behaves.
#[derive(Clone, Debug)]
pub struct SharedOptions {
    /// How long a lease is valid without renewal; its holder renews it
    /// every third of that. Waiting nodes take over once it expired.
    pub lease: Duration,
    /// How often a waiting node looks for the pointer (and the lease).
    pub poll: Duration,
    /// Upper bound of the whole wait for another node's download.
    pub max_wait: Duration,
    /// Size of one ranged GET of object bytes (16–64 MiB): a fill's
    /// request larger than this is read with several GETs in a row.
    pub max_get_bytes: u64,
    /// Part size of the multipart upload.
    pub part_bytes: usize,
    /// How long a request may go unanswered (a HEAD; a pointer, lease or
    /// manifest read or write; the start of an upload) before it counts as
    /// a bucket error and the next source is asked. A request that
    /// carries bytes gets a second more per MB. Without it, a bucket that
    /// accepts connections and never answers holds each request for the
    /// client's whole-request time-out (minutes).
    pub answer_timeout: Duration,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions {
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            max_wait: Duration::from_secs(6 * 3600),
            max_get_bytes: 64 << 20,
            part_bytes: 16 << 20,
            answer_timeout: DEFAULT_ANSWER_TIMEOUT,
        }
    }
}

/// One bucket prefix of the shared tier (see the crate docs). Cheap to
/// clone; clones share the client and the create-only probe.
#[derive(Clone)]
pub struct SharedTier {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) bucket: String,
    pub(crate) layout: Layout,
    pub(crate) options: SharedOptions,
    /// Whether the store refuses a second create-only write (probed once).
    pub(crate) create_only: tokio::sync::OnceCell<bool>,
    /// When the tier was opened: the origin of `silent_at`.
    pub(crate) opened: Instant,
    /// When the bucket last left a request unanswered, in milliseconds
    /// after `opened` plus one (0: never); see [`SharedTier::answered`].
    pub(crate) silent_at: AtomicU64,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

impl SharedTier {
    /// The bucket named by `url` (`s3://BUCKET[/PREFIX]`), with the client
    /// configured from the standard AWS variables (`AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`, …). Contacts nothing yet.
    pub fn from_url(url: &str, options: SharedOptions) -> Result<SharedTier, SharedError> {
        let bad = |why: &str| SharedError::Config(format!("{url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad("expected s3://BUCKET[/PREFIX]"));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket name (expected s3://BUCKET[/PREFIX])"))?
            .to_owned();
        if parsed.query().is_some() || !parsed.username().is_empty() {
            return Err(bad(
                "no query or credentials in the URL; use the AWS_* variables",
            ));
        }
        // Short connect time-out and few retries: a dead bucket must cost
        // seconds, then the fill falls through to the next source. The
        // whole-request time-out is long (uploads of big parts); requests
        // that must be answered soon are bounded by `answered`.
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(120));
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_client_options(client)
            .with_retry(retry);
        // What `AmazonS3Builder::from_env` does, after our defaults, so
        // the environment wins (AWS_ALLOW_HTTP is a client option).
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_") {
                if let Ok(k) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(k, value);
                }
            }
        }
        let store = builder
            .with_bucket_name(&bucket)
            .build()
            .map_err(|e| SharedError::Config(format!("--shared {url}: {e}")))?;
        Ok(SharedTier {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                bucket,
                layout: Layout::new(parsed.path()),
                options,
                create_only: tokio::sync::OnceCell::new(),
                opened: Instant::now(),
                silent_at: AtomicU64::new(0),
            }),
        })
    }

    /// `s3://BUCKET/PREFIX` as configured.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.inner.bucket, self.inner.layout.prefix())
    }

    /// The options this tier was opened with.
    pub fn options(&self) -> &SharedOptions {
        &self.inner.options
    }

    /// `s3://bucket/key`, for messages.
    pub(crate) fn name(&self, key: &Path) -> String {
        format!("s3://{}/{key}", self.inner.bucket)
    }

    /// Logs and counts a failed request; returns it as an error.
    pub(crate) fn fail(&self, key: &Path, cause: impl std::fmt::Display) -> SharedError {
        let e = SharedError::Request {
            key: self.name(key),
            cause: cause.to_string(),
        };
        note_error(&e);
        e
    }

    /// `request` (about `key`, carrying up to `bytes` bytes), failed as
    /// a bucket error when it has no answer within
    /// [`SharedOptions::answer_timeout`] plus a second per MB.
    ///
    /// After a request went unanswered, the next ones for three times
    /// that time-out fail at once without asking: a hung bucket costs a
    /// fetch one time-out, not one per request (pointer, lease, publish).
    pub(crate) async fn answered<T>(
        &self,
        key: &Path,
        bytes: u64,
        request: impl std::future::Future<Output = Result<T, SharedError>>,
    ) -> Result<T, SharedError> {
        let timeout = self.inner.options.answer_timeout;
        let cool_down = timeout.saturating_mul(3);
        let silent_at = self.inner.silent_at.load(Ordering::Relaxed);
        if silent_at > 0 {
            let at = Duration::from_millis(silent_at - 1);
            let since = self.inner.opened.elapsed().saturating_sub(at);
            if since < cool_down {
                return Err(self.fail(
                    key,
                    format!(
                        "skipped: the bucket left a request unanswered {:.1}s ago (asked again {cool_down:?} after that)",
                        since.as_secs_f64()
                    ),
                ));
            }
        }
        let bound = timeout + Duration::from_secs(bytes / 1_000_000);
        match tokio::time::timeout(bound, request).await {
            Ok(answer) => answer,
            Err(_) => {
                let now = self.inner.opened.elapsed().as_millis() as u64;
                self.inner.silent_at.store(now + 1, Ordering::Relaxed);
                Err(self.fail(key, format!("no answer within {bound:?}")))
            }
        }
    }

    /// The whole (small) object at `key`; `Ok(None)` when it does not exist.
    pub(crate) async fn get_small(
        &self,
        key: &Path,
        limit: u64,
    ) -> Result<Option<Bytes>, SharedError> {
        self.answered(key, limit, async {
            let got = match self.inner.store.get(key).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.fail(key, e)),
            };
            if got.meta.size > limit {
                return Err(self.fail(
                    key,
                    format!("{} bytes, more than the {limit} expected", got.meta.size),
                ));
            }
            got.bytes().await.map(Some).map_err(|e| self.fail(key, e))
        })
        .await
    }

    /// The size of the object at `key`; `Ok(None)` when it does not exist.
    pub(crate) async fn size_of(&self, key: &Path) -> Result<Option<u64>, SharedError> {
        self.answered(key, 0, async {
            match self.inner.store.head(key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail(key, e)),
            }
        })
        .await
    }

    /// Writes `bytes` at `key`, replacing what is there.
    pub(crate) async fn put(&self, key: &Path, bytes: Vec<u8>) -> Result<(), SharedError> {
        let len = bytes.len() as u64;
        self.answered(key, len, async {
            self.inner
                .store
                .put(key, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.fail(key, e))
        })
        .await
    }

    /// Create-only write: `Ok(true)` when created, `Ok(false)` when `key`
    /// existed (the store answered 412 to `If-None-Match: *`).
    pub(crate) async fn create(&self, key: &Path, bytes: Vec<u8>) -> Result<bool, SharedError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let len = bytes.len() as u64;
        self.answered(key, len, async {
            match self
                .inner
                .store
                .put_opts(key, PutPayload::from(bytes), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(false),
                Err(e) => Err(self.fail(key, e)),
            }
        })
        .await
    }

    /// Deletes `key` (a missing key is fine).
    pub(crate) async fn delete(&self, key: &Path) -> Result<(), SharedError> {
        self.answered(key, 0, async {
            match self.inner.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail(key, e)),
            }
        })
        .await
    }

    /// The pointer of (`identity`, `validator`) when the bucket has one
    /// that describes that version and `len`, and its object and manifest
    /// exist. Any error or mismatch is logged and gives `None`.
    pub async fn find(&self, identity: &str, validator: &str, len: u64) -> Option<Pointer> {
        if validator.is_empty() {
            return None;
        }
        let key = self.inner.layout.pointer(&source_id(identity, validator));
        let bytes = self.get_small(&key, 64 << 10).await.ok()??;
        let pointer = match Pointer::decode(&bytes) {
            Ok(p) => p,
            Err(why) => {
                self.fail(&key, format!("pointer refused: {why}"));
                return None;
            }
        };
        if pointer.validator != validator || pointer.len != len {
            self.fail(
                &key,
                format!(
                    "pointer refused: it names {} bytes under validator {}, the origin has {len} under {validator}",
                    pointer.len, pointer.validator
                ),
            );
            return None;
        }
        Some(pointer)
    }

    /// Whether the store honours create-only writes (`If-None-Match: *`):
    /// probed once per process by writing one key twice. Where it does
    /// not (Garage, `rclone serve s3`), leases cannot work.
    pub async fn create_only_honoured(&self) -> bool {
        *self
            .inner
            .create_only
            .get_or_init(|| async {
                let key = self.inner.layout.probe(rand::random());
                let first = self.create(&key, b"probe".to_vec()).await;
                // Only a first write that worked is worth a second (and
                // leaves a key to delete).
                let second = match first {
                    Ok(true) => {
                        let second = self.create(&key, b"probe".to_vec()).await;
                        let _ = self.delete(&key).await;
                        Some(second)
                    }
                    _ => None,
                };
                match (first, second) {
                    (Ok(true), Some(Ok(false))) => true,
                    (Ok(true), Some(Ok(true))) => {
                        tracing::warn!(bucket = %self.url(), "the shared store ignores create-only writes (If-None-Match: *): running without the lease, so nodes missing the same image at once each download it from the origin");
                        false
                    }
                    _ => {
                        tracing::warn!(bucket = %self.url(), "create-only writes failed in the shared store: running without the lease");
                        false
                    }
                }
            })
            .await
    }
}

/// Logs and counts one S3 error.
pub(crate) fn note_error(e: &SharedError) {
    SHARED_ERRORS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("shared tier: {e}");
}
