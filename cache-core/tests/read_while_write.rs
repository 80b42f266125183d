//! Readers stream an object while it is filling, woken chunk by chunk.

mod common;

use std::sync::Arc;

use cache_core::testing::MemorySource;
use cache_core::{FetchOptions, FillOptions, Store};
use common::*;
use futures::StreamExt;

/// 32 readers of a slowly delivered object all get the exact bytes, and
/// each gets chunk k before the filler has completed chunk k + 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_readers_follow_the_fill() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cs = 64 * KIB;
    let chunks = 24;
    let bytes = pattern(chunks * cs, 7);
    // One connection, 4 pieces of 16 KiB per chunk, 8 ms each: a chunk
    // completes every ~32 ms, in order.
    let src = MemorySource::new("mem://slow", bytes.clone())
        .with_piece_size(16 * KIB)
        .with_piece_delay_ms(8);
    let options = FetchOptions {
        chunk_size: cs as u32,
        fill: FillOptions {
            connections: 1,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let object = store.fetch(Arc::new(src), options).await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..32 {
        let object = object.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut s = Box::pin(object.stream(0..object.len()));
            let mut k = 0u64;
            let mut late = Vec::new();
            while let Some(piece) = s.next().await {
                let piece = piece.unwrap();
                // Right after receiving chunk k, chunk k + 2 must not be done.
                if k + 2 < chunks as u64 && object.try_read_at((k + 2) * cs as u64, 1).is_ok() {
                    late.push(k);
                }
                got.extend_from_slice(&piece);
                k += 1;
            }
            (got, late)
        }));
    }
    for r in readers {
        let (got, late) = bounded("reader", r).await.unwrap();
        assert!(got == bytes, "a reader got different bytes");
        assert!(
            late.is_empty(),
            "chunks received late (k+2 already done): {late:?}"
        );
    }
    assert_eq!(object.wait_complete().await.unwrap(), blake3::hash(&bytes));
}

/// The AsyncRead + AsyncSeek reader sees the same bytes, waiting as needed.
#[tokio::test]
async fn async_reader_reads_and_seeks() {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(5 * MIB + 333, 3);
    let src = MemorySource::new("mem://reader", bytes.clone()).with_piece_delay_ms(1);
    let object = store
        .fetch(Arc::new(src), FetchOptions::default())
        .await
        .unwrap();
    let mut r = object.reader();
    let end = r.seek(std::io::SeekFrom::End(-1000)).await.unwrap();
    assert_eq!(end, bytes.len() as u64 - 1000);
    let mut tail = Vec::new();
    bounded("tail", r.read_to_end(&mut tail)).await.unwrap();
    assert!(tail[..] == bytes[bytes.len() - 1000..]);
    r.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut all = Vec::new();
    bounded("all", r.read_to_end(&mut all)).await.unwrap();
    assert!(all == bytes);
}

/// The non-waiting read says "not present" instead of waiting.
#[tokio::test]
async fn try_read_reports_missing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(4 * MIB, 5);
    let src = MemorySource::new("mem://lazy", bytes.clone());
    let options = FetchOptions {
        fill: FillOptions {
            policy: cache_core::FillPolicy::Lazy,
            readahead_chunks: 0,
            ..FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let object = store.fetch(Arc::new(src.clone()), options).await.unwrap();
    let err = object.try_read_at(3 * MIB as u64, 10).unwrap_err();
    assert!(matches!(err, cache_core::Error::NotPresent { .. }), "{err}");
    assert!(err.to_string().contains("not present"), "{err}");
    // Lazy: a waiting read fetches just that chunk.
    let b = bounded("read", object.read_at(3 * MIB as u64, 10))
        .await
        .unwrap();
    assert_eq!(&b[..], &bytes[3 * MIB..3 * MIB + 10]);
    assert_eq!(src.requests(), vec![3 * MIB as u64..4 * MIB as u64]);
    assert!(
        object.try_read_at(0, 1).is_err(),
        "lazy fill fetched more than demanded"
    );
}
