//! A task of a fill that panics fails the fill — every waiting reader
//! gets an error, the object's state says `failed` — instead of leaving
//! readers waiting for ever (issue 15, finding 1).

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use cache_core::testing::MemorySource;
use cache_core::{
    Error, FetchOptions, FillState, RangeBody, Source, SourceChain, SourceError, SourceInfo, Store,
};
use common::*;
use futures::future::BoxFuture;

const CS: usize = 64 * KIB;
/// A failed fill must be reported well within this (it is reported at
/// once; the bound only keeps a regression from hanging the suite).
const REPORTED_WITHIN: Duration = Duration::from_secs(10);

fn one_connection() -> FetchOptions {
    one_connection_with(CS, 2)
}

fn is_task_failure(e: &Error) -> bool {
    match e {
        Error::FillFailed { cause, .. } => is_task_failure(cause),
        Error::Task { .. } => true,
        _ => false,
    }
}

#[tokio::test]
async fn a_panic_while_committing_a_chunk_fails_every_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    // The test hook panics on the write of chunk 3 (a bug in the commit
    // path, as a real panic would be).
    let fault: cache_core::WriteFault = Arc::new(|offset, _len| {
        if offset == 3 * CS as u64 {
            panic!("injected panic while writing chunk 3");
        }
        Ok(())
    });
    let store = store_with_fault(dir.path(), fault);
    let bytes = pattern(8 * CS, 15);
    let source = MemorySource::new("mem://panics", bytes.clone()).with_piece_delay_ms(1);
    let object = store
        .fetch(Arc::new(source), one_connection())
        .await
        .unwrap();
    let head = bounded("chunk 0", object.read_at(0, 10)).await.unwrap();
    assert_eq!(&head[..], &bytes[..10]);

    let read = tokio::time::timeout(REPORTED_WITHIN, object.read_at(3 * CS as u64, 10))
        .await
        .expect("a reader of the chunk whose commit panicked must not wait for ever");
    let err = read.expect_err("the chunk was never committed");
    assert!(is_task_failure(&err), "not a task failure: {err:?}");
    assert!(
        err.to_string()
            .contains("injected panic while writing chunk 3"),
        "the panic message is lost: {err}"
    );

    let done = tokio::time::timeout(REPORTED_WITHIN, object.wait_complete())
        .await
        .expect("wait_complete must end when the fill fails");
    assert!(done.is_err(), "{done:?}");
    assert!(
        matches!(object.progress().state, FillState::Failed(_)),
        "{:?}",
        object.progress().state
    );
    // Chunks committed before the panic are still served.
    let head = bounded("chunk 0 again", object.read_at(0, 10))
        .await
        .unwrap();
    assert_eq!(&head[..], &bytes[..10]);
}

/// An alternate whose probe panics: the panic happens in the fill's own
/// task, before any request.
struct PanickingProbe(MemorySource);

impl Source for PanickingProbe {
    fn identity(&self) -> String {
        "mem://alternate-that-panics".into()
    }
    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async { panic!("injected panic in an alternate's probe") })
    }
    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        self.0.read_range(range, expect)
    }
}

#[tokio::test]
async fn a_panic_in_the_fill_task_itself_leaves_the_object_failed_not_filling() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = pattern(4 * CS, 16);
    let origin = Arc::new(MemorySource::new("mem://origin", bytes.clone()));
    let alternate = Arc::new(PanickingProbe(MemorySource::new(
        "mem://alternate-that-panics",
        bytes.clone(),
    )));
    let chain = SourceChain::new(origin).with_alternate(alternate);
    let object = store.fetch_chain(chain, one_connection()).await.unwrap();

    let done = tokio::time::timeout(REPORTED_WITHIN, object.wait_complete())
        .await
        .expect("wait_complete must end when the fill task panics");
    let err = done.expect_err("the fill task panicked");
    assert!(is_task_failure(&err), "not a task failure: {err:?}");
    assert!(
        err.to_string()
            .contains("injected panic in an alternate's probe"),
        "{err}"
    );
    assert!(
        matches!(object.progress().state, FillState::Failed(_)),
        "{:?}",
        object.progress().state
    );

    // A later fetch without the broken alternate fills the object.
    let again = store
        .fetch(
            Arc::new(MemorySource::new("mem://origin", bytes.clone())),
            one_connection(),
        )
        .await
        .unwrap();
    let root = bounded("refill", again.wait_complete()).await.unwrap();
    assert_eq!(root, blake3::hash(&bytes));
}

/// The error of a failed fill keeps its chain: every cause is reachable
/// through `std::error::Error::source`, down to the task failure, and the
/// store's listing names the object's state from the one vocabulary.
#[tokio::test]
async fn a_failed_fill_keeps_its_error_chain_and_lists_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let fault: cache_core::WriteFault = Arc::new(|_, _| Err(std::io::Error::from_raw_os_error(28)));
    let store = store_with_fault(dir.path(), fault);
    let source = MemorySource::new("mem://enospc-chain", pattern(2 * CS, 17));
    let object = store
        .fetch(Arc::new(source), one_connection())
        .await
        .unwrap();
    let err = bounded("fill end", object.wait_complete())
        .await
        .unwrap_err();
    let mut chain = Vec::new();
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = e {
        chain.push(cause.to_string());
        e = cause.source();
    }
    assert_eq!(
        chain.len(),
        3,
        "fill failed -> write chunk -> ENOSPC: {chain:#?}"
    );
    assert!(chain[1].contains("write chunk"), "{chain:#?}");
    assert!(
        !chain.iter().any(|c| c.contains("<")),
        "placeholder path: {chain:#?}"
    );
    assert_eq!(chain[2], std::io::Error::from_raw_os_error(28).to_string());

    let listed = store.list().unwrap();
    assert_eq!(listed[0].state, cache_core::ObjectState::Failed);
    assert_eq!(object.state(), cache_core::ObjectState::Failed);
    assert_eq!(format!("{:<8}|", listed[0].state), "failed  |");
}
