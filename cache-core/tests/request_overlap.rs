//! How a fill keeps its connections busy: the next request starts before
//! the previous body ends, and near the end the requests shrink so that
//! every connection has a share of what is left. (Their speed is measured in
//! `benches/wan.sh`; these tests check the behaviour.)

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, Store};
use common::*;

fn options(connections: usize, cs: usize, request_chunks: u64) -> FetchOptions {
    FetchOptions {
        chunk_size: cs as u32,
        fill: FillOptions {
            connections,
            max_request_bytes: request_chunks * cs as u64,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    }
}

/// One connection, requests of two chunks: each next request is sent
/// while the previous body still delivers its last chunk, so two bodies
/// are open at once (before, never more than one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_starts_before_the_previous_body_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let bytes = pattern(8 * cs, 21);
    // A chunk takes ~40 ms: the filler starts the next request long
    // before the last chunk of the previous one is through.
    let src = MemorySource::new("mem://overlap", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(10);
    let object = store
        .fetch(Arc::new(src.clone()), options(1, cs, 2))
        .await
        .unwrap();
    // No reader: a reader's demands would open bodies of their own.
    let root = bounded("complete", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    assert!(
        src.max_open_bodies() >= 2,
        "requests never overlapped: {:?}",
        src.requests()
    );
    // Overlap never fetches a byte twice.
    assert_eq!(src.bytes_delivered(), bytes.len() as u64);
}

/// Two connections, one request could cover the whole object: the first
/// request takes only its share (half), the rest is shared again as it
/// shrinks, and no request is ever cut — so every byte is sent once (a
/// cut request's bytes in flight are sent and thrown away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_left_is_shared_by_the_connections_without_cutting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let chunks = 16;
    let bytes = pattern(chunks * cs, 22);
    let src = MemorySource::new("mem://share", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(2);
    let object = store
        .fetch(Arc::new(src.clone()), options(2, cs, chunks as u64))
        .await
        .unwrap();
    // No reader: a reader's demands would open bodies of their own.
    let root = bounded("complete", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    let mut requests = src.requests();
    let half = (chunks / 2 * cs) as u64;
    assert!(
        requests.contains(&(0..half)),
        "the first request took more than its share: {requests:?}"
    );
    // Disjoint, covering the object: nothing asked twice, nothing cut.
    requests.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &requests {
        assert_eq!(r.start, at, "{requests:?}");
        at = r.end;
    }
    assert_eq!(at, bytes.len() as u64);
    assert_eq!(src.bytes_delivered(), bytes.len() as u64, "every byte once");
}
