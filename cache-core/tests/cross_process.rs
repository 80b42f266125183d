//! Two processes, one object: the second follows the first's fill, reads
//! what it committed, and takes over when the first is killed.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FillState, Store, StoreOptions};
use common::child;
use common::*;

const URL: &str = "mem://cross-process";
const CS: usize = 64 * KIB;
const LEN: usize = 24 * MIB + 99;
const SEED: u64 = 7;

#[test]
#[ignore = "run by cross-process tests as a child process"]
fn cross_process_child_fill() {
    child::run_child_fill(child::ChildFill {
        url: URL,
        len: LEN,
        seed: SEED,
        piece_delay_ms: 3,
        flush_ms: 20,
        options: child::fill_options(),
    });
}

/// The same fill, ten times slower: for tests that must act while it
/// is surely still running, and kill it then.
#[test]
#[ignore = "run by cross-process tests as a child process"]
fn cross_process_child_slow_fill() {
    child::run_child_fill(child::ChildFill {
        url: URL,
        len: LEN,
        seed: SEED,
        piece_delay_ms: 30,
        flush_ms: 20,
        options: child::fill_options(),
    });
}

/// A child process filling the object in a new store, once it has
/// registered the object (its temp dir, the store path, the child).
async fn start_leader() -> (tempfile::TempDir, std::path::PathBuf, child::KillOnDrop) {
    start_leader_named("cross_process_child_fill").await
}

async fn start_leader_named(
    child_test: &str,
) -> (tempfile::TempDir, std::path::PathBuf, child::KillOnDrop) {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let leader = child::spawn(child_test, &store_dir, &dir.path().join("leader.log"));
    child::wait_for_fill_lock(&store_dir).await;
    (dir, store_dir, leader)
}

/// Reads the first 4 KiB, then the last 1000 bytes, of an object another
/// process fills: the far read is demanded across processes, so the
/// leader fetches it out of order, long before its in-order fill gets
/// there.
async fn read_head_and_far_end(object: &cache_core::Object, bytes: &[u8]) {
    let head = bounded("head", object.read_at(0, 4096)).await.unwrap();
    assert!(head[..] == bytes[..4096]);
    let far = (LEN - 1000) as u64;
    let tail = bounded("far read", object.read_at(far, 1000))
        .await
        .unwrap();
    assert!(tail[..] == bytes[LEN - 1000..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_while_leader_fills_then_takes_over() {
    let (_dir, store_dir, mut leader) = start_leader().await;
    let bytes = pattern(LEN, SEED);

    let store = Store::open(&store_dir).unwrap();
    let src = MemorySource::new(URL, bytes.clone());
    let object = store
        .fetch(Arc::new(src.clone()), child::fill_options())
        .await
        .unwrap();
    assert_eq!(
        object.progress().state,
        FillState::Following,
        "the leader holds the fill"
    );

    read_head_and_far_end(&object, &bytes).await;
    let p = object.progress();
    assert!(
        p.chunks_done < p.chunks_total / 2,
        "the far chunk came with the in-order fill: {p:?}"
    );
    assert!(
        leader.try_wait().unwrap().is_none(),
        "leader should still be filling"
    );
    assert_eq!(
        src.bytes_delivered(),
        0,
        "the follower fetched while the leader was alive"
    );
    let before_kill = object.progress().bytes_done;

    leader.kill().unwrap(); // SIGKILL: the lock dies with it
    leader.wait().unwrap();

    let root = bounded("take-over", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    let all = object.read_at(0, LEN as u64).await.unwrap();
    assert!(all[..] == bytes[..]);
    // The follower fetched only what the leader had not made durable.
    let fetched = src.bytes_delivered();
    assert!(fetched > 0, "the follower did not take over");
    assert!(
        fetched <= (LEN as u64) - before_kill,
        "take-over refetched chunks the leader had committed ({fetched} bytes)"
    );
    let counts = src.chunk_request_counts(CS as u64);
    assert!(
        counts.iter().all(|&n| n <= 1),
        "a chunk was fetched twice: {counts:?}"
    );
}

/// A process that only reads (it opened the object by reference, with no
/// fetch of its own) still takes over a dead leader's fill, using the
/// store's source factory, and its reader completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_takes_over_through_the_source_factory() {
    let (_dir, store_dir, mut leader) = start_leader().await;
    let bytes = pattern(LEN, SEED);
    let src = MemorySource::new(URL, bytes.clone());
    let factory_src = src.clone();
    let factory: cache_core::SourceFactory = Arc::new(move |url: &str| {
        assert_eq!(url, URL);
        Ok(Arc::new(factory_src.clone()) as Arc<dyn cache_core::Source>)
    });
    let store = Store::open_with(
        &store_dir,
        StoreOptions {
            source_factory: Some(factory),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let object = store.open_ref(URL).unwrap();
    // Wait for the leader's first chunk, then kill it while the reader waits
    // for the whole object.
    bounded("head", object.read_at(0, 10)).await.unwrap();
    let reader = {
        let object = object.clone();
        tokio::spawn(async move { object.read_at(0, LEN as u64).await })
    };
    leader.kill().unwrap();
    leader.wait().unwrap();
    let all = bounded("reader after take-over", reader)
        .await
        .unwrap()
        .unwrap();
    assert!(all[..] == bytes[..]);
    assert!(
        src.bytes_delivered() > 0,
        "the reader's process did not take over"
    );
}

/// A process whose first read is far ahead of another process's fill
/// (it opened the object by reference: no fetch, a source factory) gets
/// that chunk fetched first by the filling process: the demand is
/// published as soon as this process knows it follows, not only by reads
/// that start after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_read_far_ahead_is_demanded_from_the_filling_process() {
    let (_dir, store_dir, mut leader) = start_leader().await;
    let bytes = pattern(LEN, SEED);
    let src = MemorySource::new(URL, bytes.clone());
    let factory_src = src.clone();
    let factory: cache_core::SourceFactory =
        Arc::new(move |_: &str| Ok(Arc::new(factory_src.clone()) as Arc<dyn cache_core::Source>));
    let store = Store::open_with(
        &store_dir,
        StoreOptions {
            source_factory: Some(factory),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let object = store.open_ref(URL).unwrap();
    let far = (LEN - 1000) as u64;
    let tail = bounded("far read", object.read_at(far, 1000))
        .await
        .unwrap();
    assert!(tail[..] == bytes[LEN - 1000..]);
    let p = object.progress();
    assert!(
        p.chunks_done < p.chunks_total / 2,
        "the far chunk came with the in-order fill: {p:?}"
    );
    assert_eq!(p.state, FillState::Following);
    assert_eq!(src.bytes_delivered(), 0, "this process fetched by itself");
    leader.kill().unwrap();
    leader.wait().unwrap();
}

/// A process with no source at all (no fetch, no source factory) that
/// opens an object another process is filling follows that fill: its
/// reads wait for the leader's chunks (a far one demanded across
/// processes) instead of failing with "no source is available".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_without_a_source_follows_the_fill_of_another_process() {
    let (_dir, store_dir, mut leader) = start_leader().await;
    let bytes = pattern(LEN, SEED);
    let store = Store::open(&store_dir).unwrap();
    let object = store.open_ref(URL).unwrap();
    read_head_and_far_end(&object, &bytes).await;
    assert_eq!(object.progress().state, FillState::Following);
    leader.kill().unwrap();
    leader.wait().unwrap();
}

/// ... and when that leader dies, with nothing here able to fill the
/// object, a reader still waiting gets "no source" and the object lists
/// as partial: the process does not go on following a fill that is gone,
/// with its reader waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_a_source_lets_go_when_the_leader_dies() {
    let (_dir, store_dir, mut leader) = start_leader_named("cross_process_child_slow_fill").await;
    let store = Store::open(&store_dir).unwrap();
    let object = store.open_ref(URL).unwrap();
    let reader = {
        let object = object.clone();
        tokio::spawn(async move { object.read_at(0, LEN as u64).await })
    };
    bounded("the reader makes this process follow", async {
        while object.progress().state != FillState::Following {
            assert!(!reader.is_finished(), "the leader finished first");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    leader.kill().unwrap();
    leader.wait().unwrap();
    let err = bounded("the reader after the leader died", reader)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, cache_core::Error::NoSource { .. }),
        "expected no source, got: {err}"
    );
    assert_eq!(object.state(), cache_core::ObjectState::Partial);
    assert_eq!(object.progress().state, FillState::Idle);
}
