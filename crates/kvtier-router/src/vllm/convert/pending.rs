//! [`Pending`]: stores whose parent the converter does not know yet, waiting for it.
//!
//! After a clear, a late join, an unrepairable gap or a restart without state, an engine keeps
//! storing children of blocks the converter never saw (vLLM keeps a hot system prompt cached
//! for hours). Such a store is kept here, keyed by its parent's fingerprint, and placed as soon
//! as the parent becomes known: a later store of it by the same engine, or a mapping learnt from
//! another rank of the same source. It owns no hashing; the converter replays the kept events.
//!
//! # Invariants
//!
//! - At most `max_blocks` blocks wait in all; when a new store would exceed it, the oldest
//!   stores are dropped first (and counted: their blocks are unplaceable).
//! - A store is held once: it leaves by being taken (placed) or dropped.
//! - A block removed by the engine while it waits is marked, and placed as not held (its
//!   mapping is kept for its children, no copy is counted or announced).

use std::collections::VecDeque;

use hashbrown::HashMap;
use kvtier_core::Medium;

use super::map::FpBuild;
use crate::vllm::decode::ExtraKey;

/// One kept `BlockStored` event, reduced to what placing it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingStore {
    /// Fingerprints of its blocks, parent first.
    pub(crate) blocks: Vec<u64>,
    /// Their tokens.
    pub(crate) tokens: Vec<u32>,
    /// Tokens per block (already defaulted).
    pub(crate) block_size: usize,
    /// The event's `lora_name`.
    pub(crate) lora_name: Option<String>,
    /// The event's `lora_id`.
    pub(crate) lora_id: Option<i64>,
    /// Per-block extra keys.
    pub(crate) extra_keys: Option<Vec<Option<Vec<ExtraKey>>>>,
    /// Where the blocks are.
    pub(crate) medium: Medium,
    /// Per block, whether the engine removed it while it waited (empty: none was).
    pub(crate) removed: Vec<bool>,
}

/// Stores waiting for their parent, by the parent's fingerprint.
#[derive(Debug)]
pub(crate) struct Pending {
    by_parent: HashMap<u64, Vec<(u64, PendingStore)>, FpBuild>,
    /// Block fingerprint → `(parent, store id)` of the newest waiting store that holds it.
    index: HashMap<u64, (u64, u64), FpBuild>,
    /// `(parent, store id, blocks)`, oldest first; entries of stores taken already are stale.
    order: VecDeque<(u64, u64, usize)>,
    next_id: u64,
    /// Stores waiting.
    stores: usize,
    blocks: usize,
    max_blocks: usize,
}

impl Pending {
    /// Empty, holding at most `max_blocks` blocks.
    pub(crate) fn new(max_blocks: usize) -> Self {
        Self {
            by_parent: HashMap::with_hasher(FpBuild),
            index: HashMap::with_hasher(FpBuild),
            order: VecDeque::new(),
            next_id: 0,
            stores: 0,
            blocks: 0,
            max_blocks,
        }
    }

    /// Blocks waiting.
    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// The parents waited for.
    pub(crate) fn parents(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_parent.keys().copied()
    }

    /// Keeps `store` until `parent` is known; returns how many blocks were dropped to make
    /// room (the new store's own, if it alone exceeds the bound).
    pub(crate) fn push(&mut self, parent: u64, store: PendingStore) -> usize {
        let n = store.blocks.len();
        if n > self.max_blocks {
            return n;
        }
        let mut dropped = 0;
        while self.blocks + n > self.max_blocks {
            let Some((old_parent, id, _)) = self.order.pop_front() else {
                break;
            };
            dropped += self.remove(old_parent, id);
        }
        if self.order.len() > 64 + 2 * self.stores {
            // Stale entries piled up behind a long-waiting store: compact.
            let by_parent = &self.by_parent;
            self.order.retain(|(parent, id, _)| {
                by_parent
                    .get(parent)
                    .is_some_and(|stores| stores.iter().any(|(i, _)| i == id))
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        for &fp in &store.blocks {
            self.index.insert(fp, (parent, id));
        }
        self.by_parent.entry(parent).or_default().push((id, store));
        self.order.push_back((parent, id, n));
        self.stores += 1;
        self.blocks += n;
        dropped
    }

    /// Takes every store waiting for `parent`, oldest first.
    pub(crate) fn take(&mut self, parent: u64) -> Vec<PendingStore> {
        let Some(stores) = self.by_parent.remove(&parent) else {
            return Vec::new();
        };
        for (id, store) in &stores {
            unindex(&mut self.index, store, parent, *id);
        }
        let stores: Vec<PendingStore> = stores.into_iter().map(|(_, s)| s).collect();
        self.blocks -= stores.iter().map(|s| s.blocks.len()).sum::<usize>();
        self.stores -= stores.len();
        // Their `order` entries are stale now; drop them while they are at the front.
        self.drop_stale_front();
        stores
    }

    /// Forgets everything; returns how many blocks were waiting.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.blocks;
        self.by_parent.clear();
        self.index.clear();
        self.order.clear();
        self.stores = 0;
        self.blocks = 0;
        n
    }

    /// Removes store `id` of `parent` if it still waits; returns its block count.
    fn remove(&mut self, parent: u64, id: u64) -> usize {
        let Some(stores) = self.by_parent.get_mut(&parent) else {
            return 0;
        };
        let Some(at) = stores.iter().position(|(i, _)| *i == id) else {
            return 0;
        };
        let (_, store) = stores.remove(at);
        if stores.is_empty() {
            self.by_parent.remove(&parent);
        }
        unindex(&mut self.index, &store, parent, id);
        self.stores -= 1;
        self.blocks -= store.blocks.len();
        store.blocks.len()
    }

    /// Marks block `fp` as removed if it waits (and was not marked already); returns whether
    /// it was.
    pub(crate) fn mark_removed(&mut self, fp: u64) -> bool {
        let Some(&(parent, id)) = self.index.get(&fp) else {
            return false;
        };
        let Some((_, store)) = self
            .by_parent
            .get_mut(&parent)
            .and_then(|stores| stores.iter_mut().find(|(i, _)| *i == id))
        else {
            return false;
        };
        let Some(at) = store.blocks.iter().position(|b| *b == fp) else {
            return false;
        };
        if store.removed.is_empty() {
            store.removed = vec![false; store.blocks.len()];
        }
        !std::mem::replace(&mut store.removed[at], true)
    }

    fn drop_stale_front(&mut self) {
        while let Some(&(parent, id, _)) = self.order.front() {
            let live = self
                .by_parent
                .get(&parent)
                .is_some_and(|stores| stores.iter().any(|(i, _)| *i == id));
            if live {
                break;
            }
            self.order.pop_front();
        }
        if self.by_parent.is_empty() {
            self.order.clear();
        }
    }
}

/// Forgets the index entries that point at store `id` of `parent`.
fn unindex(
    index: &mut HashMap<u64, (u64, u64), FpBuild>,
    store: &PendingStore,
    parent: u64,
    id: u64,
) {
    for fp in &store.blocks {
        if index.get(fp) == Some(&(parent, id)) {
            index.remove(fp);
        }
    }
}
