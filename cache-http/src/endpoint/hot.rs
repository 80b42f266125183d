//! The objects requests just resolved, kept for a few seconds so the next
//! request for the same name skips the store: no alias file read, no
//! `spawn_blocking` hand-off, no digest file read and no header values
//! computed again (an entry holds its object's [`ServeMeta`]). It depends
//! only on `meta`, a leaf.
//!
//! Profiled under wrk (random 64 KiB ranges of one complete object, see
//! BENCHMARKS.md "Serving"), resolving `/blobs/<hash>` on the blocking pool
//! (an alias read, then the object's `digests` file for `Repr-Digest`) cost
//! more than the response itself: a quarter of the endpoint's CPU was futex
//! wake-ups and context switches of that hand-off.
//!
//! An entry holds an [`Object`] handle, as the status tracker does while
//! an object is read: an object with a handle is in use and is not
//! evicted, so entries expire after [`TTL`] and the size limit lets go of
//! every entry nobody reads before it evicts ([`HotMap::release_idle`]).
//! Staleness is bounded by the same [`TTL`]: a content hash always names
//! the same bytes, so what can change under a `/blobs/` entry is only a
//! digest added later (`Repr-Digest` then lists it once the entry is made
//! anew); `/m/` entries are keyed by object key (URL, validator, length:
//! one version of one URL) and are asked for only inside the mirror's
//! revalidation window.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cache_core::{FillState, Object};
use http::HeaderValue;
use parking_lot::Mutex;

use super::meta::ServeMeta;

/// How long an entry is used before the store is asked again.
pub(crate) const TTL: Duration = Duration::from_secs(5);

/// Entries at most (distinct objects resolved within [`TTL`]); past it a
/// new entry first drops the expired ones, and is not kept when that is
/// not enough.
const MAX_ENTRIES: usize = 4096;

/// One resolved object and the header values it is served with.
pub(crate) struct HotObject {
    pub(crate) object: Object,
    /// Its validators and header values; `Repr-Digest` among them for
    /// a complete object with a SHA-2 digest.
    pub(crate) meta: ServeMeta,
    /// Whether the object was complete when this was made: an entry of an
    /// incomplete object is given up once the object completes (its
    /// content-hash tag and `Repr-Digest` are known then).
    complete: bool,
    made: Instant,
}

impl HotObject {
    /// The entry of `object`, tagged `etag` (and `alt_etag`), with the
    /// origin's `Last-Modified` for a mirrored object whose validator it
    /// is; `immutable` for a content-addressed name. Reads the object's
    /// digests file when it is complete: make it off the runtime's workers.
    pub(crate) fn new(
        object: Object,
        etag: String,
        alt_etag: Option<String>,
        last_modified: Option<SystemTime>,
        immutable: bool,
    ) -> HotObject {
        let complete = object.progress().state == FillState::Complete;
        let repr_digest = if complete {
            repr_digest(&object).and_then(|v| HeaderValue::from_str(&v).ok())
        } else {
            None
        };
        HotObject {
            object,
            meta: ServeMeta::new(etag, alt_etag, last_modified, immutable, repr_digest),
            complete,
            made: Instant::now(),
        }
    }

    /// Whether the object was complete when the entry was made (it stays
    /// complete: the entry goes when it no longer is).
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.made) < TTL
            && (self.complete || self.object.progress().state != FillState::Complete)
    }
}

/// The `Repr-Digest` field (RFC 9530) of a complete object: its known
/// SHA-256 and SHA-512 as `sha-256=:BASE64:, sha-512=:BASE64:` (BLAKE3 has
/// no registered algorithm name; it is the ETag of `/blobs/`). `None`
/// while incomplete or when no such digest is known. Reads the object's
/// digest file.
pub(crate) fn repr_digest(object: &Object) -> Option<String> {
    use base64::Engine as _;
    use cache_core::Algo;
    let parts: Vec<String> = object
        .digests()
        .iter()
        .filter_map(|d| {
            let name = match d.algo {
                Algo::Sha256 => "sha-256",
                Algo::Sha512 => "sha-512",
                Algo::Blake3 => return None,
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(&d.bytes);
            Some(format!("{name}=:{b64}:"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Entries by name (a digest for `/blobs/`, an object key for `/m/`).
pub(crate) struct HotMap<K> {
    map: Mutex<HashMap<K, Arc<HotObject>>>,
}

impl<K> Default for HotMap<K> {
    fn default() -> Self {
        HotMap {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> HotMap<K> {
    /// The entry of `name`, unless it expired or its object completed
    /// since it was made.
    pub(crate) fn get<Q>(&self, name: &Q) -> Option<Arc<HotObject>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hot = self.map.lock().get(name).cloned()?;
        hot.usable(Instant::now()).then_some(hot)
    }

    /// Makes `hot` the entry of `name` and returns it.
    pub(crate) fn put(&self, name: K, hot: HotObject) -> Arc<HotObject> {
        let hot = Arc::new(hot);
        let mut map = self.map.lock();
        if map.len() >= MAX_ENTRIES && !map.contains_key(&name) {
            let now = Instant::now();
            map.retain(|_, h| h.usable(now));
            if map.len() >= MAX_ENTRIES {
                return hot;
            }
        }
        map.insert(name, hot.clone());
        hot
    }

    /// Drops the expired entries.
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        self.map.lock().retain(|_, h| h.usable(now));
    }

    /// Drops every entry whose object nobody reads (before an eviction:
    /// an entry must not keep an object from being evicted).
    pub(crate) fn release_idle(&self) {
        self.map.lock().retain(|_, h| h.object.readers() > 0);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::testing::MemorySource;
    use cache_core::{FetchOptions, Store};

    #[tokio::test]
    async fn entries_expire_and_idle_ones_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let src = std::sync::Arc::new(MemorySource::new("mem://hot", bytes));
        let object = store.fetch(src, FetchOptions::default()).await.unwrap();
        object.wait_complete().await.unwrap();
        let map: HotMap<String> = HotMap::default();
        let mut hot = HotObject::new(object.clone(), "\"x\"".into(), None, None, true);
        assert!(
            hot.meta.headers(0).contains_key("repr-digest"),
            "a fill stores the SHA-256"
        );
        hot.made = Instant::now() - TTL;
        map.put("old".into(), hot);
        map.put(
            "new".into(),
            HotObject::new(object.clone(), "\"x\"".into(), None, None, true),
        );
        assert!(map.get("old").is_none(), "expired");
        assert!(map.get("new").is_some());
        map.prune();
        assert_eq!(map.len(), 1);
        // Held by a reader: kept; idle: released.
        let stream = object.stream(0..10);
        map.release_idle();
        assert_eq!(map.len(), 1);
        drop(stream);
        map.release_idle();
        assert_eq!(map.len(), 0);
    }
}
