//! Fill from an in-memory source: the bytes round-trip and the object's
//! hash equals `blake3::hash`, for random lengths and chunk sizes.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, Store};
use common::*;
use futures::StreamExt;
use proptest::prelude::*;

async fn fill_and_check(len: usize, chunk_size: u32, piece: usize, connections: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(len, seed);
    let src = MemorySource::new("mem://roundtrip", bytes.clone()).with_piece_size(piece);
    let options = FetchOptions {
        chunk_size,
        fill: FillOptions {
            connections,
            max_request_bytes: 3 * u64::from(chunk_size),
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let object = store.fetch(Arc::new(src.clone()), options).await.unwrap();
    let root = bounded("fill", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes), "len {len} chunk {chunk_size}");
    let all = object.read_at(0, len as u64).await.unwrap();
    assert!(all[..] == bytes[..], "bytes differ");
    // Each chunk was requested exactly once.
    assert!(
        src.chunk_request_counts(u64::from(chunk_size))
            .iter()
            .all(|&n| n == 1)
            || len == 0
    );
    // Reopening from disk gives the same, complete object.
    drop(object);
    let store = Store::open(dir.path()).unwrap();
    let again = store.get(&root).unwrap().expect("addressable by its hash");
    assert_eq!(again.blake3(), Some(root));
    let mut streamed = Vec::new();
    let mut s = Box::pin(again.stream(0..len as u64));
    while let Some(piece) = s.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert!(streamed == bytes);
}

#[tokio::test]
async fn edge_lengths_hash_like_b3sum() {
    let cs = 64 * KIB;
    for len in [0, 1, cs - 1, cs, cs + 1, 7 * cs, 7 * cs + 13, 16 * cs + 1] {
        fill_and_check(len, cs as u32, 10_000, 3, len as u64).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_lengths_and_chunk_sizes(
        len in 0usize..3 * MIB,
        shift in 16u32..=20,
        piece in 1usize..300_000,
        connections in 1usize..6,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(fill_and_check(len, 1 << shift, piece, connections, seed));
    }
}
