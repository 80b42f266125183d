//! The convenience readers of the public API: the tail of an object and
//! the blocking `std::io::Read + Seek` adapter, on objects still filling.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use cache_core::{testing::MemorySource, FetchOptions, Store};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

#[tokio::test]
async fn read_tail_clamps_to_short_objects_and_reads_the_end_while_filling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");

    // Shorter than the tail asked for: the whole object, no underflow.
    let short = pattern(10);
    let src = Arc::new(MemorySource::new("mem://short", short.clone()));
    let obj = store
        .fetch(src, FetchOptions::default())
        .await
        .expect("fetch");
    assert_eq!(obj.tail_range(4096), 0..10);
    assert_eq!(&obj.read_tail(4096).await.expect("tail")[..], &short[..]);

    // Empty object: an empty tail.
    let src = Arc::new(MemorySource::new("mem://empty", Vec::new()));
    let obj = store
        .fetch(src, FetchOptions::default())
        .await
        .expect("fetch");
    assert!(obj.read_tail(1).await.expect("tail").is_empty());

    // A slow multi-chunk fill on one connection (front to back): the tail
    // is demanded and arrives before the fill reaches it.
    let big = pattern((6 << 20) + 123);
    let src = MemorySource::new("mem://big", big.clone()).with_piece_delay_ms(5);
    let one_connection = FetchOptions {
        fill: cache_core::FillOptions {
            connections: 1,
            ..cache_core::FillOptions::default()
        },
        ..FetchOptions::default()
    };
    let obj = store
        .fetch(Arc::new(src), one_connection)
        .await
        .expect("fetch");
    let tail = obj.read_tail(1000).await.expect("tail");
    assert_eq!(&tail[..], &big[big.len() - 1000..]);
    assert!(
        obj.progress().chunks_done < obj.progress().chunks_total,
        "the tail came before the whole object"
    );
}

#[test]
fn blocking_reader_seeks_and_reads_a_filling_object_from_a_plain_thread() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let bytes = pattern((5 << 20) + 77);
    let src = MemorySource::new("mem://blocking", bytes.clone()).with_piece_delay_ms(2);
    let obj = rt
        .block_on(store.fetch(Arc::new(src), FetchOptions::default()))
        .expect("fetch");

    let mut reader = obj.blocking_reader(rt.handle().clone());
    let reader_thread = std::thread::spawn(move || {
        // The end first (a footer), then everything from the start.
        let at = reader.seek(SeekFrom::End(-100)).expect("seek");
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).expect("read tail");
        reader.seek(SeekFrom::Start(0)).expect("rewind");
        let mut all = Vec::new();
        reader.read_to_end(&mut all).expect("read all");
        (at, tail, all)
    });
    let (at, tail, all) = reader_thread.join().expect("reader thread");
    assert_eq!(at, bytes.len() as u64 - 100);
    assert_eq!(tail, &bytes[bytes.len() - 100..]);
    assert!(all == bytes, "whole object read back through std::io::Read");
}
