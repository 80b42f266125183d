//! Every request for an object that is filling attaches to that fill.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, Store};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_requests_fetch_each_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(9 * MIB + 4321, 11);
    let src = MemorySource::new("mem://shared", bytes.clone()).with_piece_delay_ms(1);
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let (store, src) = (store.clone(), src.clone());
        tasks.push(tokio::spawn(async move {
            let object = store
                .fetch(Arc::new(src), FetchOptions::default())
                .await
                .unwrap();
            // Half stream the object as it arrives, half wait for the whole.
            // (Far reads would cut requests short on purpose: that is the
            // demand-first test's subject, not this one's.)
            if i % 2 == 0 {
                let mut s = Box::pin(object.stream(0..object.len()));
                let mut n = 0;
                while let Some(piece) = futures::StreamExt::next(&mut s).await {
                    n += piece.unwrap().len();
                }
                assert_eq!(n as u64, object.len());
            }
            object.wait_complete().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(bounded("fetch", t).await.unwrap(), blake3::hash(&bytes));
    }
    let counts = src.chunk_request_counts(1 << 20);
    assert!(
        counts.iter().all(|&n| n == 1),
        "chunk request counts: {counts:?}"
    );
    assert_eq!(src.bytes_delivered(), bytes.len() as u64);
}
