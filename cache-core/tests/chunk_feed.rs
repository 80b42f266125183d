//! The chunk-map change feed: a snapshot plus the changes after it always
//! equal a fresh snapshot; a far read shows up as demanded before it is
//! done; a fill shows requests in flight.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cache_core::testing::MemorySource;
use cache_core::{ChunkChange, FetchOptions, FillOptions, Store};
use common::*;
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_replays_to_the_same_map_and_shows_demand_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let chunks = 64u32;
    let bytes = pattern(chunks as usize * cs, 11);
    let src = MemorySource::new("mem://feed", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(4);
    let options = FetchOptions {
        chunk_size: cs as u32,
        fill: FillOptions {
            connections: 1,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let object = store.fetch(Arc::new(src), options).await.unwrap();
    let (mut map, mut rx) = object.chunk_feed();
    assert_eq!(map.chunk_count, chunks);
    let far = chunks - 1;
    let reader = {
        let object = object.clone();
        tokio::spawn(async move { object.read_at(object.len() - 10, 10).await })
    };
    let mut seen = Vec::new();
    let collect = async {
        loop {
            match rx.recv().await {
                Ok(change) => {
                    map.apply(&change);
                    seen.push(change);
                    if map.done.len() == u64::from(chunks) && map.in_flight.is_empty() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => panic!("a 64-chunk fill lagged the feed"),
                Err(RecvError::Closed) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("the fill completes");
    let tail = reader.await.unwrap().unwrap();
    assert_eq!(&tail[..], &bytes[bytes.len() - 10..]);
    object.wait_complete().await.unwrap();

    let pos = |want: &ChunkChange| seen.iter().position(|c| c == want);
    let demanded = pos(&ChunkChange::Demanded(far)).expect("the far chunk was demanded");
    let done = pos(&ChunkChange::Done(far..far + 1)).expect("the far chunk was done");
    assert!(
        demanded < done,
        "demand is announced before the chunk lands"
    );
    assert!(
        seen.iter()
            .any(|c| matches!(c, ChunkChange::InFlight(r) if r.contains(&far))),
        "the far chunk was requested: {seen:?}"
    );
    // The far chunk arrived long before the sequential fill reached it.
    let done_before_far = seen[..done]
        .iter()
        .filter(|c| matches!(c, ChunkChange::Done(_)))
        .count();
    assert!(done_before_far < chunks as usize - 1, "{done_before_far}");

    let (fresh, _) = object.chunk_feed();
    assert_eq!(map.done, fresh.done);
    assert!(fresh.in_flight.is_empty() && fresh.demanded.is_empty());
    assert!(map.demanded.is_empty(), "the reader's demand was withdrawn");
}
