//! One range request: bytes in, committed chunks out.
//!
//! The body is cut into chunks as it arrives. Each complete chunk is hashed
//! and written on a blocking thread while the next one downloads (one
//! chunk in flight per request keeps commits of a request in order and
//! memory at two chunks per request).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::filler::FillCtx;
use crate::error::{Error, Result};
use crate::source::{SourceError, SourceErrorKind};

/// Fetches chunks `run` and commits each as it completes. `limit` is the
/// end of the run, which the filler may lower (cut) while it runs: chunks
/// from `limit` on are left to another request.
pub(crate) async fn fetch_run(
    ctx: Arc<FillCtx>,
    run: Range<u32>,
    limit: Arc<AtomicU32>,
) -> Result<()> {
    let header = &ctx.obj.header;
    let want = header.chunk_range(run.start).start..header.chunk_range(run.end - 1).end;
    let body = ctx
        .source
        .read_range(want.clone(), &ctx.info)
        .await
        .map_err(|cause| ctx.source_error(cause))?;
    let range = body.range.clone();
    if range != want {
        // Only one other shape is allowed: the whole object (a source that
        // ignored the range). Every chunk it passes is filled.
        if range != (0..header.len) {
            return Err(ctx.source_error(SourceError::new(
                SourceErrorKind::Protocol,
                format!("asked for bytes {want:?}, the source sent {range:?}"),
            )));
        }
        ctx.whole_body_seen();
    }
    let cs = u64::from(header.chunk_size);
    let mut chunk = (range.start / cs) as u32;
    let end_chunk = if range.end > range.start {
        ((range.end - 1) / cs) as u32 + 1
    } else {
        chunk
    };
    let mut buf = BytesMut::new();
    let mut committing: Option<JoinHandle<Result<()>>> = None;
    let mut stream = body.stream;
    while let Some(piece) = stream.next().await {
        let mut piece = piece.map_err(|cause| ctx.source_error(cause))?;
        while !piece.is_empty() {
            if chunk >= limit.load(Ordering::Acquire) && chunk >= run.start {
                // Cut short: a demand took the rest. Dropping the body
                // ends the request.
                if let Some(prev) = committing.take() {
                    join(prev).await?;
                }
                return Ok(());
            }
            if chunk >= end_chunk {
                return Err(ctx.source_error(SourceError::new(
                    SourceErrorKind::Protocol,
                    format!("body for bytes {range:?} is longer than the range"),
                )));
            }
            let need = ctx.obj.chunk_len(chunk) as usize - buf.len();
            let data = if buf.is_empty() && piece.len() >= need {
                // The piece holds the whole chunk: no copy.
                piece.split_to(need)
            } else {
                let take = need.min(piece.len());
                if buf.is_empty() {
                    buf.reserve(need);
                }
                buf.extend_from_slice(&piece.split_to(take));
                if buf.len() < ctx.obj.chunk_len(chunk) as usize {
                    continue;
                }
                buf.split().freeze()
            };
            if let Some(prev) = committing.take() {
                join(prev).await?;
            }
            committing = Some(spawn_commit(ctx.clone(), chunk, data));
            chunk += 1;
        }
    }
    if let Some(prev) = committing.take() {
        join(prev).await?;
    }
    if chunk != end_chunk || !buf.is_empty() {
        return Err(ctx.source_error(SourceError::new(
            SourceErrorKind::Protocol,
            format!("body for bytes {range:?} ended early, in chunk {chunk}"),
        )));
    }
    Ok(())
}

fn spawn_commit(ctx: Arc<FillCtx>, chunk: u32, data: Bytes) -> JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || ctx.commit_chunk(chunk, &data))
}

async fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    match handle.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::io(
            "<commit task>",
            "commit chunk",
            std::io::Error::other(e.to_string()),
        )),
    }
}

impl FillCtx {
    pub(crate) fn source_error(&self, cause: SourceError) -> Error {
        Error::Source {
            url: self.source.identity(),
            cause,
        }
    }
}
