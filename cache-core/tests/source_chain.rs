//! Fills from a source chain: alternates (parent caches) before the origin,
//! every chunk checked against a manifest proven by the expected root.

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use cache_core::testing::MemorySource;
use cache_core::{
    chunk_verify_failures, Digest, FetchOptions, FillOptions, Manifest, RangeBody, Source,
    SourceChain, SourceError, SourceInfo, Store,
};
use common::*;
use futures::future::BoxFuture;

const CS: u32 = 256 * 1024;
const BAD_CHUNK: usize = 5;

/// Tests that assert on the process-wide failure counter run one at a time.
static COUNTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn good_bytes() -> Vec<u8> {
    pattern(3 * MIB + 5, 42)
}

/// The same bytes with one byte of chunk `BAD_CHUNK` flipped.
fn lying_bytes(good: &[u8]) -> Vec<u8> {
    let mut bad = good.to_vec();
    bad[BAD_CHUNK * CS as usize + 1000] ^= 0x01;
    bad
}

fn options(expected: Option<blake3::Hash>) -> FetchOptions {
    FetchOptions {
        chunk_size: CS,
        expected: expected.iter().map(Digest::blake3).collect(),
        revalidate: false,
        // One request at a time: which source served which chunk is then
        // exact.
        fill: FillOptions {
            connections: 1,
            ..FillOptions::default()
        },
    }
}

fn chunks_of(src: &MemorySource) -> Vec<u32> {
    src.chunk_request_counts(u64::from(CS))
}

/// Fetches with `chain`, waits, and checks the object: right hash, right
/// bytes, and `verify` finds every stored chunk intact.
async fn fetch_and_check(chain: SourceChain, expected: Option<blake3::Hash>, good: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let object = store.fetch_chain(chain, options(expected)).await.unwrap();
    let root = bounded("fill", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(good));
    let all = object.read_at(0, object.len()).await.unwrap();
    assert!(all[..] == good[..], "stored bytes differ");
    let report = object.verify().await.unwrap();
    assert!(report.damaged.is_empty(), "damaged: {:?}", report.damaged);
    assert_eq!(report.blake3, Some(root));
    let manifest = object
        .manifest()
        .unwrap()
        .expect("complete object has a manifest");
    assert_eq!(manifest, MemorySource::manifest_of(good, CS));
}

#[tokio::test]
async fn a_lying_alternate_is_caught_at_the_chunk_and_the_origin_sends_only_the_rest() {
    let _serial = COUNTER.lock().await;
    let good = good_bytes();
    let root = blake3::hash(&good);
    let liar = MemorySource::new("http://parent.test/blob", lying_bytes(&good))
        .with_manifest(MemorySource::manifest_of(&good, CS));
    let origin = MemorySource::new("http://origin.test/img", good.clone());
    let before = chunk_verify_failures();
    let chain = SourceChain::new(Arc::new(origin.clone())).with_alternate(Arc::new(liar.clone()));
    fetch_and_check(chain, Some(root), &good).await;
    assert_eq!(
        chunk_verify_failures() - before,
        1,
        "exactly one chunk refused"
    );
    let from_liar = chunks_of(&liar);
    let from_origin = chunks_of(&origin);
    // The liar sent chunks 0..=5; 0..5 were kept, 5 was refused.
    assert!(
        from_liar[..=BAD_CHUNK].iter().all(|&n| n == 1),
        "{from_liar:?}"
    );
    assert!(
        from_origin[..BAD_CHUNK].iter().all(|&n| n == 0),
        "{from_origin:?}"
    );
    // The refused chunk came from the origin, once, as did the rest (a
    // source that lied once is not asked again).
    assert!(
        from_origin[BAD_CHUNK..].iter().all(|&n| n == 1),
        "{from_origin:?}"
    );
}

#[tokio::test]
async fn a_manifest_that_does_not_merge_to_the_name_is_refused_as_a_whole() {
    let _serial = COUNTER.lock().await;
    let good = good_bytes();
    let root = blake3::hash(&good);
    let bad = lying_bytes(&good);
    // The first parent lies consistently: its manifest describes its own
    // (wrong) bytes, so each of its chunks matches its manifest, but the
    // manifest does not merge to the name.
    let liar = MemorySource::new("http://liar.test/blob", bad.clone())
        .with_manifest(MemorySource::manifest_of(&bad, CS));
    let honest = MemorySource::new("http://honest.test/blob", good.clone())
        .with_manifest(MemorySource::manifest_of(&good, CS));
    let origin = MemorySource::new("http://origin.test/img", good.clone());
    let before = chunk_verify_failures();
    let chain = SourceChain::new(Arc::new(origin.clone()))
        .with_alternate(Arc::new(liar.clone()))
        .with_alternate(Arc::new(honest.clone()));
    fetch_and_check(chain, Some(root), &good).await;
    // The honest manifest was used: the liar's bad chunk was refused.
    assert_eq!(chunk_verify_failures() - before, 1);
    let from_honest = chunks_of(&honest);
    assert!(
        from_honest[..BAD_CHUNK].iter().all(|&n| n == 0),
        "{from_honest:?}"
    );
    assert!(
        from_honest[BAD_CHUNK..].iter().all(|&n| n == 1),
        "{from_honest:?}"
    );
    assert!(
        chunks_of(&origin).iter().all(|&n| n == 0),
        "the origin sent no chunk"
    );

    // With only the lying manifest on offer, nothing proves a chunk: the
    // fill ends with the root check, and nothing is stored under the name.
    let liar = MemorySource::new("http://liar.test/blob", bad.clone())
        .with_manifest(MemorySource::manifest_of(&bad, CS));
    let origin = MemorySource::new("http://origin.test/img", good.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let chain = SourceChain::new(Arc::new(origin)).with_alternate(Arc::new(liar));
    let object = store.fetch_chain(chain, options(Some(root))).await.unwrap();
    // The expectation belongs to the request: it fails, naming both
    // hashes; the lying bytes stay under their own hash, never the name.
    let err = bounded("fill", object.wait_verified(&[Digest::blake3(&root)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mismatch"), "{err}");
    assert!(store
        .get(&root)
        .unwrap()
        .is_none_or(|o| o.blake3().is_none()));
}

#[tokio::test]
async fn without_a_known_root_an_alternate_serves_everything_and_the_root_is_computed() {
    let good = good_bytes();
    let parent = MemorySource::new("http://parent.test/u", good.clone());
    let origin = MemorySource::new("http://origin.test/img", good.clone());
    let chain = SourceChain::new(Arc::new(origin.clone())).with_alternate(Arc::new(parent.clone()));
    fetch_and_check(chain, None, &good).await;
    assert!(chunks_of(&parent).iter().all(|&n| n == 1));
    assert_eq!(origin.bytes_delivered(), 0, "the origin was only probed");
}

/// A source that answers its probe and then never sends a byte (a parent
/// that hangs), or fails every probe (a parent that is down).
struct Hanging {
    len: u64,
    down: bool,
}

impl Source for Hanging {
    fn identity(&self) -> String {
        format!("http://hanging.test/{}", self.down)
    }
    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            if self.down {
                return Err(SourceError::new(
                    cache_core::SourceErrorKind::Network,
                    "connection refused",
                ));
            }
            Ok(SourceInfo {
                len: self.len,
                validator: "\"x\"".into(),
                ranges: true,
            })
        })
    }
    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        _expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            Ok(RangeBody {
                range,
                stream: Box::pin(futures::stream::pending()),
            })
        })
    }
    fn manifest(&self) -> BoxFuture<'_, Result<Option<Manifest>, SourceError>> {
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn parents_that_are_down_or_hang_fall_through_to_the_origin() {
    let good = good_bytes();
    let root = blake3::hash(&good);
    let origin = MemorySource::new("http://origin.test/img", good.clone());
    let len = good.len() as u64;
    let chain = SourceChain::new(Arc::new(origin.clone()))
        .with_alternate(Arc::new(Hanging { len, down: true }))
        .with_alternate(Arc::new(Hanging { len, down: false }))
        .with_stall_timeout(Duration::from_millis(300));
    fetch_and_check(chain, Some(root), &good).await;
    assert!(
        chunks_of(&origin).iter().all(|&n| n == 1),
        "{:?}",
        chunks_of(&origin)
    );
}
