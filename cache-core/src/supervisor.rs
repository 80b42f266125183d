//! The supervisor: one task per live object that alone decides who fills
//! it, and the only writer of its [`Phase`].
//!
//! It reads the object's mailbox ([`Command`]s from fetches, waiting
//! readers, verification and the fill task it started) one message at a
//! time, and while nobody in this process fills an incomplete object it
//! tails the object's index for another process's commits. Its decisions:
//!
//! * **fill**: take the writer's lease (an OS lock on the index, with the
//!   index replay under it — file work, on the blocking pool), then hand
//!   out a [`Launcher`] for the fill; or, when another process holds the
//!   lease, follow that process's fill;
//! * **follow**: publish the chunks the other process commits — as it
//!   announces them on this process's wake-up socket (`object::wake`:
//!   early, served but never trusted by anything durable), and as its
//!   index records them (read when the filler says the index grew, and on
//!   a timer as the fallback); while no reader here waits, announcements
//!   are taken at most every [`IDLE_GAP`] (progress is all there is to
//!   show: an idle follower wakes tens of times a second, not once per
//!   chunk), and a reader that starts waiting ends the pause; when it
//!   dies (its lock with it) while the fill is wanted here, take the fill
//!   over; when it is gone and nothing here wants a fill, go idle;
//! * **end**: the fill task reports how it ended; a pause with readers
//!   still waiting (they queued their demand as it paused) fills again;
//! * **verify**: only while this process does not fill the object.
//!
//! The lease is the supervisor's to take and, for the length of a fill,
//! the fill task's to hold: the task lets it go before it reports its end.
//!
//! The task holds the object weakly: it ends when the object is dropped
//! (its mailbox closes) and never keeps an object alive by itself.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::fill::{self, FillPlan};
use crate::index::{IndexHeader, IndexReader};
use crate::object::{Command, FillEnd, Launcher, ObjectShared, Phase, VerifyReport, WakeListener};

/// How often an object that nobody in this process fills reads its index
/// for another process's commits, without a wake-up socket...
const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// ... and with one (in case a wake-up was dropped; see `object::wake`).
const FOLLOW_POLL_BOUND: Duration = Duration::from_millis(100);
/// While no reader waits, a follower takes announcements at most this
/// often. Taking each one at once made the 7 idle followers of
/// `benches/followers.sh` cost 15 % of the leader's CPU (issue 13's
/// target is 10 %); a reader that starts waiting cuts the pause short, so
/// readers still see commits at once.
const IDLE_GAP: Duration = Duration::from_millis(50);
/// How often a follower that wants the object filled tries the lock.
const TAKEOVER_EVERY: Duration = Duration::from_millis(100);

/// Starts the supervisor of `obj` on `runtime` (see the module docs).
pub(crate) fn spawn(
    obj: Weak<ObjectShared>,
    commands: mpsc::UnboundedReceiver<Command>,
    runtime: &tokio::runtime::Handle,
) {
    let Some((header, reader_waits)) = obj
        .upgrade()
        .map(|o| (o.header.clone(), o.follower_wake.clone()))
    else {
        return;
    };
    let supervisor = Supervisor {
        obj,
        header,
        reader_waits,
        commands,
        follower: None,
        wake: None,
        watch_idle: true,
        last_try: Instant::now(),
    };
    runtime.spawn(supervisor.run());
}

struct Supervisor {
    obj: Weak<ObjectShared>,
    /// The object's header (its chunk geometry, for announcements).
    header: IndexHeader,
    /// Rung when a reader starts waiting (the object's `follower_wake`).
    reader_waits: Arc<tokio::sync::Notify>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Tails the index while another process (or nobody) fills.
    follower: Option<IndexReader>,
    /// The socket the filling process announces its commits to, bound
    /// before the index is first read (see `object::wake`).
    wake: Option<WakeListener>,
    /// Whether to tail the index while `Idle` too: until this process
    /// first fills the object, another process may be filling it unseen
    /// (after this process's own fill, its view is the index's).
    watch_idle: bool,
    /// When a take-over was last tried.
    last_try: Instant,
}

impl Drop for Supervisor {
    /// Dropped with its runtime: a fill's end already sent is still told
    /// (else the object would say `Filling` for ever); once the mailbox is
    /// closed, a fill task reports to the object directly, and the next
    /// request starts a new supervisor.
    fn drop(&mut self) {
        self.commands.close();
        let Some(obj) = self.obj.upgrade() else {
            return;
        };
        while let Ok(command) = self.commands.try_recv() {
            if let Command::FillEnded(result) = command {
                obj.set_phase(Phase::after_fill(result));
            }
        }
    }
}

impl Supervisor {
    async fn run(mut self) {
        let mut next_poll = Instant::now();
        // Announcements are not taken before this (an idle follower's pause).
        let mut paused_until: Option<Instant> = None;
        loop {
            // No strong reference across the wait: the object may go.
            let following = match self.obj.upgrade() {
                Some(obj) => {
                    let following = self.follows(&obj);
                    if following && self.wake.is_none() {
                        // Bound before the index is first read: a commit
                        // after that read is announced to it.
                        self.wake = Some(WakeListener::bind(&obj));
                    }
                    following
                }
                None => return,
            };
            let listening = following && paused_until.is_none();
            let (wake, header) = (self.wake.as_mut().filter(|_| listening), &self.header);
            let reader_waits = &self.reader_waits;
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    let Some(obj) = self.obj.upgrade() else { return };
                    self.handle(&obj, command).await;
                }
                announced = async { Some(wake?.recv(header).await) }, if listening => {
                    let Some(obj) = self.obj.upgrade() else { return };
                    // A commit's announcement is all there is to take; the
                    // index is read when it grew (a flush, the root) or on
                    // the timer (a lost datagram).
                    let read_index = match announced {
                        Some(a) => {
                            obj.take_announced(&a.chunks);
                            a.index_grew
                        }
                        None => true,
                    };
                    if !obj.has_waiters() {
                        paused_until = Some(Instant::now() + IDLE_GAP);
                    }
                    self.follow(&obj, read_index).await;
                }
                () = async {
                    match paused_until {
                        Some(t) => tokio::select! {
                            () = tokio::time::sleep_until(t) => {}
                            () = reader_waits.notified() => {}
                        },
                        None => std::future::pending().await,
                    }
                }, if following => paused_until = None,
                () = tokio::time::sleep_until(next_poll), if following => {
                    let Some(obj) = self.obj.upgrade() else { return };
                    self.follow(&obj, true).await;
                    let bound = self.wake.as_ref().is_some_and(|w| w.is_bound());
                    next_poll = Instant::now() + if bound { FOLLOW_POLL_BOUND } else { FOLLOW_POLL };
                }
            }
        }
    }

    async fn handle(&mut self, obj: &Arc<ObjectShared>, command: Command) {
        match command {
            Command::Fill {
                plan,
                restart,
                reply,
            } => {
                let _ = reply.send(self.fill(obj, plan, restart).await);
            }
            Command::Wanted { reply } => {
                let _ = reply.send(self.wanted(obj).await);
            }
            Command::Verify { reply } => {
                let _ = reply.send(self.verify(obj).await);
            }
            Command::FillEnded(result) => self.fill_ended(obj, result).await,
        }
    }

    /// A fetch: fill with `plan`, or attach to what runs.
    async fn fill(
        &mut self,
        obj: &Arc<ObjectShared>,
        plan: FillPlan,
        restart: bool,
    ) -> Result<Option<Launcher>> {
        if !want(obj, &plan) {
            return Ok(None);
        }
        self.lease(obj, plan, restart).await
    }

    /// A reader waits and nothing fills: fill from the plan of an earlier
    /// fetch or the store's source factory, or follow another process.
    async fn wanted(&mut self, obj: &Arc<ObjectShared>) -> Result<()> {
        let plan = {
            let st = obj.state.lock();
            match st.phase {
                Phase::Filling | Phase::Complete | Phase::Following => return Ok(()),
                Phase::Idle | Phase::Failed(_) => st.plan.clone(),
            }
        };
        let plan = match plan {
            Some(plan) => plan,
            None => match fill::factory_plan(obj) {
                Ok(plan) => plan,
                // Nothing here can fetch it, but another process may be
                // filling it: follow that fill instead of failing the reader.
                Err(e @ Error::NoSource { .. }) => {
                    if !lock_held_elsewhere(obj).await? {
                        return Err(e);
                    }
                    become_follower(obj);
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        want(obj, &plan);
        if let Some(launcher) = self.lease(obj, plan, false).await? {
            launcher.start();
        }
        Ok(())
    }

    /// Takes the writer's lease for a fill with `plan` and moves the phase
    /// by what it found: a fill to start (`Filling`), another process's
    /// fill (`Following`), an object the index says is complete.
    async fn lease(
        &mut self,
        obj: &Arc<ObjectShared>,
        plan: FillPlan,
        restart: bool,
    ) -> Result<Option<Launcher>> {
        let o = obj.clone();
        let leased = crate::task::blocking("take the writer's lease", move || {
            let mut lease = fill::try_lease(&o)?;
            if let (Some(lease), true) = (lease.as_mut(), restart) {
                fill::forget_chunks(&o, lease)?;
            }
            Ok(lease)
        })
        .await;
        match leased {
            Ok(Some(lease)) => {
                if obj.state.lock().root.is_some() {
                    obj.set_phase(Phase::Complete);
                    return Ok(None);
                }
                // This task reads that mailbox: it is open.
                let mailbox = obj.supervisor().ok_or_else(|| Error::Task {
                    what: "object supervisor",
                    reason: "has no runtime".into(),
                })?;
                obj.set_phase(Phase::Filling);
                // Readers' demands reach this fill directly now.
                obj.publish_remote_demand();
                self.follower = None;
                self.wake = None;
                self.watch_idle = false;
                Ok(Some(fill::launcher(obj, plan, lease, mailbox)))
            }
            Ok(None) => {
                become_follower(obj);
                Ok(None)
            }
            Err(e) => {
                obj.set_phase(Phase::Failed(Arc::new(e.clone())));
                Err(e)
            }
        }
    }

    /// The fill task ended (its lease already let go).
    async fn fill_ended(&mut self, obj: &Arc<ObjectShared>, result: Result<FillEnd>) {
        let paused = matches!(result, Ok(FillEnd::Paused));
        obj.set_phase(Phase::after_fill(result));
        // A reader that queued its demand as the fill paused saw it still
        // filling and asked for nothing: fill for it.
        if paused && !obj.state.lock().demand.is_empty() {
            if let Err(e) = self.wanted(obj).await {
                tracing::warn!(object = %obj.key, "cannot resume the fill: {e}");
            }
        }
    }

    /// Verification, while no fill of this process runs.
    async fn verify(&mut self, obj: &Arc<ObjectShared>) -> Result<VerifyReport> {
        if matches!(obj.state.lock().phase, Phase::Filling) {
            return Err(Error::Busy {
                key: obj.key.clone(),
                what: "it is being filled in this process",
            });
        }
        let o = obj.clone();
        let report = crate::task::blocking("verify", move || fill::verify_blocking(&o)).await?;
        if !report.damaged.is_empty() {
            obj.set_phase(Phase::Idle);
        }
        Ok(report)
    }

    /// Whether to tail the index now: another process fills the object,
    /// or may (see `watch_idle`).
    fn follows(&self, obj: &ObjectShared) -> bool {
        match obj.state.lock().phase {
            Phase::Following => true,
            Phase::Idle | Phase::Failed(_) => self.watch_idle,
            Phase::Filling | Phase::Complete => false,
        }
    }

    /// One step of following the index another process (or nobody)
    /// writes: its new records published (when `read_index`: a commit's
    /// announcement alone does not need it); every few steps, in
    /// `Following`, a take-over when the fill is wanted here, or `Idle`
    /// when its holder is gone.
    async fn follow(&mut self, obj: &Arc<ObjectShared>, read_index: bool) {
        if self.follower.is_none() {
            let path = obj.index_path();
            let opened =
                crate::task::blocking("open the index", move || Ok(IndexReader::open(&path)?))
                    .await;
            match opened {
                Ok((reader, _, state)) => {
                    // The replay's state as it is (its own rules): no
                    // records made up to carry it.
                    obj.follow_index(state);
                    self.follower = Some(reader);
                }
                Err(e) => tracing::warn!(object = %obj.key, "cannot follow index: {e}"),
            }
        }
        if let Some(reader) = self.follower.as_mut().filter(|_| read_index) {
            match reader.poll() {
                Ok(records) if !records.is_empty() => obj.apply_records(&records),
                Ok(_) => {}
                Err(e) => tracing::warn!(object = %obj.key, "cannot follow index: {e}"),
            }
        }
        if self.last_try.elapsed() < TAKEOVER_EVERY
            || !matches!(obj.state.lock().phase, Phase::Following)
        {
            return;
        }
        self.last_try = Instant::now();
        // Take over when this process wants the object filled: it fetched
        // it (a plan), or readers wait and the store can make a source.
        let (plan, demanded) = {
            let st = obj.state.lock();
            (st.plan.clone(), !st.demand.is_empty())
        };
        let plan = match plan {
            Some(plan) => Some(plan),
            None if demanded => fill::factory_plan(obj).ok(),
            None => None,
        };
        match plan {
            Some(plan) => match self.lease(obj, plan, false).await {
                Ok(Some(launcher)) => launcher.start(),
                Ok(None) => {}
                Err(e) => tracing::warn!(object = %obj.key, "take-over failed: {e}"),
            },
            None => {
                if let Ok(false) = lock_held_elsewhere(obj).await {
                    // Its filler is gone and nothing here wants a fill.
                    obj.set_phase(Phase::Idle);
                }
            }
        }
    }
}

/// Another process fills `obj`: follow it, and publish the chunks this
/// process's readers already wait for, so that fill fetches them first.
fn become_follower(obj: &ObjectShared) {
    obj.set_phase(Phase::Following);
    obj.publish_remote_demand();
}

/// Whether another process holds the fill lock of `obj` (on the blocking
/// pool: it opens and locks the index file).
async fn lock_held_elsewhere(obj: &Arc<ObjectShared>) -> Result<bool> {
    let obj = obj.clone();
    crate::task::blocking("look at the fill lock", move || {
        fill::lock_held_elsewhere(&obj)
    })
    .await
}

/// Records `plan` as how to fill `obj`; whether a fill must be started
/// (none runs here and the object is incomplete).
fn want(obj: &ObjectShared, plan: &FillPlan) -> bool {
    let mut st = obj.state.lock();
    st.plan = Some(plan.clone());
    // Someone wants the object filled again.
    obj.released
        .store(false, std::sync::atomic::Ordering::Release);
    !matches!(st.phase, Phase::Filling | Phase::Complete)
}
