//! How a fill keeps its connections busy: the next request starts before
//! the previous body ends. (Its effect is measured in `benches/wan.sh`;
//! these tests check the behaviour.)

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

/// Two connections, requests of two chunks: each next request is sent
/// while the previous body still delivers its last chunk, so three bodies
/// are open at once (without overlap, never more than two). One
/// connection means one request at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_starts_before_the_previous_body_ends() {
    let cs = 64 * KIB;
    let bytes = pattern(8 * cs, 21);
    for (connections, most) in [(2, 3), (1, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A chunk takes ~40 ms: the filler starts the next request long
        // before the last chunk of the previous one is through.
        let src = MemorySource::new("mem://overlap", bytes.clone())
            .with_piece_size(16 * KIB)
            .with_piece_delay_ms(10);
        let object = store
            .fetch(Arc::new(src.clone()), options(connections, cs, 2))
            .await
            .unwrap();
        // No reader: a reader's demands would open bodies of their own.
        let root = bounded("complete", object.wait_complete()).await.unwrap();
        assert_eq!(root, blake3::hash(&bytes));
        let open = src.max_open_bodies();
        if connections == 1 {
            assert_eq!(open, most, "one connection: {:?}", src.requests());
        } else {
            assert!(
                open >= most,
                "requests never overlapped: {:?}",
                src.requests()
            );
        }
        // Overlap never fetches a byte twice.
        assert_eq!(src.bytes_delivered(), bytes.len() as u64);
    }
}

/// Three connections, requests of four chunks, each overlapping its
/// successor: the requests are disjoint and cover the object, and every
/// byte is sent once (overlap never asks for a chunk twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_requests_never_ask_for_a_byte_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let chunks = 16;
    let bytes = pattern(chunks * cs, 22);
    let src = MemorySource::new("mem://two", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(2);
    let object = store
        .fetch(Arc::new(src.clone()), options(3, cs, 4))
        .await
        .unwrap();
    // No reader: a reader's demands would open bodies of their own.
    let root = bounded("complete", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    let mut requests = src.requests();
    requests.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &requests {
        assert_eq!(r.start, at, "{requests:?}");
        at = r.end;
    }
    assert_eq!(at, bytes.len() as u64);
    assert_eq!(src.bytes_delivered(), bytes.len() as u64, "every byte once");
    assert!(src.max_open_bodies() >= 4, "{requests:?}");
}
