//! Damaged data and damaged indexes: found, reported, refetched — never
//! trusted, never a panic.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, FillPolicy, Store};
use common::*;

const CS: usize = 64 * KIB;

fn options(policy: FillPolicy) -> FetchOptions {
    FetchOptions {
        chunk_size: CS as u32,
        fill: FillOptions {
            policy,
            readahead_chunks: 0,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    }
}

fn object_dir(store: &Path) -> PathBuf {
    let objects: Vec<_> = fs::read_dir(store.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(objects.len(), 1);
    objects[0].clone()
}

fn data_file(obj_dir: &Path) -> PathBuf {
    fs::read_dir(obj_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("data-")
        })
        .unwrap()
}

#[tokio::test]
async fn verify_finds_a_flipped_byte_and_the_next_fill_fetches_only_that_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(20 * CS + 500, 1);
    let store = Store::open(dir.path()).unwrap();
    let src = MemorySource::new("mem://flip", bytes.clone());
    let object = store
        .fetch(Arc::new(src), options(FillPolicy::Eager))
        .await
        .unwrap();
    let root = bounded("fill", object.wait_complete()).await.unwrap();

    // Flip one byte in chunk 13 behind the store's back.
    let path = data_file(&object_dir(dir.path()));
    let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = 13 * CS + 777;
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(&[bytes[at] ^ 0x40]).unwrap();
    drop(f);

    let report = object.verify().await.unwrap();
    assert_eq!(report.damaged, vec![13]);
    assert_eq!(report.chunks_checked, 21);
    assert!(report.blake3.is_none(), "a damaged object is not complete");
    assert!(
        object.try_read_at(at as u64, 1).is_err(),
        "damaged chunk still served"
    );

    // A clean verify of the same store finds nothing more.
    let src = MemorySource::new("mem://flip", bytes.clone());
    let again = store
        .fetch(Arc::new(src.clone()), options(FillPolicy::Eager))
        .await
        .unwrap();
    assert_eq!(
        bounded("repair", again.wait_complete()).await.unwrap(),
        root
    );
    assert_eq!(src.requests(), vec![13 * CS as u64..14 * CS as u64]);
    assert!(object.verify().await.unwrap().damaged.is_empty());
    assert_eq!(
        &object.read_at(at as u64, 1).await.unwrap()[..],
        &bytes[at..=at]
    );
}

/// An index cut at every kind of place, or with garbage appended or
/// written over its tail, opens with its valid prefix; the fill then
/// completes correctly.
#[tokio::test]
async fn truncated_or_garbled_index_opens_with_its_valid_prefix() {
    let bytes = pattern(12 * CS + 3, 2);
    for damage in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let src = MemorySource::new("mem://idx", bytes.clone());
            let object = store
                .fetch(Arc::new(src), options(FillPolicy::Lazy))
                .await
                .unwrap();
            for c in [0usize, 3, 4, 9] {
                object.read_at((c * CS) as u64, 10).await.unwrap();
            }
            // Let the lazy fill pause and flush.
            drop(object);
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
        let index = object_dir(dir.path()).join("index");
        let _ = fs::remove_file(index.with_extension("snap"));
        let len = fs::metadata(&index).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&index).unwrap();
        match damage {
            0 => f.set_len(len - 1).unwrap(),
            1 => f.set_len(len - 17).unwrap(),
            2 => f.set_len(len - 48).unwrap(),
            3 => {
                let mut f = f;
                f.seek(SeekFrom::End(0)).unwrap();
                f.write_all(&[0xAB; 29]).unwrap();
            }
            4 => {
                let mut f = f;
                f.seek(SeekFrom::End(-20)).unwrap();
                f.write_all(&[0x00; 7]).unwrap();
            }
            _ => {
                let mut f = f;
                f.seek(SeekFrom::End(-60)).unwrap();
                f.write_all(b"garbage garbage").unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let object = store
            .open_ref("mem://idx")
            .expect("opens with its valid prefix");
        let present = object.progress().chunks_done;
        assert!(present <= 4, "damage {damage}: {present} chunks present");
        let src = MemorySource::new("mem://idx", bytes.clone());
        let object = store
            .fetch(Arc::new(src), options(FillPolicy::Eager))
            .await
            .unwrap();
        assert_eq!(
            bounded("fill", object.wait_complete()).await.unwrap(),
            blake3::hash(&bytes)
        );
        assert!(object.read_at(0, bytes.len() as u64).await.unwrap()[..] == bytes[..]);
    }
}

#[tokio::test]
async fn garbled_index_header_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(3 * CS, 3);
    {
        let store = Store::open(dir.path()).unwrap();
        let src = MemorySource::new("mem://hdr", bytes.clone());
        let object = store
            .fetch(Arc::new(src), options(FillPolicy::Eager))
            .await
            .unwrap();
        object.wait_complete().await.unwrap();
    }
    let index = object_dir(dir.path()).join("index");
    let mut f = fs::OpenOptions::new().write(true).open(&index).unwrap();
    f.seek(SeekFrom::Start(20)).unwrap();
    f.write_all(b"XXXX").unwrap();
    drop(f);
    let store = Store::open(dir.path()).unwrap();
    let err = store.open_ref(&blake3::hash(&bytes).to_hex()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("index") && msg.contains("corrupt"), "{msg}");
    assert_eq!(err.class(), cache_core::ErrorClass::LocalIo);
}

/// A snapshot covers 8 records; record 2 is then damaged on disk. The
/// chunks from record 2 on are not trusted any more — their chaining
/// values are lost with the record — so they are not done: dropped from
/// the log durably and fetched again, and the fill completes. (Before one
/// replay gave both, the done set came from the snapshot and the hashes
/// from a replay that stopped at record 2: every fill ended `Corrupt`.)
#[tokio::test]
async fn a_damaged_record_under_a_snapshot_refetches_its_chunks_and_completes() {
    use cache_core::index::{IndexWriter, RECORD_LEN};
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(16 * CS, 2);
    {
        let store = Store::open(dir.path()).unwrap();
        let src = MemorySource::new("mem://snap-flip", bytes.clone());
        let object = store
            .fetch(Arc::new(src), options(FillPolicy::Lazy))
            .await
            .unwrap();
        let head = bounded("first 8 chunks", object.read_at(0, 8 * CS as u64))
            .await
            .unwrap();
        assert_eq!(&head[..], &bytes[..8 * CS]);
        // No handle and no demand left: the lazy fill pauses, flushing.
        bounded("pause", object.release()).await;
    }
    let index = object_dir(dir.path()).join("index");
    {
        let (mut writer, _, state, _) = IndexWriter::open(&index).unwrap();
        assert_eq!(state.done.len(), 8, "8 chunks were made durable");
        writer.snapshot(&state).unwrap();
    }
    // Flip a checksum byte of record 2 (records are the last 8 x 48 bytes).
    let len = fs::metadata(&index).unwrap().len();
    let record_2 = len - 8 * RECORD_LEN as u64 + 2 * RECORD_LEN as u64;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&index)
        .unwrap();
    let mut byte = [0u8; 1];
    use std::os::unix::fs::FileExt;
    f.read_exact_at(&mut byte, record_2 + 40).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], record_2 + 40).unwrap();
    drop(f);

    let store = Store::open(dir.path()).unwrap();
    let src = MemorySource::new("mem://snap-flip", bytes.clone());
    let object = store
        .fetch(Arc::new(src.clone()), options(FillPolicy::Eager))
        .await
        .unwrap();
    let root = bounded("refill", object.wait_complete()).await;
    assert_eq!(root.unwrap(), blake3::hash(&bytes));
    let counts = src.chunk_request_counts(CS as u64);
    assert_eq!(&counts[..2], &[0, 0], "chunks 0 and 1 stay trusted");
    assert!(
        counts[2..].iter().all(|&n| n == 1),
        "chunks 2..16 fetched once each: {counts:?}"
    );
    // The log now holds only records that replay: a fresh open agrees.
    let (_, _, state, recovery) = IndexWriter::open(&index).unwrap();
    assert_eq!(state.done.len(), 16);
    assert_eq!(recovery.dropped_bytes, 0);
    assert_eq!(
        &object.read_at(0, 16 * CS as u64).await.unwrap()[..],
        &bytes[..]
    );
}

/// A repair never changes bytes already handed out: the refetch goes to a
/// copy of the data file switched to atomically (the mapping contract in
/// `data.rs`). And an object whose data file is shared (hard-linked) with
/// another object of the same bytes is repaired without writing a byte of
/// the other's file.
#[tokio::test]
async fn a_repair_leaves_handed_out_bytes_and_a_shared_data_file_untouched() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(8 * CS, 3);
    let store = Store::open(dir.path()).unwrap();
    let fill = |url: &str| {
        let src = MemorySource::new(url, bytes.clone());
        let store = store.clone();
        async move {
            let o = store
                .fetch(Arc::new(src), options(FillPolicy::Eager))
                .await
                .unwrap();
            bounded("fill", o.wait_complete()).await.unwrap();
            o
        }
    };
    let other = fill("mem://shared-a").await.data_path();
    let object = fill("mem://shared-b").await;
    drop(object);
    // A fresh store (as another process would) maps the shared file.
    let store = Store::open(dir.path()).unwrap();
    let object = store.open_ref("mem://shared-b").unwrap();
    let (path, other_path) = (object.data_path(), other);
    assert_eq!(
        fs::metadata(&path).unwrap().ino(),
        fs::metadata(&other_path).unwrap().ino(),
        "same bytes: one data file"
    );

    // Damage chunk 5 on disk (both objects see it: one inode).
    let at = 5 * CS + 123;
    let damaged = bytes[at] ^ 0x40;
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[damaged], at as u64).unwrap();
    drop(f);
    let held = object.read_at(5 * CS as u64, CS as u64).await.unwrap();
    assert_eq!(held[123], damaged);
    let held_before = held.to_vec();

    let report = object.verify().await.unwrap();
    assert_eq!(report.damaged, vec![5]);
    let src = MemorySource::new("mem://shared-b", bytes.clone());
    let again = store
        .fetch(Arc::new(src.clone()), options(FillPolicy::Eager))
        .await
        .unwrap();
    bounded("repair", again.wait_complete()).await.unwrap();
    assert_eq!(src.requests(), vec![5 * CS as u64..6 * CS as u64]);

    assert!(held[..] == held_before[..], "handed-out bytes changed");
    let fresh = object.read_at(at as u64, 1).await.unwrap();
    assert_eq!(fresh[0], bytes[at], "the repaired chunk is served");
    assert!(fs::read(&path).unwrap() == bytes, "repaired file on disk");
    // The other object's file is its own again, not written by the repair.
    assert_eq!(fs::metadata(&path).unwrap().nlink(), 1);
    assert_eq!(fs::metadata(&other_path).unwrap().nlink(), 1);
    assert_eq!(fs::read(&other_path).unwrap()[at], damaged);
}

/// A follower applies another process's index records by the index's own
/// rules, the ones a replay on open uses: a root recorded before every
/// chunk is done names nothing and completes nothing (a replay ignores it;
/// the follower used to keep it as the root, latent until a later record).
/// Here the "other process" is this test:
/// it holds the index lock and appends chunks 0-2, a premature root, then
/// chunk 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_ignores_records_the_index_rules_reject() {
    use cache_core::index::{IndexWriter, Record};
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let bytes = pattern(4 * CS, 77);
    let key = {
        // A lazy fill with no reader registers the object and fetches
        // nothing (four chunks missing), then pauses once the last
        // handle is gone, letting go of the index lock.
        let store = Store::open(&store_dir).unwrap();
        let src = MemorySource::new("mem://follow-rules", bytes.clone());
        let object = store
            .fetch(Arc::new(src), options(FillPolicy::Lazy))
            .await
            .unwrap();
        object.key().to_owned()
    };
    let index = object_dir(&store_dir).join("index");
    // Another "process" fills: it takes the lock (once the paused fill let
    // go of it) and appends records.
    let lock = fs::File::open(&index).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lock.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lazy fill kept the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (mut writer, _, _, _) = IndexWriter::open_replayed(&index).unwrap();
    let store = Store::open(&store_dir).unwrap();
    let object = store.open_ref(&key).unwrap();
    let cv = |c: u32| {
        let range = c as usize * CS..(c as usize + 1) * CS;
        cache_core::hash::chunk_cv(&bytes[range], c, CS as u32, bytes.len() as u64)
    };
    writer
        .append(&[
            Record::Chunk {
                index: 0,
                cv: cv(0),
            },
            Record::Chunk {
                index: 1,
                cv: cv(1),
            },
            Record::Chunk {
                index: 2,
                cv: cv(2),
            },
            Record::Root { hash: [9; 32] },
            Record::Chunk {
                index: 3,
                cv: cv(3),
            },
        ])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let p = object.progress();
        if p.chunks_done >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never saw the records: {p:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let p = object.progress();
    assert_eq!(p.chunks_done, 4, "{p:?}");
    assert_ne!(
        p.state,
        cache_core::FillState::Complete,
        "a root recorded before the last chunk made the object complete"
    );
    assert_eq!(object.blake3(), None, "the premature root names the object");
    drop(lock);
}
