//! [`Router`]: the global prefix index fed by the event streams of many instances, kept exact
//! under lost, duplicated, reordered and replayed messages.
//!
//! Per instance the router tracks the id of the next message it must apply:
//!
//! ```text
//! id == 0 or u64::MAX -> refused and counted (RouterStats::bad_event_ids)
//! id <  next  -> duplicate or replay of something applied: counted, ignored
//! id == next  -> applied, then any buffered successors are applied in order
//! id >  next  -> buffered; a gap: a repair job (replay next..=id-1 from the instance's
//!                ReplaySource, or a dump when the range is gone) is queued; with no source,
//!                or while the job is out, the gap waits for the missing messages until the
//!                buffer is full, then is skipped
//! ```
//!
//! Repairs are fetched outside the router (see `repair.rs`): [`Router::apply_at`] only queues
//! them, [`Router::take_repairs`] hands them out, [`Router::apply_repair`] applies what came
//! back. [`Router::apply`] does all three inline for single-threaded callers.
//!
//! An instance restored from a snapshot resumes at the id after the last one the snapshot
//! holds: with a source, [`Router::catch_up`] (or the first gap) fetches what it published
//! meanwhile; without one, its first message after the restart is applied where the stream
//! is, as for a router that joins late. A converter that numbers an engine's events itself
//! starts at [`Router::next_event_id`], so nothing after a restart is taken for a duplicate.
//!
//! A `Shutdown` (or silence longer than the expiry) removes the instance and everything it
//! held; its id is remembered so late messages do not bring it back. A Remove of an unknown
//! hash is counted and ignored; a repeated Create changes nothing. Event-id arithmetic never
//! wraps: ids are checked to be below `u64::MAX` before anything adds one to them.
//!
//! The router is single-writer: [`Router::apply`] takes `&mut self`; queries take `&self` and a
//! per-caller [`QueryScratch`](crate::QueryScratch), so a service shares it behind a
//! read-write lock.

mod answer;
mod builder;
mod repair;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hashbrown::HashMap;
use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{Dump, EventKind, EventMessage, InstanceId, Payload, ReplaySource};

pub use answer::InstanceInfo;
pub use builder::{DEFAULT_MAX_EARLY, MAX_EXPECTED_BLOCKS, RouterBuilder, RouterStats};
pub use repair::{RepairJob, RepairResult};

use crate::index::PrefixIndex;
use crate::instances::Instances;

/// The global prefix index over many instances' event streams (see the module docs).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{Medium, SequenceHash};
/// use kvtier_events::{EventBatch, EventKind, InstanceId, Payload, Publisher};
/// use kvtier_router::{QueryScratch, Router};
///
/// let chain = [SequenceHash::root(1), SequenceHash::child_of(SequenceHash::root(1), 2)];
/// let worker = Publisher::new(InstanceId(9));
/// let mut sub = worker.subscribe();
/// worker.publish(Payload::Batch(EventBatch {
///     medium: Medium::Gpu,
///     kind: EventKind::Create,
///     hashes: chain.to_vec(),
///     policy: Default::default(),
/// }))?;
///
/// let mut router = Router::builder().build();
/// router.attach_source(InstanceId(9), Arc::new(worker.clone()));
/// router.apply(sub.try_recv()?);
/// let answer = router.query(&chain, &mut QueryScratch::default());
/// assert_eq!(answer.best, Some(InstanceId(9)));
/// assert_eq!(answer.overlaps[0].matched(Medium::Gpu), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Router {
    index: PrefixIndex,
    instances: Instances,
    sources: HashMap<InstanceId, Arc<dyn ReplaySource>>,
    /// Repair jobs queued for [`Router::take_repairs`] (one per instance at most).
    repairs: Vec<RepairJob>,
    stats: RouterStats,
    queries: AtomicU64,
    config: RouterBuilder,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A builder with the defaults.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// Where to repair gaps in `instance`'s stream (replay, then dump). The instance becomes
    /// known (a candidate for routing, holding nothing) if it was not already.
    pub fn attach_source(&mut self, instance: InstanceId, source: Arc<dyn ReplaySource>) {
        self.sources.insert(instance, source);
        if self.instances.slot_of(instance).is_none()
            && self.instances.add(instance, 1, Instant::now()).is_none()
        {
            self.stats.rejected += 1;
        }
    }

    /// Applies one message (see the module docs for duplicates, gaps and lifecycle), and
    /// repairs a gap it opens inline: the instance's [`ReplaySource`] is called from here.
    /// A router shared behind a lock uses [`Router::apply_at`] and [`Router::take_repairs`]
    /// instead, so that no source is called while the lock is held.
    pub fn apply(&mut self, msg: impl Into<Arc<EventMessage>>) {
        self.apply_at(msg.into(), Instant::now());
        self.run_repairs();
    }

    /// Applies one message received at `now` (for expiry), without calling any source: a gap
    /// it opens queues a job for [`Router::take_repairs`].
    pub fn apply_at(&mut self, msg: Arc<EventMessage>, now: Instant) {
        self.stats.messages += 1;
        if !valid_event_id(msg.event_id) {
            self.stats.bad_event_ids += 1;
            return;
        }
        let id = msg.instance;
        let slot = match self.instances.slot_of(id) {
            Some(slot) => slot,
            None => {
                let retired = self.instances.retired_at(id);
                if retired.is_some_and(|last| msg.event_id <= last)
                    || matches!(msg.payload, Payload::Shutdown)
                {
                    self.stats.stale += 1;
                    return;
                }
                // A router that joins late has nothing to repair from without a source:
                // it starts where the stream is.
                let start = if self.sources.contains_key(&id) {
                    1
                } else {
                    if msg.event_id > 1 {
                        self.stats.gaps_detected += 1;
                        self.stats.gaps_skipped += 1;
                    }
                    msg.event_id
                };
                let Some(slot) = self.instances.add(id, start, now) else {
                    self.stats.rejected += 1;
                    return;
                };
                slot
            }
        };
        let Some(state) = self.instances.get_mut(slot) else {
            return;
        };
        state.last_seen = now;
        if state.restored && msg.event_id >= state.next_id {
            state.restored = false;
            if msg.event_id > state.next_id && !self.sources.contains_key(&id) {
                // Restored from a snapshot, with nothing to replay from: what was published
                // while the router was down is gone, and the router joins the stream where it
                // is now (as a router that joins late does) instead of waiting for a full
                // buffer.
                self.stats.gaps_detected += 1;
                self.stats.gaps_skipped += 1;
                state.next_id = msg.event_id;
            }
        }
        let next = state.next_id;
        if msg.event_id < next {
            self.stats.duplicates += 1;
            return;
        }
        if msg.event_id > next {
            if state.early.is_empty() {
                self.stats.gaps_detected += 1;
            }
            if state.early.insert(msg.event_id, msg).is_some() {
                self.stats.duplicates += 1;
            }
            let full = state.early.len() >= self.config.max_early;
            if full {
                self.skip_gap(slot);
            } else {
                self.queue_repair(slot);
            }
            return;
        }
        self.apply_in_order(slot, &msg);
        self.drain_early(slot);
    }

    /// Applies buffered messages that have become next.
    fn drain_early(&mut self, slot: u32) {
        loop {
            let Some(state) = self.instances.get_mut(slot) else {
                return;
            };
            let next = state.next_id;
            let Some(entry) = state.early.first_entry() else {
                return;
            };
            let id = *entry.key();
            if id > next {
                return;
            }
            let msg = entry.remove();
            if id == next {
                self.apply_in_order(slot, &msg);
            }
        }
    }

    /// Gives up on the gap before the first early message of `slot` (the buffer is full):
    /// continues at that message. The index may be stale for the instance until it next
    /// clears or dumps; a repair still out for the gap finds its messages already passed.
    fn skip_gap(&mut self, slot: u32) {
        let Some(state) = self.instances.get_mut(slot) else {
            return;
        };
        let Some((&first_early, _)) = state.early.first_key_value() else {
            return;
        };
        self.stats.gaps_skipped += 1;
        state.next_id = first_early;
        self.drain_early(slot);
    }

    fn apply_in_order(&mut self, slot: u32, msg: &EventMessage) {
        let Some(state) = self.instances.get_mut(slot) else {
            return;
        };
        // `apply_at` refused `u64::MAX`, so this never saturates.
        state.next_id = msg.event_id.saturating_add(1);
        match &msg.payload {
            Payload::Batch(b) => {
                state.policy = b.policy;
                match b.kind {
                    EventKind::Create => {
                        // Slots come from `Instances`, which keeps them below the limit.
                        let _ = self.index.insert(slot, b.medium, &b.hashes);
                        self.stats.creates += b.hashes.len() as u64;
                    }
                    EventKind::Remove => {
                        let out = self.index.remove(slot, b.medium, &b.hashes);
                        self.stats.removes += out.removed as u64;
                        self.stats.unknown_removes += out.unknown as u64;
                    }
                }
            }
            Payload::Cleared { medium } => {
                self.index.remove_instance(slot, *medium);
            }
            Payload::Heartbeat => {}
            Payload::Shutdown => {
                self.index.remove_instance(slot, None);
                self.instances.retire(slot, msg.event_id);
                self.sources.remove(&msg.instance);
                self.stats.shutdowns += 1;
            }
        }
    }

    /// Replaces what the router knows of the dump's instance with the dump (see [`Dump`]).
    /// Returns `false` (and counts it stale) when the router has already applied messages
    /// after the dump's id.
    pub fn apply_dump(&mut self, dump: &Dump) -> bool {
        if dump.event_id == u64::MAX {
            self.stats.bad_event_ids += 1;
            return false;
        }
        let slot = match self.instances.slot_of(dump.instance) {
            Some(s) => s,
            None => {
                if dump.shut_down
                    || self
                        .instances
                        .retired_at(dump.instance)
                        .is_some_and(|last| dump.event_id <= last)
                {
                    self.stats.stale += 1;
                    return false;
                }
                let Some(slot) = self.instances.add(dump.instance, 1, Instant::now()) else {
                    self.stats.rejected += 1;
                    return false;
                };
                slot
            }
        };
        let Some(state) = self.instances.get_mut(slot) else {
            return false;
        };
        let after = dump.event_id.saturating_add(1);
        if after < state.next_id {
            self.stats.stale += 1;
            return false;
        }
        state.next_id = after;
        state.policy = dump.policy;
        state.early.retain(|&id, _| id > dump.event_id);
        self.index.remove_instance(slot, None);
        if dump.shut_down {
            self.instances.retire(slot, dump.event_id);
            self.sources.remove(&dump.instance);
            self.stats.shutdowns += 1;
            return true;
        }
        for b in &dump.blocks {
            let _ = self.index.insert(slot, b.medium, &b.hashes);
        }
        self.drain_early(slot);
        true
    }

    /// Forgets `instance` and everything it holds. Returns whether it was known.
    pub fn remove_instance(&mut self, instance: InstanceId) -> bool {
        let Some(slot) = self.instances.slot_of(instance) else {
            return false;
        };
        let last = self
            .instances
            .get(slot)
            .map_or(0, |s| s.next_id.saturating_sub(1));
        self.index.remove_instance(slot, None);
        self.instances.retire(slot, last);
        self.sources.remove(&instance);
        true
    }

    /// Forgets instances silent for longer than the configured expiry; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<InstanceId> {
        let Some(expiry) = self.config.expiry else {
            return Vec::new();
        };
        let silent: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_seen) > expiry)
            .map(|(_, s)| s.id)
            .collect();
        for &id in &silent {
            self.remove_instance(id);
            self.stats.expired += 1;
        }
        silent
    }

    pub(crate) fn index(&self) -> &PrefixIndex {
        &self.index
    }

    pub(crate) fn instances_table(&self) -> &Instances {
        &self.instances
    }

    /// Restores one instance from a snapshot: its blocks and the next id it expects.
    pub(crate) fn restore_instance(
        &mut self,
        id: InstanceId,
        next_id: u64,
        policy: kvtier_events::EmitPolicy,
        blocks: &[(Medium, Vec<SequenceHash>)],
    ) {
        let Some(slot) = self.instances.add(id, next_id, Instant::now()) else {
            self.stats.rejected += 1;
            return;
        };
        if let Some(s) = self.instances.get_mut(slot) {
            s.next_id = next_id;
            s.policy = policy;
            s.restored = true;
        }
        for (medium, hashes) in blocks {
            let _ = self.index.insert(slot, *medium, hashes);
        }
    }
}

/// Whether `id` can be an event id: 0 is never sent (streams start at 1) and `u64::MAX` would
/// leave no id for the next message.
fn valid_event_id(id: u64) -> bool {
    id != 0 && id != u64::MAX
}
