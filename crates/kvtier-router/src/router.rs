//! [`Router`]: the global prefix index fed by the event streams of many instances, kept exact
//! under lost, duplicated, reordered and replayed messages.
//!
//! Per instance the router tracks the id of the next message it must apply:
//!
//! ```text
//! id <  next  -> duplicate or replay of something applied: counted, ignored
//! id == next  -> applied, then any buffered successors are applied in order
//! id >  next  -> buffered; a gap: replay next..=id-1 from the instance's ReplaySource,
//!                or, when the range is gone, apply a dump; with no source the gap waits
//!                for the missing messages until the buffer is full, then is skipped
//! ```
//!
//! A `Shutdown` (or silence longer than the expiry) removes the instance and everything it
//! held; its id is remembered so late messages do not bring it back. A Remove of an unknown
//! hash is counted and ignored; a repeated Create changes nothing.
//!
//! The router is single-writer: [`Router::apply`] takes `&mut self`; queries take `&self` and a
//! per-caller [`QueryScratch`], so a service shares it behind a read-write lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use kvtier_core::{BlockHasher, ExtraKeys, HashError, HashScheme, Medium, SequenceHash};
use kvtier_events::{
    Dump, EventKind, EventMessage, InstanceId, Payload, ReplayError, ReplaySource,
};

use crate::index::{PrefixIndex, QueryScratch};
use crate::instances::Instances;
use crate::query::{InstanceOverlap, LoadSignal, MediumOverlap, NoLoad, RouteAnswer};

/// Default number of early messages buffered per instance while a gap is open.
pub const DEFAULT_MAX_EARLY: usize = 4096;

/// Counters and gauges of a router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Messages received (including duplicates).
    pub messages: u64,
    /// Block creations applied (hashes in Create batches, repeats included).
    pub creates: u64,
    /// Block removals applied (hashes in Remove batches).
    pub removes: u64,
    /// Removes of hashes the instance was not known to hold (ignored).
    pub unknown_removes: u64,
    /// Messages already applied (duplicates and overlapping replays; ignored).
    pub duplicates: u64,
    /// Messages from retired instances, and stale dumps (ignored).
    pub stale: u64,
    /// Messages and dumps of new instances refused because every slot was taken.
    pub rejected: u64,
    /// Gaps in an instance's event ids detected.
    pub gaps_detected: u64,
    /// Gaps closed by replay.
    pub repaired_by_replay: u64,
    /// Gaps closed by a dump.
    pub repaired_by_dump: u64,
    /// Gaps skipped with nothing to repair them from (the index may be stale for that instance
    /// until it next clears or dumps).
    pub gaps_skipped: u64,
    /// Instances that shut down.
    pub shutdowns: u64,
    /// Instances that expired after silence.
    pub expired: u64,
    /// Queries answered.
    pub queries: u64,
    /// Instances known now.
    pub instances: u64,
    /// Distinct hashes in the index now.
    pub blocks: u64,
    /// (hash, instance, medium) entries in the index now.
    pub entries: u64,
}

/// Builds a [`Router`].
pub struct RouterBuilder {
    max_early: usize,
    expiry: Option<Duration>,
    weights: [f64; 4],
    load: Arc<dyn LoadSignal>,
    load_weight: f64,
    scheme: HashScheme,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        Self {
            max_early: DEFAULT_MAX_EARLY,
            expiry: None,
            weights: [1.0, 0.75, 0.5, 0.25],
            load: Arc::new(NoLoad),
            load_weight: 0.0,
            scheme: HashScheme::default(),
        }
    }
}

impl RouterBuilder {
    /// Early messages buffered per instance while a gap is open (at least 1). Default:
    /// [`DEFAULT_MAX_EARLY`].
    pub fn with_max_early(mut self, n: usize) -> Self {
        self.max_early = n.max(1);
        self
    }

    /// Instances silent for longer than this are forgotten by [`Router::expire`]. Default:
    /// never.
    pub fn with_expiry(mut self, expiry: Option<Duration>) -> Self {
        self.expiry = expiry;
        self
    }

    /// How much one block held on each medium (GPU, CPU, DISK, EXTERNAL, in
    /// [`Medium::ALL`] order) is worth when choosing the best instance. Default
    /// `[1.0, 0.75, 0.5, 0.25]`: a block in accelerator memory saves the most.
    pub fn with_medium_weights(mut self, weights: [f64; 4]) -> Self {
        self.weights = weights;
        self
    }

    /// The load signal that breaks ties between instances with equal overlap. Default:
    /// [`NoLoad`] (ties go to the lowest instance id).
    pub fn with_load_signal(mut self, load: Arc<dyn LoadSignal>) -> Self {
        self.load = load;
        self
    }

    /// How much load counts against overlap: an instance's score is its weighted overlap
    /// minus `weight * load`. With 0 (the default) the best instance is the one with the
    /// largest overlap and load only breaks ties; with load measured in blocks of active work
    /// and weight 1, the choice minimises "blocks to prefill + blocks already queued", which
    /// keeps a popular shared prefix from sending every request to one instance.
    pub fn with_load_weight(mut self, weight: f64) -> Self {
        self.load_weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// The hash scheme the instances use (for queries given as tokens). Default:
    /// [`HashScheme::default`].
    pub fn with_hash_scheme(mut self, scheme: HashScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Builds an empty router.
    pub fn build(self) -> Router {
        Router {
            index: PrefixIndex::new(),
            instances: Instances::default(),
            sources: HashMap::new(),
            stats: RouterStats::default(),
            queries: AtomicU64::new(0),
            config: self,
        }
    }
}

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

    /// Applies one message (see the module docs for duplicates, gaps and lifecycle).
    pub fn apply(&mut self, msg: impl Into<Arc<EventMessage>>) {
        self.apply_at(msg.into(), Instant::now());
    }

    /// [`Router::apply`] with the receive time given (for expiry).
    pub fn apply_at(&mut self, msg: Arc<EventMessage>, now: Instant) {
        self.stats.messages += 1;
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
        let state = self.instances.get_mut(slot).expect("slot just looked up");
        state.last_seen = now;
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
            self.repair(slot);
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
            match state.early.first_key_value() {
                Some((&id, _)) if id < next => {
                    state.early.pop_first();
                }
                Some((&id, _)) if id == next => {
                    let (_, msg) = state.early.pop_first().expect("checked non-empty");
                    self.apply_in_order(slot, &msg);
                }
                _ => return,
            }
        }
    }

    /// Closes the gap before the first early message of `slot`: replay, else dump, else wait
    /// (or skip when the buffer is full and there is no source).
    fn repair(&mut self, slot: u32) {
        let Some(state) = self.instances.get(slot) else {
            return;
        };
        let Some((&first_early, _)) = state.early.first_key_value() else {
            return;
        };
        let (id, from) = (state.id, state.next_id);
        let early_len = state.early.len();
        if let Some(source) = self.sources.get(&id).cloned() {
            match source.replay(from..=first_early - 1) {
                Ok(msgs)
                    if msgs.len() as u64 == first_early - from
                        && msgs
                            .iter()
                            .zip(from..)
                            .all(|(m, want)| m.event_id == want && m.instance == id) =>
                {
                    self.stats.repaired_by_replay += 1;
                    for m in msgs {
                        self.apply_in_order(slot, &m);
                        if self.instances.get(slot).is_none() {
                            return;
                        }
                    }
                    self.drain_early(slot);
                    return;
                }
                Ok(_) | Err(ReplayError::Gone { .. }) => {
                    if let Ok(dump) = source.dump()
                        && dump.instance == id
                        && self.apply_dump(&dump)
                    {
                        self.stats.repaired_by_dump += 1;
                        return;
                    }
                }
                Err(_) => {}
            }
        }
        if early_len >= self.config.max_early {
            self.stats.gaps_skipped += 1;
            if let Some(state) = self.instances.get_mut(slot) {
                state.next_id = first_early;
            }
            self.drain_early(slot);
        }
    }

    fn apply_in_order(&mut self, slot: u32, msg: &EventMessage) {
        let Some(state) = self.instances.get_mut(slot) else {
            return;
        };
        state.next_id = msg.event_id + 1;
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
        let state = self.instances.get_mut(slot).expect("slot just looked up");
        if dump.event_id + 1 < state.next_id {
            self.stats.stale += 1;
            return false;
        }
        state.next_id = dump.event_id + 1;
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
        let last = self.instances.get(slot).map_or(0, |s| s.next_id - 1);
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

    /// Asks every instance with a source for what it published since the router last heard
    /// from it (after a warm restart from a snapshot). Returns how many messages were applied.
    pub fn catch_up(&mut self) -> usize {
        let known: Vec<(InstanceId, Arc<dyn ReplaySource>)> = self
            .sources
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut applied = 0;
        for (id, source) in known {
            let next = self
                .instances
                .slot_of(id)
                .and_then(|s| self.instances.get(s))
                .map_or(1, |s| s.next_id);
            match source.replay(next..=u64::MAX) {
                Ok(msgs) => {
                    for m in msgs {
                        applied += 1;
                        self.apply(m);
                    }
                }
                Err(ReplayError::Gone { .. }) => {
                    if let Ok(dump) = source.dump() {
                        if self.apply_dump(&dump) {
                            self.stats.repaired_by_dump += 1;
                        }
                        applied += 1;
                    }
                }
                Err(_) => {}
            }
        }
        applied
    }

    /// The hash scheme queries given as tokens are hashed with.
    pub fn hash_scheme(&self) -> HashScheme {
        self.config.scheme
    }

    /// The sequence hashes of `tokens` under the router's hash scheme (only full blocks).
    ///
    /// # Errors
    ///
    /// [`HashError`] for an invalid block size or extra keys.
    pub fn hashes_for(
        &self,
        tokens: &[u32],
        block_size: usize,
        extra: ExtraKeys,
    ) -> Result<Vec<SequenceHash>, HashError> {
        Ok(BlockHasher::new(block_size, self.config.scheme, extra)?.sequence_hashes(tokens))
    }

    /// For a request's sequence hashes: every instance holding a prefix of it, per medium,
    /// and the best instance.
    ///
    /// The best instance has the highest score: its weighted overlap (each medium's `matched`
    /// times its weight, the maximum over media) minus the load weight times its load (see
    /// [`RouterBuilder::with_load_weight`]; 0 by default); ties go to the lower load, then the
    /// lower id. When no instance holds anything, the least loaded known instance is best.
    pub fn query(&self, hashes: &[SequenceHash], scratch: &mut QueryScratch) -> RouteAnswer {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let instances = &self.instances;
        let found = self
            .index
            .query(hashes, |slot| instances.is_sparse(slot), scratch);
        let mut overlaps: Vec<InstanceOverlap> = Vec::new();
        for o in found {
            let Some(state) = instances.get(o.slot) else {
                continue;
            };
            if overlaps.last().is_none_or(|l| l.instance != state.id) {
                overlaps.push(InstanceOverlap::new(state.id, state.policy));
            }
            let last = overlaps.last_mut().expect("just pushed");
            last.media[o.medium.index()] = MediumOverlap {
                matched: o.matched,
                upper: o.upper,
            };
        }
        let load = &*self.config.load;
        let lw = self.config.load_weight;
        for o in &mut overlaps {
            o.load = load.load(o.instance);
            o.score = Medium::ALL
                .iter()
                .map(|m| self.config.weights[m.index()] * o.media[m.index()].matched as f64)
                .fold(0.0, f64::max)
                - lw * o.load;
        }
        // Instances holding nothing compete on load alone: score 0 - weight * load. They
        // matter only when load counts, or when nobody holds anything.
        let mut best: Option<(f64, f64, InstanceId)> = overlaps
            .iter()
            .map(|o| (o.score, o.load, o.instance))
            .max_by(cmp_candidates);
        if best.is_none() || lw > 0.0 {
            for (_, s) in instances.iter() {
                let l = load.load(s.id);
                let cand = (-lw * l, l, s.id);
                if best.is_none_or(|b| cmp_candidates(&cand, &b).is_gt()) {
                    best = Some(cand);
                }
            }
        }
        let best = best.map(|b| b.2);
        RouteAnswer {
            blocks: hashes.len(),
            overlaps,
            best,
        }
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            queries: self.queries.load(Ordering::Relaxed),
            instances: self.instances.len() as u64,
            blocks: self.index.len() as u64,
            entries: self.index.entries() as u64,
            ..self.stats
        }
    }

    /// The known instances with the next event id each expects and its blocks per medium.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let mut out: Vec<InstanceInfo> = self
            .instances
            .iter()
            .map(|(slot, s)| InstanceInfo {
                instance: s.id,
                next_event_id: s.next_id,
                blocks: self.index.blocks_of(slot),
                buffered: s.early.len(),
                sparse: s.policy.is_sparse(),
            })
            .collect();
        out.sort_by_key(|i| i.instance);
        out
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
        }
        for (medium, hashes) in blocks {
            let _ = self.index.insert(slot, *medium, hashes);
        }
    }
}

/// Orders (score, load, id) candidates: higher score, then lower load, then lower id wins.
fn cmp_candidates(a: &(f64, f64, InstanceId), b: &(f64, f64, InstanceId)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0)
        .then(b.1.total_cmp(&a.1))
        .then(b.2.cmp(&a.2))
}

/// One known instance (see [`Router::instances`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The instance.
    pub instance: InstanceId,
    /// The id of the next message the router will apply from it.
    pub next_event_id: u64,
    /// Blocks held per medium, in [`Medium::ALL`] order.
    pub blocks: [usize; 4],
    /// Early messages waiting for a gap to close.
    pub buffered: usize,
    /// Whether it announces only power-of-two positions.
    pub sparse: bool,
}
