//! Faults that must end a fill with a clear error and commit nothing bad:
//! an upstream that changes version, a disk that fails, a wrong hash.

mod common;

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cache_core::testing::MemorySource;
use cache_core::{
    Digest, Error, ErrorClass, FetchOptions, RangeBody, Source, SourceError, SourceErrorKind,
    SourceInfo, Store,
};
use common::*;
use futures::future::BoxFuture;

const CS: usize = 64 * KIB;

fn one_connection() -> FetchOptions {
    one_connection_with(CS, 4)
}

/// An upstream that switches to a new version when told to. Bodies already
/// streaming keep the old bytes (as a server's open file would); new
/// requests see the new version and — like `HttpSource` — refuse to mix.
struct Upstream {
    old: MemorySource,
    new: MemorySource,
    switched: AtomicBool,
}

impl Upstream {
    fn current(&self) -> &MemorySource {
        if self.switched.load(Ordering::SeqCst) {
            &self.new
        } else {
            &self.old
        }
    }
}

impl Source for Upstream {
    fn identity(&self) -> String {
        self.old.identity()
    }
    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        self.current().probe()
    }
    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        self.current().read_range(range, expect)
    }
}

#[tokio::test]
async fn source_changed_mid_fill_ends_the_fill_and_mixes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = pattern(40 * CS, 100);
    let new = pattern(40 * CS, 200);
    let upstream = Arc::new(Upstream {
        old: MemorySource::new("mem://versioned", old.clone())
            .with_piece_delay_ms(2)
            .with_piece_size(16 * KIB),
        new: MemorySource::new("mem://versioned", new.clone()),
        switched: AtomicBool::new(false),
    });
    let object = store
        .fetch(upstream.clone(), one_connection())
        .await
        .unwrap();
    // Let a few chunks arrive, then publish the new version.
    bounded("first chunks", object.read_at(0, 6 * CS as u64))
        .await
        .unwrap();
    upstream.switched.store(true, Ordering::SeqCst);

    let err = bounded("fill end", object.wait_complete())
        .await
        .unwrap_err();
    assert_eq!(
        err.source_error().map(|e| e.kind),
        Some(SourceErrorKind::Changed),
        "{err}"
    );
    assert!(err.to_string().contains("source changed"), "{err}");
    assert_eq!(err.class(), ErrorClass::Verification);
    // Every chunk the object has is the old version's.
    let mut present = 0;
    for c in 0..40 {
        if let Ok(b) = object.try_read_at((c * CS) as u64, CS as u64) {
            assert!(
                b[..] == old[c * CS..(c + 1) * CS],
                "chunk {c} is not the old version"
            );
            present += 1;
        }
    }
    assert!((6..40).contains(&present), "{present} chunks present");
    // A new fetch sees the new version: a separate object, old one intact.
    let fresh = store
        .fetch(upstream.clone(), one_connection())
        .await
        .unwrap();
    assert_ne!(fresh.key(), object.key());
    assert_eq!(
        bounded("new fill", fresh.wait_complete()).await.unwrap(),
        blake3::hash(&new)
    );
}

#[tokio::test]
async fn a_write_error_ends_the_fill_and_commits_nothing_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let fail_at = 9 * CS as u64;
    let fault: cache_core::WriteFault = Arc::new(move |offset, _len| {
        if offset >= fail_at {
            Err(io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    });
    let bytes = pattern(30 * CS + 5, 300);
    {
        let store = store_with_fault(dir.path(), fault);
        let src = MemorySource::new("mem://enospc", bytes.clone());
        let object = store.fetch(Arc::new(src), one_connection()).await.unwrap();
        let err = bounded("fill end", object.wait_complete())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("data-") && msg.contains("write chunk"),
            "names the file and the step: {msg}"
        );
        assert!(msg.contains("No space left"), "{msg}");
        assert_eq!(err.class(), ErrorClass::LocalIo);
        assert!(matches!(err, Error::FillFailed { .. }));
        for c in 0..31u64 {
            let present = object.try_read_at(c * CS as u64, 1).is_ok();
            assert_eq!(present, c < 9, "chunk {c}");
        }
    }
    // On disk too: what was written before the error is durable and right,
    // nothing after it is there; a healthy store finishes the rest.
    let store = Store::open(dir.path()).unwrap();
    let src = MemorySource::new("mem://enospc", bytes.clone());
    let object = store
        .fetch(Arc::new(src.clone()), one_connection())
        .await
        .unwrap();
    assert_eq!(
        bounded("resume", object.wait_complete()).await.unwrap(),
        blake3::hash(&bytes)
    );
    let first = src.requests().first().cloned().unwrap();
    assert_eq!(
        first.start, fail_at,
        "resume started at the first chunk not committed"
    );
}

#[tokio::test]
async fn an_expected_hash_belongs_to_the_request_not_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(12 * CS, 400);
    let hash = blake3::hash(&bytes);
    let src = MemorySource::new("mem://expected", bytes.clone()).with_piece_delay_ms(2);
    let options = FetchOptions {
        expected: vec![Digest::blake3(&hash)],
        ..one_connection()
    };
    let object = store.fetch(Arc::new(src), options).await.unwrap();
    assert!(
        store.get(&hash).unwrap().is_none(),
        "an expectation is not a name while the bytes are unverified"
    );
    let got = bounded("fill", object.wait_verified(&[Digest::blake3(&hash)]))
        .await
        .unwrap();
    assert_eq!(got, hash);
    assert!(store.get(&hash).unwrap().is_some(), "named once computed");
}

#[tokio::test]
async fn a_wrong_expected_hash_fails_the_request_and_keeps_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(5 * CS + 1, 500);
    let right = blake3::hash(&bytes);
    let wrong = blake3::hash(b"something else");
    let src = Arc::new(MemorySource::new("mem://wrong", bytes.clone()));
    let options = FetchOptions {
        expected: vec![Digest::blake3(&wrong)],
        ..one_connection()
    };
    let object = store.fetch(src.clone(), options.clone()).await.unwrap();
    let err = bounded("fill", object.wait_verified(&options.expected))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("BLAKE3 mismatch"), "{msg}");
    assert!(msg.contains(wrong.to_hex().as_str()) && msg.contains(right.to_hex().as_str()));
    assert_eq!(err.class(), ErrorClass::Verification);
    assert_eq!(object.blake3(), Some(right), "the object is complete");
    drop(object);
    assert!(store.get(&wrong).unwrap().is_none(), "never named by it");
    assert!(store.get(&right).unwrap().is_some(), "named by its bytes");
    // The same expectation fails at once; none succeeds at once.
    let again = store.fetch(src.clone(), options).await.unwrap_err();
    assert!(matches!(again, cache_core::Error::HashMismatch { .. }));
    let requests = src.requests().len();
    let plain = store.fetch(src.clone(), one_connection()).await.unwrap();
    assert_eq!(plain.blake3(), Some(right));
    assert_eq!(src.requests().len(), requests, "nothing fetched again");
}

#[tokio::test]
async fn a_failing_source_fails_waiting_readers_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(8 * CS, 600);
    let src = MemorySource::new("mem://reset", Bytes::from(bytes));
    src.fail_after_bytes(10);
    let object = store.fetch(Arc::new(src), one_connection()).await.unwrap();
    let err = bounded("far read", object.read_at(7 * CS as u64, 10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(err.class(), ErrorClass::Network);
}
