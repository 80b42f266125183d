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
