//! The instances a router knows: their dense slots in the index, where each one's stream
//! stands, messages that arrived early, and retired ids.
//!
//! Invariants: an instance id maps to at most one live slot; a slot is reused only after its
//! instance was removed from the index; `next_id` is the id of the first message not yet
//! applied, and every buffered early message has an id above it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashMap;
use kvtier_events::{EmitPolicy, EventMessage, InstanceId};

use crate::index::PrefixIndex;

/// Where one instance's stream stands.
pub(crate) struct InstanceState {
    pub(crate) id: InstanceId,
    /// Id of the next message to apply.
    pub(crate) next_id: u64,
    /// Messages with ids above `next_id`, waiting for the gap before them to close.
    pub(crate) early: BTreeMap<u64, Arc<EventMessage>>,
    pub(crate) last_seen: Instant,
    pub(crate) policy: EmitPolicy,
    /// A repair job for this instance is out (taken or queued, not yet applied): no second
    /// one is queued meanwhile.
    pub(crate) repairing: bool,
    /// Restored from a snapshot and no message applied since (see the router's module docs).
    pub(crate) restored: bool,
}

/// Slots and states of the known instances, plus recently retired ids.
#[derive(Default)]
pub(crate) struct Instances {
    by_id: HashMap<InstanceId, u32>,
    slots: Vec<Option<InstanceState>>,
    free: Vec<u32>,
    /// Instances that shut down or expired, with the last id they used: late messages from
    /// them are ignored instead of resurrecting them. Bounded (oldest dropped first).
    retired: HashMap<InstanceId, u64>,
    retired_order: std::collections::VecDeque<InstanceId>,
}

/// How many retired ids are remembered.
const RETIRED_MEMORY: usize = 4096;

impl Instances {
    pub(crate) fn slot_of(&self, id: InstanceId) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&InstanceState> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut InstanceState> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The last id a retired instance used, if it is remembered as retired.
    pub(crate) fn retired_at(&self, id: InstanceId) -> Option<u64> {
        self.retired.get(&id).copied()
    }

    /// Adds an instance whose next expected message is `next_id`; `None` when all
    /// [`PrefixIndex::MAX_SLOTS`] slots are taken.
    pub(crate) fn add(&mut self, id: InstanceId, next_id: u64, now: Instant) -> Option<u32> {
        if let Some(slot) = self.slot_of(id) {
            return Some(slot);
        }
        if self.free.is_empty() && self.slots.len() >= PrefixIndex::MAX_SLOTS as usize {
            return None;
        }
        self.retired.remove(&id);
        let state = InstanceState {
            id,
            next_id,
            early: BTreeMap::new(),
            last_seen: now,
            policy: EmitPolicy::All,
            repairing: false,
            restored: false,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(state);
                s
            }
            None => {
                self.slots.push(Some(state));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(id, slot);
        Some(slot)
    }

    /// Forgets the instance in `slot` (the caller has removed its blocks from the index) and
    /// remembers it as retired at `last_id`.
    pub(crate) fn retire(&mut self, slot: u32, last_id: u64) -> Option<InstanceId> {
        let state = self.slots.get_mut(slot as usize)?.take()?;
        self.by_id.remove(&state.id);
        self.free.push(slot);
        if self.retired.insert(state.id, last_id).is_none() {
            self.retired_order.push_back(state.id);
            if self.retired_order.len() > RETIRED_MEMORY
                && let Some(old) = self.retired_order.pop_front()
            {
                self.retired.remove(&old);
            }
        }
        Some(state.id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &InstanceState)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
    }

    pub(crate) fn is_sparse(&self, slot: u32) -> bool {
        self.get(slot).is_some_and(|s| s.policy.is_sparse())
    }
}
