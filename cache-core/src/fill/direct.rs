//! A range request whose body moves into the data file in the kernel
//! ([`crate::DirectBody`]): chunk by chunk, each committed from the file.
//!
//! Why: on two cores a fill that copies every byte through user space
//! (socket → buffer → `pwrite`) runs out of CPU well before the disk does;
//! moving the body in the kernel saves a copy per byte and the buffers
//! (BENCHMARKS.md, fill at the disk's speed). The origin only: alternates
//! keep their stall bound and verification on the buffered path.
//!
//! The request runs on a blocking thread (the moves block, like the
//! buffered path's writes). For each chunk of the run, in order:
//!
//! 1. stop if the run was cut there (a demand took the rest), if the fill
//!    no longer waits for the request, or if the chunk is already done
//!    (its bytes are never written twice);
//! 2. move the chunk's bytes into the file at its place;
//! 3. stop without committing if the run was cut meanwhile (the chunk
//!    belongs to another request now);
//! 4. commit it from the file ([`FillCtx::commit_moved`]), read back
//!    through a map of the next few chunks of the request's range
//!    ([`READ_BACK_WINDOW`]; `pread` if no map can be had): its chaining
//!    value is computed from the bytes readers will see, checked against
//!    a trusted manifest, and only then is the chunk visible (invariant 1).
//!
//! Until step 4 the chunk's bytes are not claimed by anything: a body that
//! breaks, a chunk that does not verify or a request cut short leaves
//! bytes that no reader, flush or resume looks at. A body that breaks, or
//! a source that declines the request, hands the rest of the run to
//! [`crate::Source::read_range`] from the first chunk not committed, which
//! retries, follows redirects and reports errors as always.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::fetch::{note_progress, EndWatch, Interrupted, RunCtl, Timeline};
use super::filler::FillCtx;
use crate::data::MappedRange;
use crate::error::Error;
use crate::source::{MoveError, Source};

/// Bytes of a request's file range mapped at a time to read its moved
/// chunks back (see [`FillCtx::commit_moved`]): 4 chunks of the default
/// size, so a fill with eight requests in flight maps at most 32 MiB.
const READ_BACK_WINDOW: u64 = 4 << 20;

/// How a moved run ended.
pub(super) enum Moved {
    /// Nothing is left to this request: every chunk was committed, or the
    /// run was cut short, or it reached a chunk already done (the filler
    /// plans what is still missing again).
    Done,
    /// The source declined, or the body broke at this chunk: the rest of
    /// the run goes through [`Source::read_range`].
    From(u32),
}

/// Sets its flag when dropped: the request's future is gone (the fill
/// ended or aborted it), so the blocking thread stops at the next chunk.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Fetches chunks `run` of the origin with a direct body (see the module
/// docs); `ctl.limit` is the end of the run, lowered by cuts.
pub(super) async fn move_run(
    ctx: &Arc<FillCtx>,
    origin: &Arc<dyn Source>,
    run: Range<u32>,
    ctl: &Arc<RunCtl>,
) -> Result<Moved, Interrupted> {
    if run.is_empty() || ctx.obj.header.len == 0 {
        return Ok(Moved::Done);
    }
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let (c, o, l, flag) = (ctx.clone(), origin.clone(), ctl.clone(), cancel.0.clone());
    let start = run.start;
    match tokio::task::spawn_blocking(move || move_chunks(&c, &o, run, &l, &flag)).await {
        Ok(moved) => moved,
        Err(e) => Err(Interrupted {
            at: start,
            error: Error::task("direct range request", e),
        }),
    }
}

/// The blocking part of [`move_run`].
fn move_chunks(
    ctx: &FillCtx,
    origin: &Arc<dyn Source>,
    run: Range<u32>,
    ctl: &RunCtl,
    cancel: &AtomicBool,
) -> Result<Moved, Interrupted> {
    let header = &ctx.obj.header;
    let cut = |c: u32| c >= ctl.limit.load(Ordering::Acquire);
    if cut(run.start) {
        return Ok(Moved::Done);
    }
    let Some(direct) = origin.direct() else {
        return Ok(Moved::From(run.start));
    };
    let want = header.chunk_range(run.start).start..header.chunk_range(run.end - 1).end;
    let mut watch = ctl.watch_end.then(EndWatch::new);
    let mut timeline = Timeline::start();
    let Some(mut body) = direct.open(want.clone(), &ctx.info) else {
        return Ok(Moved::From(run.start));
    };
    // The head is the response's first byte: the end watch's time to
    // first byte starts here, not at the first whole chunk (that made
    // every request look as if it were ending, the successors started
    // early and a reader's demand shared the link with twice the
    // requests: a far read through the WAN took 199 ms instead of 177).
    timeline.piece();
    note_progress(
        &mut watch,
        &mut timeline,
        ctx,
        ctl,
        (want.start, 0, want.end),
    );
    // The file of this fill (a repair moves to a fresh copy before it
    // starts): moved into and hashed from the same one.
    let file = ctx.obj.data();
    // Where the moved chunks are read back and hashed from (see
    // `FillCtx::commit_moved`); `buf` when a map cannot be had.
    let mut window: Option<MappedRange> = None;
    let mut buf = Vec::new();
    for chunk in run {
        if cancel.load(Ordering::Acquire) || cut(chunk) || ctx.obj.is_done(chunk) {
            // Dropping the body closes its connection.
            return Ok(Moved::Done);
        }
        let range = header.chunk_range(chunk);
        let len = (range.end - range.start) as usize;
        match file.move_in(range.start, len, |f| body.move_into(f, range.start, len)) {
            Ok(()) => {}
            Err(MoveError::Source(cause)) => {
                tracing::debug!(
                    object = %ctx.obj.key,
                    chunk,
                    "direct body ended early ({cause}); asking again from chunk {chunk}"
                );
                return Ok(Moved::From(chunk));
            }
            Err(MoveError::Write(e)) => {
                ctx.stop();
                return Err(Interrupted {
                    at: chunk,
                    error: Error::io(file.path(), "write chunk", e),
                });
            }
        }
        if cut(chunk) {
            return Ok(Moved::Done);
        }
        if window.as_ref().is_none_or(|w| !w.covers(&range)) {
            // Drop the last window first: at most one per request mapped.
            drop(window.take());
            let end = want.end.min(range.start + READ_BACK_WINDOW).max(range.end);
            window = file.map_range(range.start..end).ok();
        }
        let bytes = match &window {
            Some(map) => map.bytes(range.clone()),
            None => {
                buf.resize(len, 0);
                file.read_exact_at(range.start, &mut buf)
                    .map_err(|e| Interrupted {
                        at: chunk,
                        error: Error::io(file.path(), "read back a written chunk", e),
                    })?;
                &buf[..]
            }
        };
        ctx.commit_moved(chunk, bytes, origin.as_ref())
            .map_err(|error| Interrupted { at: chunk, error })?;
        note_progress(
            &mut watch,
            &mut timeline,
            ctx,
            ctl,
            (range.end, len, want.end),
        );
    }
    timeline.done(&want);
    Ok(Moved::Done)
}
