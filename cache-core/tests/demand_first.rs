//! A reader's far read is fetched before the prefetch in front of it.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, Store};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_chunk_arrives_within_connections_plus_two_chunk_fetches() {
    for connections in [1usize, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cs = 64 * KIB;
        let chunks = 256; // 16 MiB
        let bytes = pattern(chunks * cs, connections as u64);
        // Throttled: each connection delivers a chunk every ~16 ms.
        let src = MemorySource::new("mem://big", bytes.clone())
            .with_piece_size(16 * KIB)
            .with_piece_delay_ms(4);
        let options = FetchOptions {
            chunk_size: cs as u32,
            fill: FillOptions {
                connections,
                ..FillOptions::default()
            },
            ..FetchOptions::default()
        };
        let object = store.fetch(Arc::new(src.clone()), options).await.unwrap();
        let last = (chunks - 1) * cs;
        let got = bounded("far read", object.read_at(last as u64, cs as u64))
            .await
            .unwrap();
        let fetched_chunks = src.bytes_delivered().div_ceil(cs as u64);
        assert!(got[..] == bytes[last..]);
        assert!(
            fetched_chunks <= connections as u64 + 2,
            "{connections} connections: the last chunk took {fetched_chunks} chunk fetches"
        );
        // (The rest of the fill is other tests' subject; the runtime ends it.)
    }
}

/// A reader that gives up (its future is dropped, as when an HTTP client
/// disconnects) withdraws its demand: a lazy fill never fetches the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reader_withdraws_its_demand() {
    use cache_core::FillPolicy;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let bytes = pattern(16 * cs, 9);
    // A chunk takes ~200 ms per connection.
    let src = MemorySource::new("mem://withdraw", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(50);
    let options = FetchOptions {
        chunk_size: cs as u32,
        fill: FillOptions {
            connections: 1,
            readahead_chunks: 0,
            policy: FillPolicy::Lazy,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let object = store.fetch(Arc::new(src.clone()), options).await.unwrap();
    // Two readers occupy the connection and the demand lane...
    let a = tokio::spawn({
        let o = object.clone();
        async move { o.read_at(0, 10).await }
    });
    let b = tokio::spawn({
        let o = object.clone();
        async move { o.read_at(5 * cs as u64, 10).await }
    });
    while src.requests().len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...so a third reader's demand has to wait in the queue; it gives up.
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(30),
        object.read_at(10 * cs as u64, 10),
    )
    .await;
    assert!(gave_up.is_err(), "the third read should still be waiting");
    bounded("a", a).await.unwrap().unwrap();
    bounded("b", b).await.unwrap().unwrap();
    // Give the filler time to (wrongly) launch the withdrawn demand.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let asked: Vec<_> = src.requests().iter().map(|r| r.start / cs as u64).collect();
    assert_eq!(asked.len(), 2, "requests: {asked:?}");
    assert!(
        !asked.contains(&10),
        "the withdrawn demand was fetched: {asked:?}"
    );
}
