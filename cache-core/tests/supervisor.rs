//! The object's supervisor (issue 15, finding 5): one task per live object
//! decides who fills it. These tests pin what that task must survive: the
//! runtime it ran on going away mid-fill, and a fill that pauses while a
//! reader asks for more.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillPolicy, FillState, Store};
use common::*;
use futures::StreamExt;

const CS: usize = 64 * KIB;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A program that runs one runtime per command (or a test harness) uses
/// an object under a second runtime after the first is gone, with the
/// first's fill cut off mid-way: the object does not stay "filling" for a
/// fill that no longer runs, a new fetch resumes it under a new
/// supervisor, and verification works there too.
#[test]
fn an_object_outlives_the_runtime_that_filled_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(4 * MIB + 11, 3);
    let source = MemorySource::new("mem://two-runtimes", bytes.clone()).with_piece_delay_ms(2);
    let options = one_connection_with(CS, 2);

    let first = runtime();
    let object = first.block_on(async {
        let object = store
            .fetch(Arc::new(source.clone()), options.clone())
            .await
            .unwrap();
        bounded("a few chunks", object.read_at(0, 3 * CS as u64))
            .await
            .unwrap();
        object
    });
    assert_eq!(object.progress().state, FillState::Filling);
    drop(first); // the fill and the supervisor go with it

    assert!(
        matches!(object.progress().state, FillState::Failed(_)),
        "a fill cut off with its runtime must not look alive: {:?}",
        object.progress().state
    );
    let second = runtime();
    second.block_on(async {
        let again = store
            .fetch(Arc::new(source.clone()), options)
            .await
            .unwrap();
        let root = bounded("the resumed fill", again.wait_complete())
            .await
            .unwrap();
        assert_eq!(root, blake3::hash(&bytes));
        let report = bounded("verify", object.verify()).await.unwrap();
        assert!(report.damaged.is_empty());
        assert_eq!(report.blake3, Some(root));
    });
}

/// A lazy fill pauses when nothing is demanded and no handle is left; a
/// reader that arrives afterwards (through a stream, which holds no
/// handle) gets its chunks: the supervisor starts the fill again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lazy_fill_fills_again_for_a_new_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(2 * MIB + 5, 4);
    let source = MemorySource::new("mem://lazy-pause", bytes.clone());
    let mut options: FetchOptions = one_connection_with(CS, 2);
    options.fill.policy = FillPolicy::Lazy;
    let object = store
        .fetch(Arc::new(source.clone()), options)
        .await
        .unwrap();
    bounded("the head", object.read_at(0, 10)).await.unwrap();
    let stream = object.stream(object.len() - 100..object.len());
    let mut progress = object.watch_progress();
    drop(object);
    bounded("the lazy fill pauses", async {
        while progress.borrow_and_update().state != FillState::Idle {
            progress.changed().await.unwrap();
        }
    })
    .await;
    let tail: Vec<u8> = bounded("the tail after the pause", stream.collect::<Vec<_>>())
        .await
        .into_iter()
        .flat_map(|piece| piece.unwrap().to_vec())
        .collect();
    assert_eq!(tail[..], bytes[bytes.len() - 100..]);
}
