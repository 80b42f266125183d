//! One range request: bytes in, committed chunks out, source by source.
//!
//! The body is cut into chunks as it arrives. Each complete chunk is hashed
//! (and checked against the trusted manifest) and written on a blocking
//! thread while the next one downloads (one chunk in flight per request
//! keeps commits of a request in order and memory at two chunks per
//! request).
//!
//! A request goes to the first alternate of the fill still in good
//! standing. When that alternate fails — an error, no chunk within the
//! stall bound, a chunk that does not verify — the request continues from
//! the chunk that failed with the next source, the origin last; the
//! alternate is not asked again in this fill. While an alternate is in
//! good standing the fill sends one request at a time, in chunk order
//! (see `alternates::connections`).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::direct::Moved;
use super::filler::FillCtx;
use crate::error::{Error, Result};
use crate::source::{Source, SourceError, SourceErrorKind, SourceInfo};

/// What the filler and one running request share.
pub(crate) struct RunCtl {
    /// The end of the run, which the filler may lower (cut) while it runs:
    /// chunks from `limit` on are left to another request.
    pub(crate) limit: AtomicU32,
    /// Set once the rest of the body arrives in about the time a new
    /// request takes to deliver its first byte: the filler then starts the
    /// next request on another connection, so the link does not idle for a
    /// round trip between two requests (HTTP/1.1 clients do not pipeline).
    pub(crate) ending: AtomicBool,
    /// Whether the request watches for its end at all: only when the
    /// fill overlaps requests (two connections or more).
    pub(super) watch_end: bool,
}

impl RunCtl {
    pub(crate) fn new(end: u32, watch_end: bool) -> Arc<RunCtl> {
        Arc::new(RunCtl {
            limit: AtomicU32::new(end),
            ending: AtomicBool::new(false),
            watch_end,
        })
    }
}

/// The most chunks a request may still have to deliver when its
/// successor starts (see [`EndWatch::ending`]).
const MAX_OVERLAP_CHUNKS: u64 = 4;

/// When a request is ending (see [`RunCtl::ending`]): it measures the time
/// to its first byte (a round trip plus the source's own latency) and the
/// rate of its body so far.
pub(super) struct EndWatch {
    sent: Instant,
    first_byte: Option<(Instant, Duration)>,
    received: u64,
}

impl EndWatch {
    pub(super) fn new() -> EndWatch {
        EndWatch {
            sent: Instant::now(),
            first_byte: None,
            received: 0,
        }
    }

    /// Whether `remaining` bytes arrive within one time-to-first-byte at
    /// the rate seen so far; always when one chunk is left, never when
    /// more than [`MAX_OVERLAP_CHUNKS`] are (a client starved of CPU reads
    /// a backlog at once and sees a rate far above the link's: without the
    /// bound every request would count as ending and the fill would open
    /// ever more of them).
    fn ending(&mut self, got: usize, remaining: u64, chunk: u64) -> bool {
        let now = Instant::now();
        let (first, ttfb) = *self
            .first_byte
            .get_or_insert_with(|| (now, now.duration_since(self.sent)));
        self.received += got as u64;
        let secs = now.duration_since(first).as_secs_f64();
        let rate = if secs > 0.0 {
            self.received as f64 / secs
        } else {
            0.0
        };
        let overlap = ((rate * ttfb.as_secs_f64()) as u64).clamp(chunk, MAX_OVERLAP_CHUNKS * chunk);
        remaining <= overlap
    }
}

/// When one request was sent, delivered its first byte, was seen ending
/// (its successor started) and ended: one `debug` event per request,
/// target `blockcache::requests`, in Unix milliseconds, so a fill's
/// requests can be laid out on one time line (BENCHMARKS.md, WAN).
pub(super) struct Timeline {
    /// Whether the event is wanted (checked once per request).
    on: bool,
    sent: u128,
    first_byte: Option<u128>,
    ending: Option<u128>,
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Timeline {
    pub(super) fn start() -> Timeline {
        let on = tracing::enabled!(target: "blockcache::requests", tracing::Level::DEBUG);
        Timeline {
            on,
            sent: if on { unix_ms() } else { 0 },
            first_byte: None,
            ending: None,
        }
    }

    pub(super) fn piece(&mut self) {
        if self.on && self.first_byte.is_none() {
            self.first_byte = Some(unix_ms());
        }
    }

    fn ending(&mut self) {
        if self.on {
            self.ending = Some(unix_ms());
        }
    }

    pub(super) fn done(&self, range: &Range<u64>) {
        if !self.on {
            return;
        }
        tracing::debug!(
            target: "blockcache::requests",
            from = range.start,
            bytes = range.end - range.start,
            sent_ms = self.sent as u64,
            first_byte_ms = self.first_byte.map(|t| t as u64),
            ending_ms = self.ending.map(|t| t as u64),
            done_ms = unix_ms() as u64,
            "request ended"
        );
    }
}

/// A request that ended early: the first chunk not committed, and why.
pub(super) struct Interrupted {
    pub(super) at: u32,
    pub(super) error: Error,
}

/// Tells the request's end watch (when it has one) that the body is at
/// object offset `at` after `got` more bytes, of a body that ends at
/// `body_end` unless cut: once the rest arrives within a time to first
/// byte, the filler starts the next request (see [`RunCtl::ending`]).
pub(super) fn note_progress(
    watch: &mut Option<EndWatch>,
    timeline: &mut Timeline,
    ctx: &FillCtx,
    ctl: &RunCtl,
    (at, got, body_end): (u64, usize, u64),
) {
    let Some(w) = watch else { return };
    let header = &ctx.obj.header;
    let end = body_end.min(
        header
            .chunk_range(ctl.limit.load(Ordering::Acquire).max(1) - 1)
            .end,
    );
    if w.ending(got, end.saturating_sub(at), u64::from(header.chunk_size)) {
        timeline.ending();
        ctl.ending.store(true, Ordering::Release);
        ctx.obj.filler_wake.notify_one();
        *watch = None;
    }
}

/// Fetches chunks `run` and commits each as it completes; `ctl.limit` is
/// the end of the run (see [`RunCtl`]).
pub(crate) async fn fetch_run(ctx: Arc<FillCtx>, run: Range<u32>, ctl: Arc<RunCtl>) -> Result<()> {
    let mut from = run.start;
    for alt in &ctx.alternates {
        if alt.given_up.load(Ordering::Acquire) {
            continue;
        }
        let source = alt.source.clone();
        match fetch_from(&ctx, &source, &alt.info, from..run.end, &ctl, false).await {
            Ok(()) => return Ok(()),
            // Local trouble is not the source's fault: no other source helps.
            Err(Interrupted {
                error: error @ (Error::Io { .. } | Error::Index(_) | Error::Task { .. }),
                ..
            }) => return Err(error),
            Err(Interrupted { at, error }) => {
                alt.given_up.store(true, Ordering::Release);
                tracing::warn!(
                    object = %ctx.obj.key,
                    source = %source.identity(),
                    chunk = at,
                    "alternate source failed, asking the next one from chunk {at}: {error}"
                );
                from = at;
            }
        }
    }
    let origin = ctx.source.clone();
    if origin.direct().is_some() {
        match super::direct::move_run(&ctx, &origin, from..run.end, &ctl).await {
            Ok(Moved::Done) => return Ok(()),
            Ok(Moved::From(chunk)) => from = chunk,
            Err(interrupted) => return Err(interrupted.error),
        }
    }
    fetch_from(&ctx, &origin, &ctx.info, from..run.end, &ctl, true)
        .await
        .map_err(|i| i.error)
}

/// Fetches chunks `run` from one source. `is_origin`: the origin may answer
/// with the whole object and is not bound by the stall limit (its own
/// time-outs and retries apply).
// `settle!` records progress also right before returning Ok.
#[allow(unused_assignments)]
async fn fetch_from(
    ctx: &Arc<FillCtx>,
    source: &Arc<dyn Source>,
    info: &SourceInfo,
    run: Range<u32>,
    ctl: &RunCtl,
    is_origin: bool,
) -> Result<(), Interrupted> {
    let header = &ctx.obj.header;
    let limit = &ctl.limit;
    if run.start >= run.end || run.start >= limit.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut chunk = run.start;
    let fail = |at: u32, cause: SourceError| Interrupted {
        at,
        error: source_error(source.as_ref(), cause),
    };
    let stalled = |at: u32| {
        fail(
            at,
            SourceError::new(
                SourceErrorKind::Network,
                format!("no chunk within {:?}", ctx.stall),
            ),
        )
    };
    // The origin's own time-outs apply to it; alternates get the stall bound.
    let stall = if is_origin {
        std::time::Duration::MAX
    } else {
        ctx.stall
    };
    let want = header.chunk_range(run.start).start..header.chunk_range(run.end - 1).end;
    // Only requests to the origin overlap: alternates get one request at
    // a time (see `alternates::connections`).
    let mut watch = (is_origin && ctl.watch_end).then(EndWatch::new);
    let mut timeline = Timeline::start();
    let body = match tokio::time::timeout(stall, source.read_range(want.clone(), info)).await {
        Ok(Ok(body)) => body,
        Ok(Err(cause)) => return Err(fail(chunk, cause)),
        Err(_) => return Err(stalled(chunk)),
    };
    let range = body.range.clone();
    if range != want {
        // Only one other shape is allowed, from the origin: the whole
        // object (a source that ignored the range). Every chunk it passes
        // is filled.
        if range != (0..header.len) || !is_origin {
            return Err(fail(
                chunk,
                SourceError::new(
                    SourceErrorKind::Protocol,
                    format!("asked for bytes {want:?}, the source sent {range:?}"),
                ),
            ));
        }
        ctx.whole_body_seen();
    }
    let cs = u64::from(header.chunk_size);
    chunk = (range.start / cs) as u32;
    // First chunk of this body whose commit has not succeeded yet.
    let mut committed_to = chunk;
    let end_chunk = if range.end > range.start {
        ((range.end - 1) / cs) as u32 + 1
    } else {
        chunk
    };
    let mut buf = BytesMut::new();
    let mut committing: Option<(u32, JoinHandle<Result<()>>)> = None;
    let mut stream = body.stream;
    macro_rules! settle {
        () => {
            if let Some((c, prev)) = committing.take() {
                if let Err(error) = join(prev).await {
                    return Err(Interrupted { at: c, error });
                }
                committed_to = c + 1;
            }
        };
    }
    loop {
        let piece = match tokio::time::timeout(stall, stream.next()).await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(_) => {
                settle!();
                return Err(stalled(committed_to));
            }
        };
        let mut piece = match piece {
            Ok(p) => p,
            Err(cause) => {
                settle!();
                return Err(fail(committed_to, cause));
            }
        };
        timeline.piece();
        let at = header.chunk_range(chunk).start + (buf.len() + piece.len()) as u64;
        note_progress(
            &mut watch,
            &mut timeline,
            ctx,
            ctl,
            (at, piece.len(), range.end),
        );
        while !piece.is_empty() {
            if chunk >= limit.load(Ordering::Acquire) && chunk >= run.start {
                // Cut short: a demand took the rest. Dropping the body
                // ends the request.
                settle!();
                return Ok(());
            }
            if chunk >= end_chunk {
                settle!();
                return Err(fail(
                    committed_to,
                    SourceError::new(
                        SourceErrorKind::Protocol,
                        format!("body for bytes {range:?} is longer than the range"),
                    ),
                ));
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
            settle!();
            committing = Some((
                chunk,
                spawn_commit(ctx.clone(), source.clone(), chunk, data),
            ));
            chunk += 1;
        }
    }
    settle!();
    timeline.done(&range);
    if chunk != end_chunk || !buf.is_empty() {
        return Err(fail(
            committed_to,
            SourceError::new(
                SourceErrorKind::Protocol,
                format!("body for bytes {range:?} ended early, in chunk {chunk}"),
            ),
        ));
    }
    Ok(())
}

fn spawn_commit(
    ctx: Arc<FillCtx>,
    source: Arc<dyn Source>,
    chunk: u32,
    data: Bytes,
) -> JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || ctx.commit_chunk(chunk, &data, source.as_ref()))
}

async fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    match handle.await {
        Ok(r) => r,
        // A panic in a commit fails this request, and with it the fill.
        Err(e) => Err(Error::task("commit chunk", e)),
    }
}

fn source_error(source: &dyn Source, cause: SourceError) -> Error {
    Error::Source {
        url: source.identity(),
        cause,
    }
}

impl FillCtx {
    pub(crate) fn source_error(&self, cause: SourceError) -> Error {
        source_error(self.source.as_ref(), cause)
    }
}
