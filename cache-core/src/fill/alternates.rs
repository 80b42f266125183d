//! Preparing the sources of a fill: probing the alternates of its
//! [`SourceChain`](crate::SourceChain) and finding a manifest that proves
//! the expected root (see the chain's module docs for the model).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::manifest::Manifest;
use crate::object::ObjectShared;
use crate::source::{Source, SourceInfo};

/// Chunks that did not match their trusted chaining value, in this process.
static CHUNK_VERIFY_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many chunks, in this process, arrived with bytes that do not match
/// the trusted manifest and were therefore refused (never committed) and
/// fetched again from the next source. Exposed by the HTTP endpoint as
/// `blockcache_chunk_verify_failures_total`.
pub fn chunk_verify_failures() -> u64 {
    CHUNK_VERIFY_FAILURES.load(Ordering::Relaxed)
}

/// Counts one refused chunk. For sources that check chunks themselves
/// (the shared S3 tier checks every chunk it reads against the object's
/// manifest, also when the caller expects no root).
pub fn count_chunk_verify_failure() {
    CHUNK_VERIFY_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// An alternate that answered its probe with the origin's length.
pub(crate) struct Alternate {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) info: SourceInfo,
    /// Set when it failed once: not asked again during this fill.
    pub(crate) given_up: AtomicBool,
}

/// Requests a fill keeps in flight while an alternate may still serve it:
/// one, in chunk order. Parallel requests far ahead would make a parent
/// that is still downloading cut its own requests short (its readers'
/// demands come first) and fetch the bytes in flight twice. Once every
/// alternate is given up, the fill's own connection count applies.
pub(crate) fn connections(alternates: &[Alternate], configured: usize) -> usize {
    if alternates
        .iter()
        .any(|a| !a.given_up.load(Ordering::Acquire))
    {
        1
    } else {
        configured
    }
}

/// What a fill knows about its sources before the first request.
pub(crate) struct Prepared {
    pub(crate) alternates: Vec<Alternate>,
    /// Chunk CVs (at the object's chunk size) from a manifest whose CVs
    /// merge to the expected root; every chunk is checked against them.
    pub(crate) trusted: Option<Vec<[u8; 32]>>,
}

/// Probes the alternates (concurrently, each bounded by `stall`) and, when
/// the object's root is expected, looks for a manifest that proves it:
/// alternates first, the origin last.
pub(crate) async fn prepare(
    obj: &ObjectShared,
    origin: &Arc<dyn Source>,
    alternates: &[Arc<dyn Source>],
    stall: Duration,
    expected_root: Option<blake3::Hash>,
) -> Prepared {
    let header = &obj.header;
    let probes = alternates.iter().map(|s| async move {
        match tokio::time::timeout(stall, s.probe()).await {
            Ok(Ok(info)) if info.len == header.len => Some(Alternate {
                source: s.clone(),
                info,
                given_up: AtomicBool::new(false),
            }),
            Ok(Ok(info)) => {
                tracing::warn!(object = %obj.key, source = %s.identity(), "alternate source left out: it has {} bytes, the origin {}", info.len, header.len);
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(object = %obj.key, source = %s.identity(), "alternate source left out: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(object = %obj.key, source = %s.identity(), "alternate source left out: no answer to the probe in {stall:?}");
                None
            }
        }
    });
    let alternates: Vec<Alternate> = futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let trusted = match expected_root {
        Some(root) => {
            let candidates = alternates.iter().map(|a| &a.source).chain([origin]);
            let mut found = None;
            for source in candidates {
                if let Some(cvs) = trusted_cvs(obj, source.as_ref(), &root, stall).await {
                    found = Some(cvs);
                    break;
                }
            }
            found
        }
        None => None,
    };
    Prepared {
        alternates,
        trusted,
    }
}

/// The CVs of `source`'s manifest at the object's chunk size, if it has a
/// manifest that merges to `root`; a manifest that does not is refused as
/// a whole (logged).
async fn trusted_cvs(
    obj: &ObjectShared,
    source: &dyn Source,
    root: &blake3::Hash,
    stall: Duration,
) -> Option<Vec<[u8; 32]>> {
    let header = &obj.header;
    let name = source.identity();
    let manifest: Manifest = match tokio::time::timeout(stall, source.manifest()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            tracing::info!(object = %obj.key, source = %name, "no manifest: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(object = %obj.key, source = %name, "no manifest: no answer in {stall:?}");
            return None;
        }
    };
    if let Err(e) = manifest.verify_root(root) {
        tracing::warn!(object = %obj.key, source = %name, "manifest refused: {e}");
        return None;
    }
    if manifest.len() != header.len {
        tracing::warn!(object = %obj.key, source = %name, "manifest refused: it describes {} bytes, the object has {}", manifest.len(), header.len);
        return None;
    }
    match manifest.cvs_for_chunk_size(header.chunk_size) {
        Some(cvs) => {
            tracing::info!(object = %obj.key, source = %name, "manifest verified against {root}: every chunk is checked on arrival");
            Some(cvs)
        }
        None => {
            tracing::warn!(object = %obj.key, source = %name, "manifest not usable: its chunks of {} bytes are coarser than this object's {}", manifest.chunk_size(), header.chunk_size);
            None
        }
    }
}
