//! Store operations: import, lookup by reference, listing, removal, and
//! LRU eviction that never touches an object in use.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{Algo, Error, FetchOptions, Store, DEFAULT_CHUNK_SIZE};
use common::*;

#[tokio::test]
async fn import_gives_the_b3sum_hash_and_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    for len in [0usize, 1, MIB, 3 * MIB + 17] {
        let bytes = pattern(len, len as u64);
        let file = dir.path().join(format!("f{len}"));
        std::fs::write(&file, &bytes).unwrap();
        let object = store.import(&file, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(object.blake3(), Some(blake3::hash(&bytes)), "len {len}");
        assert!(object.read_at(0, len as u64).await.unwrap()[..] == bytes[..]);
        let again = store.import(&file, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(again.key(), object.key(), "same bytes, same object");
    }
    assert_eq!(store.list().unwrap().len(), 4);
}

#[tokio::test]
async fn references_resolve_by_hash_prefix_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(MIB + 5, 9);
    let hash = blake3::hash(&bytes);
    let src = MemorySource::new("http://example.test/img.raw", bytes.clone());
    let object = store
        .fetch(Arc::new(src), FetchOptions::default())
        .await
        .unwrap();
    object.wait_complete().await.unwrap();
    let hex = hash.to_hex().to_string();
    for r in [
        &hex[..],
        &hex[..8],
        &hex.to_uppercase()[..12],
        "http://example.test/img.raw",
        object.key(),
    ] {
        assert_eq!(store.resolve(r).unwrap(), object.key(), "{r}");
    }
    assert!(matches!(store.resolve("abc"), Err(Error::NotFound(_))));
    assert!(matches!(
        store.resolve("http://example.test/other"),
        Err(Error::NotFound(_))
    ));
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, cache_core::ObjectState::Complete);
    assert_eq!(listed[0].state.to_string(), "complete");
    assert_eq!(listed[0].info.blake3, Some(hash));
    assert_eq!(listed[0].info.source, "http://example.test/img.raw");
}

/// Imports `len` pattern bytes (`seed`) from a file at `file`; returns
/// the object's key.
fn import_pattern(store: &Store, file: &std::path::Path, len: usize, seed: u64) -> String {
    std::fs::write(file, pattern(len, seed)).unwrap();
    store
        .import(file, DEFAULT_CHUNK_SIZE)
        .unwrap()
        .key()
        .to_owned()
}

/// Imports `n` objects of 2 MiB (distinct bytes) from files in `dir`,
/// oldest first, with distinct last-use times; returns their keys.
fn import_objects(store: &Store, dir: &std::path::Path, n: u64) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        keys.push(import_pattern(
            store,
            &dir.join(format!("f{i}")),
            2 * MIB,
            i,
        ));
        // Distinct last-use times (mtime resolution).
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    keys
}

#[tokio::test]
async fn gc_evicts_least_recently_used_and_never_an_object_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let keys = import_objects(&store, dir.path(), 4);
    // Object 1 is being read; then 0, 2 and 3 are used, in that order:
    // object 1 is the least recently used, but in use.
    let in_use = store.open_ref(&keys[1]).unwrap();
    for k in [0, 2, 3] {
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(store.open_ref(&keys[k]).unwrap());
    }

    let report = store.gc(5 * MIB as u64).unwrap();
    let evicted: Vec<_> = report.evicted.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        evicted,
        vec![keys[0].clone(), keys[2].clone()],
        "LRU order, skipping the busy one"
    );
    assert_eq!(report.skipped_busy, vec![keys[1].clone()]);
    assert!(report.bytes_after <= 5 * MIB as u64);
    assert!(store.open_ref(&keys[3]).is_ok());
    assert!(store.open_ref(&keys[0]).is_err(), "evicted");
    assert!(matches!(store.remove(&keys[1]), Err(Error::Busy { .. })));
    drop(in_use);
    store.remove(&keys[1]).unwrap();
    assert!(store.open_ref(&keys[1]).is_err());
}

/// Admission's eviction: all or nothing. When what nobody uses cannot free
/// enough, nothing goes; when it can, the same order as `gc`.
#[tokio::test]
async fn gc_to_fit_evicts_nothing_unless_it_gets_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let keys = import_objects(&store, dir.path(), 3);
    let in_use = store.open_ref(&keys[2]).unwrap();
    // 1 MiB would need all three gone, and object 2 is being read.
    let report = store.gc_to_fit(MIB as u64).unwrap();
    assert!(report.bytes_after > MIB as u64);
    assert_eq!(report.skipped_busy, vec![keys[2].clone()]);
    for k in &keys {
        assert!(
            store.open_ref(k).is_ok(),
            "nothing evicted for a plan that cannot fit"
        );
    }
    // 3 MiB needs the two oldest gone: both free.
    let report = store.gc_to_fit(3 * MIB as u64).unwrap();
    let evicted: Vec<_> = report.evicted.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(evicted, vec![keys[0].clone(), keys[1].clone()]);
    assert!(report.bytes_after <= 3 * MIB as u64);
    assert!(store.open_ref(&keys[0]).is_err() && store.open_ref(&keys[1]).is_err());
    drop(in_use);
    assert!(store.open_ref(&keys[2]).is_ok());
}

/// A partial object whose upstream has since published a new version can
/// never resume: gc evicts it first, before any complete object.
#[tokio::test]
async fn gc_evicts_partial_objects_of_a_superseded_version_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = MemorySource::new("http://example.test/img", pattern(4 * MIB, 1));
    let old = store.fetch(Arc::new(v1), lazy()).await.unwrap();
    old.read_at(0, 10).await.unwrap();
    let old_key = old.key().to_owned();
    drop(old);
    // Registration times have one-second resolution.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let v2 = MemorySource::new("http://example.test/img", pattern(4 * MIB, 2));
    let new = store
        .fetch(Arc::new(v2), FetchOptions::default())
        .await
        .unwrap();
    new.wait_complete().await.unwrap();
    let new_key = new.key().to_owned();
    drop(new);
    // Also an unrelated partial object, which must stay (it can resume).
    let other = MemorySource::new("http://example.test/other", pattern(2 * MIB, 3));
    let other = store.fetch(Arc::new(other), lazy()).await.unwrap();
    other.read_at(0, 10).await.unwrap();
    let other_key = other.key().to_owned();
    drop(other);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // lazy fills pause

    let report = store.gc(0).unwrap();
    let evicted: Vec<_> = report.evicted.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        evicted,
        vec![old_key, new_key],
        "superseded partial first, then complete"
    );
    assert!(
        store.open_ref(&other_key).is_ok(),
        "a resumable partial object was evicted"
    );
}

fn lazy() -> FetchOptions {
    FetchOptions {
        fill: cache_core::FillOptions {
            policy: cache_core::FillPolicy::Lazy,
            readahead_chunks: 0,
            ..cache_core::FillOptions::default()
        },
        ..FetchOptions::default()
    }
}

#[tokio::test]
async fn same_bytes_share_one_data_file_and_every_name_survives_a_removal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(2 * MIB + 3, 77);
    let hash = blake3::hash(&bytes);
    let mut objects = Vec::new();
    for url in ["http://a.test/x.img", "http://b.test/y.img"] {
        let src = MemorySource::new(url, bytes.clone());
        let o = store
            .fetch(Arc::new(src), FetchOptions::default())
            .await
            .unwrap();
        bounded("fill", o.wait_complete()).await.unwrap();
        objects.push(o);
    }
    let sha = objects[0]
        .digests()
        .into_iter()
        .find(|d| d.algo == Algo::Sha256)
        .expect("SHA-256 computed by the fill");
    let inode = |o: &cache_core::Object| std::fs::metadata(o.data_path()).unwrap().ino();
    assert_eq!(inode(&objects[0]), inode(&objects[1]), "stored once");
    let listed: u64 = store.list().unwrap().iter().map(|o| o.disk_bytes).sum();
    assert!(
        listed < 3 * bytes.len() as u64 / 2,
        "counted once: {listed}"
    );
    let keys: Vec<String> = objects.iter().map(|o| o.key().to_owned()).collect();
    drop(objects);
    // Remove whichever copy the names point at: they move to the other.
    let named = store.resolve(&hash.to_hex()).unwrap();
    // While the other copy is read (here by a second store handle, as by
    // another process), the shared data file's lock keeps this one too,
    // and the error says why.
    let other = keys.iter().find(|k| **k != named).unwrap();
    let elsewhere = Store::open(dir.path()).unwrap();
    let reader = elsewhere.open_ref(other).unwrap();
    let err = store.remove(&named).unwrap_err().to_string();
    assert!(
        err.contains("another object sharing its bytes, is being read"),
        "{err}"
    );
    drop(reader);
    store.remove(&named).unwrap();
    for r in [hash.to_hex().to_string(), format!("sha256:{}", sha.hex())] {
        assert_eq!(&store.resolve(&r).unwrap(), other, "{r}");
    }
    let o = store.get_digest(&sha).unwrap().expect("by SHA-256");
    assert!(o.read_at(0, bytes.len() as u64).await.unwrap()[..] == bytes[..]);
    drop(o);
    store.remove(other).unwrap();
    assert!(store.get(&hash).unwrap().is_none());
    assert!(store.get_digest(&sha).unwrap().is_none());
}

#[tokio::test]
async fn a_released_fill_stops_and_keeps_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(64 * MIB, 78);
    let src = Arc::new(MemorySource::new("mem://released", bytes.clone()).with_piece_delay_ms(5));
    let object = store
        .fetch(src.clone(), FetchOptions::default())
        .await
        .unwrap();
    bounded("first chunk", object.read_at(0, 10)).await.unwrap();
    bounded("release", object.release()).await;
    let sent = src.bytes_delivered();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(src.bytes_delivered(), sent, "nothing more fetched");
    let o = store.open_ref("mem://released").unwrap();
    assert!(o.blake3().is_none());
    assert!(o.progress().chunks_done > 0, "what arrived is kept");
}

#[tokio::test]
async fn a_store_is_created_only_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none");
    let err = Store::open_existing_with(&path, Default::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("no store at {}", path.display()));
    assert!(!path.exists());
    Store::open(&path).unwrap();
    Store::open_existing_with(&path, Default::default()).unwrap();
}

#[tokio::test]
async fn an_alias_whose_object_has_another_hash_names_nothing() {
    // What an older build left behind: `blake3/<expected>` pointing at an
    // object whose bytes hash otherwise.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(MIB + 1, 79);
    let src = MemorySource::new("http://old.test/x.img", bytes.clone());
    let o = store
        .fetch(Arc::new(src), FetchOptions::default())
        .await
        .unwrap();
    bounded("fill", o.wait_complete()).await.unwrap();
    let wrong = blake3::hash(b"an expectation").to_hex().to_string();
    std::fs::write(dir.path().join("blake3").join(&wrong), o.key()).unwrap();
    drop(o);
    assert!(matches!(store.resolve(&wrong), Err(Error::NotFound(_))));
    assert!(!dir.path().join("blake3").join(&wrong).exists(), "dropped");
    assert!(store.get(&blake3::hash(&bytes)).unwrap().is_some());
}

/// Opening one object does not hold up opening another: the registry is
/// locked per key. The open of `a` stalls (a slow disk, through the open
/// hook) until the open of `b` in another thread has finished; with one
/// lock for every open, `b` would wait for `a` and the stall would run
/// into its bound.
#[test]
fn a_slow_open_of_one_object_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    {
        let store = Store::open(dir.path()).unwrap();
        for (i, name) in ["a.img", "b.img"].iter().enumerate() {
            keys.push(import_pattern(
                &store,
                &dir.path().join(name),
                MIB,
                40 + i as u64,
            ));
        }
    }
    let (b_opened, b_signal) = std::sync::mpsc::channel::<()>();
    let b_signal = std::sync::Mutex::new(b_signal);
    let slow_key = keys[0].clone();
    let (in_hook, at_hook) = std::sync::mpsc::channel::<()>();
    let in_hook = std::sync::Mutex::new(in_hook);
    let waited_for_b = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saw = waited_for_b.clone();
    let options = cache_core::StoreOptions {
        open_hook: Some(Arc::new(move |key: &str| {
            if key == slow_key {
                let _ = in_hook.lock().unwrap().send(());
                let got = b_signal
                    .lock()
                    .unwrap()
                    .recv_timeout(std::time::Duration::from_secs(20));
                saw.store(got.is_ok(), std::sync::atomic::Ordering::SeqCst);
            }
        })),
        ..cache_core::StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let slow = {
        let store = store.clone();
        let key = keys[0].clone();
        std::thread::spawn(move || store.open_ref(&key).map(|o| o.key().to_owned()))
    };
    // The slow open is inside its hook (it holds a's slot now).
    at_hook
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the open of a reached its hook");
    let b = store.open_ref(&keys[1]).unwrap();
    assert_eq!(b.key(), keys[1]);
    b_opened.send(()).unwrap();
    assert_eq!(slow.join().unwrap().unwrap(), keys[0]);
    assert!(
        waited_for_b.load(std::sync::atomic::Ordering::SeqCst),
        "b's open waited for a's: one lock held across every open"
    );
}
