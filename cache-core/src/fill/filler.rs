//! The filler: runs the requests the scheduler picks and finishes the
//! object (root hash, index root record, hash alias).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::alternates::{count_chunk_verify_failure, prepare, Alternate};
use super::durability::{crosses, Durability, Pending};
use super::fetch::RunCtl;
use super::lanes::LaneRamp;
use super::prefix::{remove_checkpoint, Checkpoints, Prefix};
use super::scheduler::{FillPolicy, FillScheduler, Run, RunId};
use super::{FillPlan, WriterLease};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{IndexState, Record};
use crate::object::{
    read_remote_demand, Announcer, Command, DemandBell, FillEnd, ObjectShared, Phase,
};
use crate::source::{Source, SourceError, SourceErrorKind, SourceInfo};

/// How often the filler looks for demands of readers in other processes
/// when they cannot ring its doorbell ([`DemandBell`])...
const REMOTE_DEMAND_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// ... and when they can (in case a ring was lost).
const REMOTE_DEMAND_POLL_RUNG: std::time::Duration = std::time::Duration::from_millis(100);

/// State shared by the filler and its requests.
pub(crate) struct FillCtx {
    pub(crate) obj: Arc<ObjectShared>,
    /// The origin (last in line; names the object).
    pub(crate) source: Arc<dyn Source>,
    pub(crate) info: SourceInfo,
    /// Asked before the origin, in order (see [`crate::chain`]).
    pub(crate) alternates: Vec<Alternate>,
    /// CVs of a manifest proven against the expected root: a chunk that
    /// does not match is never committed.
    pub(crate) trusted: Option<Vec<[u8; 32]>>,
    /// How long an alternate may go without delivering a chunk.
    pub(crate) stall: std::time::Duration,
    /// This fill refetches chunks verification cleared.
    repair: bool,
    /// Each chunk's chaining value (the index's, then this fill's).
    pub(super) cvs: Mutex<Vec<Option<[u8; 32]>>>,
    /// Chunks readers in other processes wait for: flushed at once when
    /// committed if no follower has a wake-up socket (such followers see
    /// only durable chunks).
    remote_demand: Mutex<RoaringBitmap>,
    /// Tells following processes of each commit (see `object::wake`).
    wake: Announcer,
    pending: Mutex<Pending>,
    durability: Durability,
    flush_wake: Notify,
    /// Rung every `writeback_bytes` of commits (see `durability`).
    writeback_wake: Notify,
    events: mpsc::UnboundedSender<Event>,
    /// Sequential digests over the completed prefix (see `crate::digest`).
    pub(super) prefix: Mutex<Prefix>,
    /// What the hasher hands the flusher (see `prefix`).
    pub(super) checkpoints: Mutex<Checkpoints>,
    prefix_wake: Notify,
}

/// What the requests and the flusher tell the driver (a request's own end
/// comes from its task, through the `JoinSet`).
enum Event {
    ChunkDone(u32),
    WholeBody,
    /// The flusher failed: the fill ends.
    Failed(Error),
}

/// Starts the fill task. It owns every task of the fill (its requests in
/// a `JoinSet`, the flusher and the prefix hasher in another), so a panic
/// anywhere ends the fill with [`Error::Task`] instead of leaving readers
/// waiting; and whatever way the task ends — even cancelled, never polled
/// again — [`EndGuard`] tells the object's supervisor (`supervisor`) how.
pub(crate) fn spawn(
    obj: Arc<ObjectShared>,
    plan: FillPlan,
    lease: WriterLease,
    supervisor: mpsc::UnboundedSender<Command>,
) {
    let guard = EndGuard {
        obj: obj.clone(),
        supervisor,
        ended: false,
    };
    let runtime = obj.background_runtime();
    let fill = async move {
        // The fill's future (and the index lock in it) is dropped when
        // this await ends, before the end is announced: whoever acts on
        // the announcement (verify, another fill) finds the lock free.
        let result = AssertUnwindSafe(run(obj, plan, lease))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(Error::panicked("fill", panic.as_ref())));
        guard.end(result);
    };
    // Where the object's supervisor runs (see `StoreOptions::runtime`).
    match runtime {
        Some(runtime) => drop(runtime.spawn(fill)),
        None => drop(tokio::spawn(fill)),
    }
}

/// Reports a fill's end to the object's supervisor: the outcome once
/// known, [`Error::Task`] when the fill task goes away without one.
struct EndGuard {
    obj: Arc<ObjectShared>,
    supervisor: mpsc::UnboundedSender<Command>,
    ended: bool,
}

impl EndGuard {
    fn end(mut self, result: Result<FillEnd>) {
        self.ended = true;
        if let Err(e) = &result {
            tracing::warn!(object = %self.obj.key, "fill failed: {e}");
        }
        self.report(result);
    }

    fn report(&self, result: Result<FillEnd>) {
        if let Err(mpsc::error::SendError(Command::FillEnded(result))) =
            self.supervisor.send(Command::FillEnded(result))
        {
            // The supervisor is gone with its runtime: nobody is left to
            // decide, and waiters (in another runtime) must not hang.
            self.obj.set_phase(Phase::after_fill(result));
        }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.ended {
            let e = Error::Task {
                what: "fill",
                reason: "was cancelled".into(),
            };
            // Dropped without ending: the runtime is shutting down (Ctrl-C,
            // process exit) far more often than anything else, so no warning
            // on the user's terminal; waiters still get the error. Panics
            // are caught and warned about in `end`.
            tracing::debug!(object = %self.obj.key, "fill task dropped: {e}");
            self.report(Err(e));
        }
    }
}

/// The fill: sources prepared, requests driven, the object finished.
async fn run(obj: Arc<ObjectShared>, plan: FillPlan, lease: WriterLease) -> Result<FillEnd> {
    let (events, rx) = mpsc::unbounded_channel();
    let state = {
        let st = obj.state.lock();
        IndexState {
            done: st.done.clone(),
            root: st.root,
        }
    };
    let WriterLease { _lock, writer, cvs } = lease;
    let _lock = _lock; // held for the whole fill
    let options = plan.options;
    let repair = !obj.state.lock().damaged.is_empty();
    let wake = Announcer::new(&obj);
    let prepared = prepare(
        &obj,
        &plan.source,
        &plan.alternates,
        plan.stall,
        plan.expected_root,
    )
    .await;
    let ctx = Arc::new(FillCtx {
        obj,
        source: plan.source,
        info: plan.info,
        alternates: prepared.alternates,
        trusted: prepared.trusted,
        stall: plan.stall,
        repair,
        cvs: Mutex::new(cvs),
        remote_demand: Mutex::new(RoaringBitmap::new()),
        wake,
        pending: Mutex::new(Pending {
            records: Vec::new(),
            bytes: 0,
            stopped: false,
        }),
        durability: Durability::new(writer, state),
        flush_wake: Notify::new(),
        writeback_wake: Notify::new(),
        events,
        prefix: Prefix::new(&plan.digests),
        checkpoints: Mutex::default(),
        prefix_wake: Notify::new(),
    });
    // Aborted when dropped, however this function ends.
    let mut helpers = JoinSet::new();
    helpers.spawn(flush_loop(ctx.clone()));
    helpers.spawn(writeback_loop(ctx.clone()));
    helpers.spawn(prefix_loop(ctx.clone()));
    let result = drive(&ctx, &options, rx).await;
    helpers.abort_all();
    finish(&ctx, result).await
}

/// Runs requests until every chunk is committed (or an error).
async fn drive(
    ctx: &Arc<FillCtx>,
    options: &super::FillOptions,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<FillEnd> {
    let header = &ctx.obj.header;
    let done = ctx.obj.state.lock().done.clone();
    let max_run =
        (options.max_request_bytes / u64::from(header.chunk_size)).clamp(1, u32::MAX as u64) as u32;
    let mut sched = FillScheduler::new(
        header.chunk_count(),
        done,
        options.policy,
        max_run,
        options.readahead_chunks,
    );
    if !ctx.info.ranges {
        sched.set_single_stream();
    }
    if header.len == 0 && !sched.is_complete() {
        let c = ctx.clone();
        crate::task::blocking("commit chunk", move || {
            c.commit_chunk(0, &[], c.source.as_ref())
        })
        .await?;
        sched.chunk_done(0);
    }
    let configured = options.connections.max(1);
    let chunk_bytes = u64::from(header.chunk_size);
    let mut ramp = LaneRamp::new(
        options,
        std::time::Instant::now(),
        sched.done_chunks() * chunk_bytes,
    );
    // Every request's task, owned here: its end (or its panic) is seen by
    // the select below. `limits` holds each running request's end.
    let mut runs: JoinSet<(RunId, Result<()>)> = JoinSet::new();
    let mut limits: HashMap<RunId, Arc<RunCtl>> = HashMap::new();
    let bell = DemandBell::bind(&ctx.obj);
    let mut remote_tick = tokio::time::interval(if bell.is_bound() {
        REMOTE_DEMAND_POLL_RUNG
    } else {
        REMOTE_DEMAND_POLL
    });
    remote_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut remote: Vec<u32> = Vec::new();
    let result = 'fill: loop {
        // Catch up with chunks committed since the last turn: readers see a
        // chunk before its event is handled here, and a demand judged
        // against a stale view would cut a request that is about to
        // deliver it (refetching bytes already in flight).
        while let Ok(ev) = events.try_recv() {
            if let Err(e) = apply_event(&mut sched, ev) {
                break 'fill Err(e);
            }
        }
        // Launch what the free connections allow; one extra lane is kept
        // for demanded chunks so a far read never waits behind prefetch.
        let connections = ramp.lanes(super::alternates::connections(&ctx.alternates, configured));
        loop {
            let mut demanded = ctx.obj.state.lock().demand.oldest(64);
            demanded.extend_from_slice(&remote);
            // A request in its last stretch no longer holds its slot: the
            // next one starts now and its first byte comes as the
            // previous body ends (see `RunCtl::ending`). At most one
            // successor per connection: never more than twice the
            // connections in flight. Not with one connection: who asks
            // for one means one (an origin that allows one per client;
            // a fill that must go strictly front to back).
            let ending = limits
                .values()
                .filter(|r| r.ending.load(Ordering::Acquire))
                .count();
            let overlapping = if connections > 1 {
                ending.min(connections)
            } else {
                0
            };
            let busy = limits.len() - overlapping;
            let may_prefetch = busy < connections;
            if !(may_prefetch || (!demanded.is_empty() && busy < connections + 1)) {
                break;
            }
            let run = sched.next_run(&demanded, may_prefetch);
            for (id, end) in sched.take_cuts() {
                if let Some(run) = limits.get(&id) {
                    let old_end = run.limit.swap(end, Ordering::AcqRel);
                    ctx.obj.note_released(end..old_end);
                }
            }
            let Some(Run { id, chunks }) = run else {
                break;
            };
            ctx.obj.note_in_flight(chunks.clone());
            let ctl = RunCtl::new(chunks.end, connections > 1);
            let (c, l) = (ctx.clone(), ctl.clone());
            runs.spawn(async move { (id, super::fetch::fetch_run(c, chunks, l).await) });
            limits.insert(id, ctl);
        }
        if sched.is_complete() && limits.is_empty() {
            break Ok(FillEnd::Complete);
        }
        if ctx.obj.released.load(Ordering::Acquire)
            && ctx.obj.handles() == 0
            && ctx.obj.state.lock().demand.is_empty()
        {
            // The last consumer gave up: stop, keeping what arrived.
            ctx.pending.lock().stopped = true;
            break Ok(FillEnd::Paused);
        }
        if limits.is_empty()
            && options.policy == FillPolicy::Lazy
            && ctx.obj.handles() == 0
            && ctx.obj.state.lock().demand.is_empty()
        {
            break Ok(FillEnd::Paused);
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    if let Err(e) = apply_event(&mut sched, ev) {
                        break Err(e);
                    }
                }
                None => unreachable!("the context holds a sender"),
            },
            joined = runs.join_next(), if !runs.is_empty() => match joined {
                Some(Ok((id, result))) => {
                    // The request's chunk events were sent before it
                    // ended: apply them first.
                    while let Ok(ev) = events.try_recv() {
                        if let Err(e) = apply_event(&mut sched, ev) {
                            break 'fill Err(e);
                        }
                    }
                    limits.remove(&id);
                    if let Err(e) = run_ended(ctx, &mut sched, id, result) {
                        break Err(e);
                    }
                }
                Some(Err(e)) => break Err(Error::task("range request", e)),
                None => {}
            },
            _ = ctx.obj.filler_wake.notified() => {}
            () = tokio::time::sleep_until(ramp.deadline().into()), if !ramp.is_wide() => {
                let done = sched.done_chunks() * chunk_bytes;
                if ramp.tick(std::time::Instant::now(), done, connections) {
                    tracing::debug!(
                        object = %ctx.obj.key,
                        connections = ramp.lanes(configured),
                        "origin slower than a fast one: every connection opens"
                    );
                }
            }
            _ = remote_tick.tick() => read_remote(ctx, &sched, &mut remote),
            () = bell.rung() => {
                read_remote(ctx, &sched, &mut remote);
                ctx.wake.repeat();
            }
        }
    };
    if result.is_err() {
        ctx.pending.lock().stopped = true;
    }
    runs.abort_all();
    // Drain chunk events of requests that finished before the abort.
    while let Ok(ev) = events.try_recv() {
        if let Event::ChunkDone(c) = ev {
            sched.chunk_done(c);
        }
    }
    result
}

/// Reads the chunks other processes' readers wait for (their demand files).
fn read_remote(ctx: &FillCtx, sched: &FillScheduler, remote: &mut Vec<u32>) {
    remote.clear();
    read_remote_demand(&ctx.obj.dir, remote);
    remote.retain(|&c| c < ctx.obj.header.chunk_count() && !sched.is_done(c));
    *ctx.remote_demand.lock() = remote.iter().copied().collect();
}

/// Applies one filler event to the scheduler; an error ends the fill.
fn apply_event(sched: &mut FillScheduler, ev: Event) -> Result<()> {
    match ev {
        Event::ChunkDone(c) => sched.chunk_done(c),
        Event::WholeBody => sched.set_single_stream(),
        Event::Failed(e) => return Err(e),
    }
    Ok(())
}

/// Books the end of request `id`; an error ends the fill (except a source
/// that turns out to ignore ranges: then one stream from offset 0).
fn run_ended(
    ctx: &Arc<FillCtx>,
    sched: &mut FillScheduler,
    id: RunId,
    result: Result<()>,
) -> Result<()> {
    let stream_run = sched.is_stream_run(id);
    if let Some(released) = sched.run_ended(id) {
        ctx.obj.note_released(released);
    }
    match result {
        Ok(()) => Ok(()),
        // A range request answered with the whole object: one stream.
        // Every request running then fails the same way; each is fine.
        Err(Error::Source { cause, .. })
            if cause.kind == SourceErrorKind::RangesUnsupported && !stream_run =>
        {
            if !sched.single_stream() {
                tracing::info!(object = %ctx.obj.key, "source ignores ranges: one stream");
                sched.set_single_stream();
            }
            Ok(())
        }
        // The stream itself, resumed past offset 0, got the whole object:
        // from offset 0 then (the chunks already here must match).
        Err(Error::Source { cause, .. })
            if cause.kind == SourceErrorKind::RangesUnsupported && !sched.stream_from_zero() =>
        {
            tracing::info!(object = %ctx.obj.key, "source ignores ranges: one stream from offset 0");
            sched.set_stream_from_zero();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Flushes what was committed, then (when complete) records the root.
async fn finish(ctx: &Arc<FillCtx>, result: Result<FillEnd>) -> Result<FillEnd> {
    let c = ctx.clone();
    crate::task::blocking("finish fill", move || {
        // Taken before the final flush (its chunks are durable after it):
        // the next fill takes the digests up from there.
        let checkpoint = match result {
            Ok(FillEnd::Complete) => None,
            _ => c.take_latest_checkpoint(),
        };
        c.durability.flush(&c.obj, &c.pending)?;
        let outcome = match result {
            Ok(FillEnd::Complete) => c.complete().map(|()| FillEnd::Complete),
            other => {
                if let Some(cp) = checkpoint {
                    c.write_checkpoint(&cp);
                }
                other
            }
        };
        c.wake.index_grew();
        outcome
    })
    .await
}

/// Feeds the sequential hashers the completed prefix as it grows, off the
/// commit path (woken by commits).
async fn prefix_loop(ctx: Arc<FillCtx>) {
    loop {
        let c = ctx.clone();
        if tokio::task::spawn_blocking(move || c.advance_prefix())
            .await
            .is_err()
        {
            return;
        }
        ctx.prefix_wake.notified().await;
    }
}

/// Starts the data file's writeback when commits ring for it; the flushes
/// that make the bytes durable come as before. A failure only loses the
/// head start: the next flush writes (and reports) what is left.
async fn writeback_loop(ctx: Arc<FillCtx>) {
    loop {
        ctx.writeback_wake.notified().await;
        let c = ctx.clone();
        let started =
            crate::task::blocking("start writeback", move || c.obj.data().start_writeback()).await;
        if let Err(e) = started {
            tracing::debug!(object = %ctx.obj.key, "{e}");
        }
    }
}

/// Flushes by bytes (woken by commits) or by time.
async fn flush_loop(ctx: Arc<FillCtx>) {
    loop {
        let interval = ctx.obj.host.options().flush_interval;
        let _ = tokio::time::timeout(interval, ctx.flush_wake.notified()).await;
        if ctx.pending.lock().records.is_empty() {
            continue;
        }
        let c = ctx.clone();
        let flushed = crate::task::blocking("flush", move || {
            // Taken before the flush takes its records: the chunks it
            // covers are durable once the flush is done.
            let checkpoint = c.take_due_checkpoint();
            c.durability.flush(&c.obj, &c.pending)?;
            c.wake.index_grew();
            if let Some(cp) = checkpoint {
                c.write_checkpoint(&cp);
            }
            Ok(())
        })
        .await;
        if let Err(e) = flushed {
            let _ = ctx.events.send(Event::Failed(e));
            return;
        }
    }
}

impl FillCtx {
    pub(crate) fn whole_body_seen(&self) {
        let _ = self.events.send(Event::WholeBody);
    }

    /// Hashes chunk `c`, checks it against the trusted manifest (if any),
    /// writes it and makes it visible (blocking). `from` names the source
    /// the bytes came from, for the error of a chunk that does not verify.
    pub(crate) fn commit_chunk(&self, c: u32, data: &[u8], from: &dyn Source) -> Result<()> {
        let obj = &self.obj;
        let header = &obj.header;
        // Design invariant 1: checked before anything is written.
        let cv = self.checked_cv(c, data, from)?;
        if obj.is_done(c) {
            // A whole-object body passes chunks we have: they must match.
            let known = self.cvs.lock()[c as usize];
            if known.is_some_and(|k| k != cv) {
                return Err(self.source_error(SourceError::new(
                    SourceErrorKind::Changed,
                    format!("chunk {c} differs from the bytes already stored"),
                )));
            }
            return Ok(());
        }
        if self.pending.lock().stopped {
            return Ok(());
        }
        let offset = header.chunk_range(c).start;
        if let Err(e) = obj.data().write_at(offset, data) {
            self.stop();
            return Err(e);
        }
        self.publish(c, cv, data.len());
        Ok(())
    }

    /// Commits chunk `c`, which a [`crate::DirectBody`] moved into the
    /// data file, from `bytes`: the chunk read back from the file (a map
    /// of it), so what readers will see is what was hashed (invariant 1).
    /// A chunk that does not verify stays invisible, its bytes unclaimed.
    ///
    /// Read back through a map of a few chunks of the request's range
    /// (`direct`), not with `pread` into a buffer: no copy of every byte,
    /// 5 % less CPU per fill (BENCHMARKS.md, fill at the disk's speed).
    /// The map is dropped as the request moves on, so the process's
    /// resident size does not grow with the object (which a `pread` once
    /// avoided and the whole file's shared map would not).
    pub(crate) fn commit_moved(&self, c: u32, bytes: &[u8], from: &dyn Source) -> Result<()> {
        let cv = self.checked_cv(c, bytes, from)?;
        self.publish(c, cv, bytes.len());
        Ok(())
    }

    /// Ends commits after a failed write of the data file (as a failed
    /// [`FillCtx::commit_chunk`] does).
    pub(crate) fn stop(&self) {
        self.pending.lock().stopped = true;
    }

    /// Chunk `c`'s chaining value, checked against the trusted manifest
    /// when there is one.
    fn checked_cv(&self, c: u32, data: &[u8], from: &dyn Source) -> Result<[u8; 32]> {
        let obj = &self.obj;
        let header = &obj.header;
        let cv = crate::hash::chunk_cv(data, c, header.chunk_size, header.len);
        if let Some(trusted) = &self.trusted {
            if trusted[c as usize] != cv {
                count_chunk_verify_failure();
                return Err(Error::ChunkVerify {
                    url: from.identity(),
                    key: obj.key.clone(),
                    chunk: c,
                });
            }
        }
        Ok(cv)
    }

    /// Makes written chunk `c` visible: its record waits for the next
    /// flush, readers here and in other processes and the hashers learn
    /// of it.
    fn publish(&self, c: u32, cv: [u8; 32], len: usize) {
        let obj = &self.obj;
        {
            let mut p = self.pending.lock();
            if p.stopped {
                return;
            }
            self.cvs.lock()[c as usize] = Some(cv);
            p.records.push(Record::Chunk { index: c, cv });
            let before = p.bytes;
            p.bytes += len as u64;
            let options = obj.host.options();
            if p.bytes >= options.flush_bytes
                || (self.remote_demand.lock().contains(c) && !self.wake.has_followers())
            {
                self.flush_wake.notify_one();
            } else if crosses(before, p.bytes, options.writeback_bytes) {
                self.writeback_wake.notify_one();
            }
            // Visible to readers only now: bytes written, CV known.
            obj.mark_done(c);
        }
        // Other processes' readers next: their wake-up is one datagram.
        self.wake.committed(c);
        let _ = self.events.send(Event::ChunkDone(c));
        self.prefix_wake.notify_one();
    }

    /// Chunk `c`'s chaining value, if it has one.
    pub(super) fn cv(&self, c: u32) -> Option<[u8; 32]> {
        self.cvs.lock().get(c as usize).copied().flatten()
    }

    /// A copy of every chunk's chaining value (blocking work: up to
    /// 32 MiB at 1 Mi chunks).
    pub(super) fn cvs_table(&self) -> Vec<Option<[u8; 32]>> {
        self.cvs.lock().clone()
    }

    /// Every chunk is committed and flushed: compute the root from the
    /// chunk CVs (no re-read), record it with the sequential digests, share
    /// the data file with a complete copy of the same bytes, and name the
    /// object by what was computed (blocking).
    fn complete(&self) -> Result<()> {
        let obj = &self.obj;
        let header = &obj.header;
        let cvs: Vec<[u8; 32]> = {
            let cvs = self.cvs.lock();
            let mut out = Vec::with_capacity(cvs.len());
            for (i, cv) in cvs.iter().enumerate() {
                match cv {
                    Some(cv) => out.push(*cv),
                    None => {
                        return Err(crate::index::IndexError::Corrupt {
                            path: obj.index_path(),
                            detail: format!("chunk {i} is marked done but has no chaining value"),
                        }
                        .into())
                    }
                }
            }
            out
        };
        let root = crate::hash::root_from_cvs(&cvs, header.chunk_size, header.len);
        // Digests, the shared data file and the names all come before the
        // root record: whoever sees the object complete (here or in a
        // process following the index) finds it by every name at once.
        let digests = self.finish_digests();
        obj.host.store_digests(&obj.dir, header, &digests)?;
        if self.repair {
            // The copy this object shared its file with may hold the same
            // damage (it was the same inode): keep the repaired file.
            tracing::info!(object = %obj.key, "repaired: the data file stays unshared");
        } else {
            obj.host.share_data(&obj.key, header, &root);
        }
        for d in std::iter::once(Digest::blake3(&root)).chain(digests) {
            obj.host.name_object(&d, &obj.key)?;
        }
        self.durability.finish(*root.as_bytes())?;
        obj.state.lock().root = Some(*root.as_bytes());
        if let Err(e) = remove_checkpoint(&obj.dir) {
            tracing::warn!(object = %obj.key, "{e}");
        }
        tracing::info!(object = %obj.key, blake3 = %root, "object complete");
        Ok(())
    }
}
