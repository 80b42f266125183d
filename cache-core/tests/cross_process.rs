//! Two processes, one object: the second follows the first's fill, reads
//! what it committed — woken at each commit, before it is durable — and
//! takes over when the first is killed.

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

/// The flush interval of the leader that never flushes while a test runs.
const NEVER_MS: u64 = 600_000;

/// A leader that makes nothing durable for ten minutes (flush interval),
/// and with 24 MiB never reaches the flush by bytes (64 MiB).
#[test]
#[ignore = "run by cross-process tests as a child process"]
fn cross_process_child_fill_unflushed() {
    child::run_child_fill(child::ChildFill {
        url: URL,
        len: LEN,
        seed: SEED,
        piece_delay_ms: 3,
        flush_ms: NEVER_MS,
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

/// Bytes of the chunks the object's index records as durable.
fn durable_bytes(store: &Store, key: &str) -> u64 {
    let map = store.stored_chunk_map(key).unwrap();
    map.done
        .iter()
        .map(|c| (CS as u64).min(LEN as u64 - u64::from(c) * CS as u64))
        .sum()
}

/// A store on `store_dir` whose source factory makes `src` (for `URL`):
/// a process that can resume or take over objects it opens by reference.
fn store_with_factory(store_dir: &std::path::Path, src: &MemorySource) -> Store {
    let src = src.clone();
    let factory: cache_core::SourceFactory = Arc::new(move |url: &str| {
        assert_eq!(url, URL);
        Ok(Arc::new(src.clone()) as Arc<dyn cache_core::Source>)
    });
    Store::open_with(
        store_dir,
        StoreOptions {
            source_factory: Some(factory),
            ..StoreOptions::default()
        },
    )
    .unwrap()
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
    // What the index holds before the kill (a lower bound of what it holds
    // at the kill): the follower may have seen more, announced but not
    // durable, which the take-over fetches again.
    let before_kill = durable_bytes(&store, object.key());

    leader.kill().unwrap(); // SIGKILL: the lock dies with it
    leader.wait().unwrap();

    let root = bounded("take-over", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    let all = object.read_at(0, LEN as u64).await.unwrap();
    assert!(all[..] == bytes[..]);
    // The follower fetched only what the leader had not made durable
    // (each chunk once, below).
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
    let store = store_with_factory(&store_dir, &src);
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
    let store = store_with_factory(&store_dir, &src);
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

/// A follower is woken at each of the leader's commits: it sees chunks
/// while the leader has made nothing durable (its flush is ten minutes
/// away), with no reader demanding them (which would make the leader
/// flush early). Then the leader is killed: nothing it announced was
/// durable, so the follower's take-over fetches every chunk — the ones
/// its readers already read included — and the object completes with the
/// right hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reads_chunks_before_they_are_durable_and_a_take_over_refetches_them() {
    let (_dir, store_dir, mut leader) =
        start_leader_named("cross_process_child_fill_unflushed").await;
    let bytes = pattern(LEN, SEED);
    let src = MemorySource::new(URL, bytes.clone());
    let store = store_with_factory(&store_dir, &src);
    let object = store.open_ref(URL).unwrap();
    let (_, mut feed) = object.chunk_feed();

    // Chunks appear well within 5 s, though nothing is durable for 10 min.
    let mut progress = object.watch_progress();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        progress.wait_for(|p| p.chunks_done >= 16),
    )
    .await
    .expect("the follower saw no commit of the leader within 5 s")
    .unwrap();
    assert_eq!(
        store.stored_chunk_map(object.key()).unwrap().done.len(),
        0,
        "the leader flushed: the test proves nothing"
    );
    // Their bytes are the leader's (no waiting read: nothing demanded).
    let mut read_early = Vec::new();
    for c in 0..LEN.div_ceil(CS) {
        let len = CS.min(LEN - c * CS);
        if let Ok(got) = object.try_read_at((c * CS) as u64, len as u64) {
            assert!(got[..] == bytes[c * CS..c * CS + len], "chunk {c}");
            read_early.push(c as u32);
        }
    }
    assert!(read_early.len() >= 16, "{read_early:?}");
    assert_eq!(src.bytes_delivered(), 0, "the follower fetched nothing yet");

    leader.kill().unwrap(); // SIGKILL: no flush, ever
    leader.wait().unwrap();
    let seen_at_kill = object.progress().chunks_done;

    // The take-over (this process wants the object: it waits for it)
    // trusts the index alone: every chunk is fetched, each once.
    let root = bounded("take-over", object.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
    assert!(object.read_at(0, LEN as u64).await.unwrap()[..] == bytes[..]);
    let counts = src.chunk_request_counts(CS as u64);
    assert!(
        counts.iter().all(|&n| n == 1),
        "every chunk fetched once by the take-over: {counts:?}"
    );
    // Its readers saw the announced chunks withdrawn before the refetch.
    let withdrawn = withdrawn_chunks(&mut feed);
    assert!(
        withdrawn.len() as u64 >= seen_at_kill && read_early.iter().all(|c| withdrawn.contains(c)),
        "announced chunks are withdrawn at the take-over ({} of {seen_at_kill}): {withdrawn:?}",
        withdrawn.len()
    );
    // The store on disk agrees: complete, from a fresh open.
    drop(object);
    let again = Store::open(&store_dir).unwrap().open_ref(URL).unwrap();
    assert_eq!(again.blake3(), Some(blake3::hash(&bytes)));
}

/// The chunks of every `Withdrawn` change in `feed` so far.
fn withdrawn_chunks(
    feed: &mut tokio::sync::broadcast::Receiver<cache_core::ChunkChange>,
) -> Vec<u32> {
    let mut out = Vec::new();
    loop {
        match feed.try_recv() {
            Ok(cache_core::ChunkChange::Withdrawn(r)) => out.extend(r),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}
