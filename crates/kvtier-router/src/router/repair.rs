//! Gap repair in three steps, so that no [`ReplaySource`] is ever called while the router is
//! locked: [`Router::take_repairs`] hands out a [`RepairJob`] per instance with an open gap
//! (under the write lock: cheap), [`RepairJob::fetch`] asks the source (no lock held: a replay
//! or a dump may take as long as the network does), and [`Router::apply_repair`] applies what
//! came back (under the write lock again).
//!
//! ```text
//! apply_at(msg id > next) -- buffer it; no job out for the instance? queue a Gap job
//! take_repairs()          -- the queued jobs (one per instance at most)
//! job.fetch()             -- replay(next..=first_early-1); if gone or not that range: dump()
//! apply_repair(result)    -- replayed: apply those still next, then the early buffer
//!                            dumped: apply_dump (ignored when older than what was applied)
//!                            failed: counted; the gap waits for the next early message
//! ```
//!
//! Between take and apply the router keeps applying other messages: a result is checked
//! against where the stream stands when it comes back, never against where it stood when the
//! job was taken. Messages the router already applied are skipped, a stale dump is refused,
//! and an instance removed meanwhile ignores its result.

use std::ops::RangeInclusive;
use std::sync::Arc;

use kvtier_events::{Dump, EventMessage, InstanceId, ReplayError, ReplaySource};

use super::Router;

/// Rounds of [`Router::run_repairs`]: each round can only follow a repair that made progress,
/// so this bound is never reached by a well-behaved source.
const INLINE_REPAIR_ROUNDS: usize = 64;

/// Why a job was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RepairKind {
    /// Ids `from..=to` are missing before buffered early messages.
    Gap,
    /// Everything after `from - 1` (after a restart from a snapshot).
    CatchUp,
}

/// A gap (or catch-up) to fetch from an instance's [`ReplaySource`], taken from the router by
/// [`Router::take_repairs`]. Fetch it without holding the router's lock, then hand the result
/// to [`Router::apply_repair`]. Cloning it is cheap (the source is shared).
#[derive(Clone)]
pub struct RepairJob {
    instance: InstanceId,
    source: Arc<dyn ReplaySource>,
    from: u64,
    to: u64,
    kind: RepairKind,
}

impl std::fmt::Debug for RepairJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairJob")
            .field("instance", &self.instance)
            .field("range", &self.range())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What [`RepairJob::fetch`] got from the source.
enum Fetched {
    /// The messages `from..` in order (for a gap, exactly `from..=to`).
    Replayed(Vec<Arc<EventMessage>>),
    /// The range was gone (or the replay was not that range): the instance's whole state.
    Dumped(Dump),
    /// Neither could be had.
    Failed(ReplayError),
}

/// The answer to a [`RepairJob`], to apply with [`Router::apply_repair`].
pub struct RepairResult {
    instance: InstanceId,
    kind: RepairKind,
    fetched: Fetched,
}

impl std::fmt::Debug for RepairResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fetched = match &self.fetched {
            Fetched::Replayed(m) => format!("replayed {} messages", m.len()),
            Fetched::Dumped(d) => format!("dump at id {}", d.event_id),
            Fetched::Failed(e) => format!("failed: {e}"),
        };
        f.debug_struct("RepairResult")
            .field("instance", &self.instance)
            .field("kind", &self.kind)
            .field("fetched", &fetched)
            .finish()
    }
}

impl RepairResult {
    /// The instance repaired.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// Why the source could not repair, if it could not.
    pub fn error(&self) -> Option<&ReplayError> {
        match &self.fetched {
            Fetched::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl RepairJob {
    /// The instance whose stream is repaired.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The ids asked for (`from..=u64::MAX` for a catch-up: everything since `from`).
    pub fn range(&self) -> RangeInclusive<u64> {
        self.from..=self.to
    }

    /// Asks the source: a replay of the range, or, when the range is gone or the replay is
    /// not that range, a dump. Blocks for as long as the source takes; call it with no lock
    /// held (a blocking thread, or `spawn_blocking` in async code).
    pub fn fetch(self) -> RepairResult {
        let fetched = match self.source.replay(self.range()) {
            Ok(msgs) if self.covers(&msgs) => Fetched::Replayed(msgs),
            Ok(_) | Err(ReplayError::Gone { .. }) => match self.source.dump() {
                Ok(dump) if dump.instance == self.instance => Fetched::Dumped(dump),
                Ok(dump) => Fetched::Failed(ReplayError::Unavailable(format!(
                    "dump of instance {} asked for {}",
                    dump.instance, self.instance
                ))),
                Err(e) => Fetched::Failed(e),
            },
            Err(e) => Fetched::Failed(e),
        };
        RepairResult {
            instance: self.instance,
            kind: self.kind,
            fetched,
        }
    }

    /// A result saying the job could not be fetched, for a caller that cannot run it (no
    /// thread to run it on): applying it releases the instance for a later job.
    pub fn fail(self, error: ReplayError) -> RepairResult {
        RepairResult {
            instance: self.instance,
            kind: self.kind,
            fetched: Fetched::Failed(error),
        }
    }

    /// Whether a replay answers this job: consecutive ids from `from`, all of this instance,
    /// and for a gap exactly `from..=to`.
    fn covers(&self, msgs: &[Arc<EventMessage>]) -> bool {
        let consecutive = msgs
            .iter()
            .zip(self.from..)
            .all(|(m, want)| m.event_id == want && m.instance == self.instance);
        let complete = match self.kind {
            RepairKind::CatchUp => true,
            RepairKind::Gap => {
                msgs.len() as u64 == self.to.saturating_sub(self.from).saturating_add(1)
            }
        };
        consecutive && complete
    }
}

impl Router {
    /// The repairs the router needs (one job per instance with an open gap and a source, at
    /// most), to [`fetch`](RepairJob::fetch) without the router's lock and hand back with
    /// [`Router::apply_repair`]. [`Router::apply`] does all of this inline; a service that
    /// shares the router behind a lock calls [`Router::apply_at`], then this, and fetches
    /// elsewhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use kvtier_events::{InstanceId, Payload, Publisher};
    /// use kvtier_router::Router;
    /// use parking_lot::RwLock;
    ///
    /// let worker = Publisher::new(InstanceId(1));
    /// let mut sub = worker.subscribe();
    /// worker.publish(Payload::Heartbeat)?;
    /// worker.publish(Payload::Heartbeat)?;
    /// let router = Arc::new(RwLock::new(Router::builder().build()));
    /// router.write().attach_source(InstanceId(1), Arc::new(worker.clone()));
    ///
    /// let _lost = sub.try_recv()?;
    /// let jobs = {
    ///     let mut r = router.write();
    ///     r.apply_at(sub.try_recv()?, Instant::now()); // id 2: a gap before it
    ///     r.take_repairs()
    /// };
    /// for job in jobs {
    ///     let result = job.fetch(); // no lock held: may take as long as the source does
    ///     router.write().apply_repair(result);
    /// }
    /// assert_eq!(router.read().next_event_id(InstanceId(1)), Some(3));
    /// assert_eq!(router.read().stats().repaired_by_replay, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_repairs(&mut self) -> Vec<RepairJob> {
        std::mem::take(&mut self.repairs)
    }

    /// Applies a fetched repair: replayed messages the router still needs, or the dump; or
    /// counts the failure. May queue a further job (see [`Router::take_repairs`]) when the
    /// stream has a gap left.
    pub fn apply_repair(&mut self, result: RepairResult) {
        self.apply_repair_counted(result);
    }

    /// [`Router::apply_repair`], returning the messages applied (a dump counts one).
    fn apply_repair_counted(&mut self, result: RepairResult) -> usize {
        let Some(slot) = self.instances.slot_of(result.instance) else {
            return 0;
        };
        if let Some(state) = self.instances.get_mut(slot) {
            state.repairing = false;
        }
        match result.fetched {
            Fetched::Replayed(msgs) => {
                let mut applied = 0;
                for m in msgs {
                    let Some(state) = self.instances.get(slot) else {
                        break;
                    };
                    if m.event_id < state.next_id {
                        continue;
                    }
                    if m.event_id > state.next_id {
                        break;
                    }
                    self.apply_in_order(slot, &m);
                    applied += 1;
                }
                if result.kind == RepairKind::Gap && applied > 0 {
                    self.stats.repaired_by_replay += 1;
                }
                self.drain_early(slot);
                if applied > 0 {
                    self.queue_repair(slot);
                }
                applied
            }
            Fetched::Dumped(dump) => {
                if self.apply_dump(&dump) {
                    self.stats.repaired_by_dump += 1;
                    1
                } else {
                    0
                }
            }
            Fetched::Failed(_) => {
                self.stats.repairs_failed += 1;
                0
            }
        }
    }

    /// Queues a gap job for `slot` if it has a gap, a source, and no job out.
    pub(super) fn queue_repair(&mut self, slot: u32) {
        let Some(state) = self.instances.get_mut(slot) else {
            return;
        };
        let Some((&first_early, _)) = state.early.first_key_value() else {
            return;
        };
        if state.repairing || first_early <= state.next_id {
            return;
        }
        let Some(source) = self.sources.get(&state.id) else {
            return;
        };
        state.repairing = true;
        self.repairs.push(RepairJob {
            instance: state.id,
            source: source.clone(),
            from: state.next_id,
            to: first_early.saturating_sub(1),
            kind: RepairKind::Gap,
        });
    }

    /// Fetches and applies every queued job inline (single-threaded use); returns the
    /// messages applied.
    pub(super) fn run_repairs(&mut self) -> usize {
        let mut applied = 0;
        for _ in 0..INLINE_REPAIR_ROUNDS {
            let jobs = self.take_repairs();
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                applied += self.apply_repair_counted(job.fetch());
            }
        }
        applied
    }

    /// Queues, for every instance with a source, a job for what it published since the
    /// router last heard from it (after a warm restart from a snapshot); fetch them as with
    /// [`Router::take_repairs`]. [`Router::catch_up`] does it inline.
    pub fn queue_catch_up(&mut self) {
        let mut jobs = Vec::with_capacity(self.sources.len());
        for (&id, source) in &self.sources {
            let Some(state) = self
                .instances
                .slot_of(id)
                .and_then(|s| self.instances.get_mut(s))
            else {
                continue;
            };
            state.repairing = true;
            jobs.push(RepairJob {
                instance: id,
                source: source.clone(),
                from: state.next_id,
                to: u64::MAX,
                kind: RepairKind::CatchUp,
            });
        }
        // Gap jobs already queued are superseded: a catch-up replays everything after next.
        self.repairs
            .retain(|j| !self.sources.contains_key(&j.instance));
        self.repairs.extend(jobs);
    }

    /// Asks every instance with a source for what it published since the router last heard
    /// from it (after a warm restart from a snapshot), inline. Returns how many messages were
    /// applied (a dump counts one).
    pub fn catch_up(&mut self) -> usize {
        self.queue_catch_up();
        self.run_repairs()
    }
}
