//! [`VllmConverter`]: turns one engine instance's decoded events into kvtier [`EventMessage`]s.
//!
//! vLLM and SGLang publish their own block hashes, which a kvtier router cannot compute from a
//! request's tokens. The converter re-hashes every stored block with kvtier's [`BlockHasher`]
//! (the configured [`kvtier_core::HashScheme`], the event's block size, and
//! [`kvtier_core::ExtraKeys`] made of the configured model name plus the event's LoRA), folds
//! in the block's other vLLM extra keys
//! (multimodal items, `cache_salt`; see `keys.rs` and [`crate::vllm_request_hashes`]), and
//! chains onto the kvtier hash of the block's parent, so the router's index answers token
//! queries with ordinary [`BlockHasher::sequence_hashes`].
//!
//! # What vLLM sends (vLLM `distributed/kv_events.py`, `v1/core/block_pool.py`)
//!
//! - `BlockStored{block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//!   lora_name, extra_keys, group_idx, kv_cache_spec_kind}`: the block pool emits one when a
//!   request's newly computed full blocks enter the prefix cache, as a chain (parent first).
//!   vLLM does not deduplicate: two requests that compute the same prefix at once cache two
//!   physical copies under one hash, each announced.
//! - `BlockRemoved{block_hashes, medium, group_idx}`: one per physical copy evicted, so a hash
//!   stored twice is removed twice.
//! - `AllBlocksCleared`: the prefix cache was reset.
//! - The offloading connector announces the copies it writes to another medium (`CPU`) as
//!   `BlockStored` with empty `token_ids` and no parent, and their eviction as `BlockRemoved`
//!   on that medium.
//!
//! # What the converter keeps and does
//!
//! ```text
//! fingerprint(external) ──▶ (kvtier hash, parent fingerprint, copies per medium)   (map.rs)
//! parent fingerprint    ──▶ stores waiting for that parent                        (pending.rs)
//!
//! BlockStored, tokens:   parent None → root; parent known (held, ghost or learnt from another
//!                        rank) → chain from it, and every ancestor this engine is not marked
//!                        as holding on that medium is held again (a running request holds its
//!                        whole prefix); parent unknown → kept pending until it is known
//!                        block i = fold(hash_block(index + i, tokens_i), extra_keys_i)
//!                        copies[medium] += 1 → Create on 0 → 1 only
//! BlockStored, no tokens: every block whose hash is known gets a copy on that medium
//!                        (offloaded copies); an unknown one is unplaceable
//! BlockRemoved           copies[medium] -= 1 → Remove on 1 → 0 only (children first)
//! AllBlocksCleared       Cleared { medium: None }; entries become ghosts, pending dropped
//! Skipped{reason}        counted per reason
//! ```
//!
//! Consecutive events of a batch that give the same kind of message on the same medium
//! become one message (order preserved).
//!
//! # Invariants
//!
//! - Event ids of one converter are contiguous (1, 2, 3, ... unless started elsewhere), with
//!   no hole whatever happens.
//! - A hash is announced created on a medium exactly when its copy count there goes 0 → 1,
//!   and removed exactly when it goes 1 → 0.
//! - An external hash maps to one kvtier hash while its entry lives (the kvtier hash is a
//!   pure function of the tokens and keys of the block's whole prefix); a store that maps it
//!   to another one replaces it, and the old hash is announced removed first.
//! - Ghosts (entries without copies) and pending stores are bounded
//!   ([`VllmConvertConfig::with_max_ghosts`], [`VllmConvertConfig::with_max_pending_blocks`]).
//!
//! # Limitations
//!
//! - Prompt-embedding keys are folded like any key, but no query can produce them.
//! - A restart of the engine that goes unseen (the router was down and the new engine's
//!   sequence already passed the old one's) looks like a gap, not a reset.

use std::borrow::Cow;

use hashbrown::HashMap;
use kvtier_core::{BlockHasher, Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};

use super::decode::{ExternalHash, ExtraKey, SkipReason, VllmBatch, VllmEvent};
use super::keys::{LoraKey, fold, foldable};
use map::{BlockMap, Entry, fingerprint};
use pending::{Pending, PendingStore};

mod config;
mod counters;
mod filter;
mod map;
mod pending;
mod saved;

pub use config::{VllmConvertConfig, VllmGroupFilter, VllmMmKeys};
pub use counters::VllmConvertStats;

pub(crate) use map::Entry as MapEntry;
pub(crate) use saved::ConverterState;

/// The most `(block size, LoRA)` hashers kept; the cache is emptied when full.
const MAX_HASHERS: usize = 64;
/// The longest ancestor chain walked to re-establish or import a prefix.
const MAX_WALK: usize = 1 << 16;

/// The fingerprints of an event's blocks and parent, when the batch computed them already.
#[derive(Clone, Copy, Default)]
struct Fingerprints<'a> {
    /// One per block of the event, or empty when not known.
    blocks: &'a [u64],
    /// The parent's, when known.
    parent: Option<u64>,
}

/// A chain of blocks to place: one `BlockStored` event, or a pending one.
struct Chain<'a> {
    /// Fingerprints of the blocks, parent first.
    blocks: &'a [u64],
    tokens: &'a [u32],
    /// Tokens per block, already defaulted.
    block_size: usize,
    lora: LoraKey<'a>,
    extra_keys: Option<&'a [Option<Vec<ExtraKey>>]>,
    medium: Medium,
    /// Per block, whether the engine removed it while the chain waited (empty: none).
    removed: &'a [bool],
}

/// Converts the events of one engine instance (one data-parallel rank) into kvtier messages.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, Medium};
/// use kvtier_events::{EventKind, InstanceId, Payload};
/// use kvtier_router::{ExternalHash, VllmConvertConfig, VllmConverter, VllmEvent};
///
/// let config = VllmConvertConfig::default().with_model("llama");
/// let mut conv = VllmConverter::new(InstanceId(1), config.clone());
/// let tokens: Vec<u32> = (0..8).collect();
/// let mut out = Vec::new();
/// conv.apply_event(
///     &VllmEvent::BlockStored {
///         block_hashes: vec![ExternalHash::Int(10), ExternalHash::Int(11)],
///         parent: None,
///         token_ids: tokens.clone(),
///         block_size: 4,
///         lora_id: None,
///         lora_name: None,
///         medium: None,
///         group_idx: None,
///         cache_kind: None,
///         extra_keys: None,
///     },
///     &mut out,
/// );
/// let Payload::Batch(batch) = &out[0].payload else { unreachable!() };
/// assert_eq!((out[0].event_id, batch.kind, batch.medium), (1, EventKind::Create, Medium::Gpu));
///
/// // The router finds the blocks by hashing a request's tokens the same way.
/// let hasher = BlockHasher::new(4, config.scheme, config.extra_keys(None))?;
/// assert_eq!(batch.hashes, hasher.sequence_hashes(&tokens));
/// # Ok::<(), kvtier_core::HashError>(())
/// ```
#[derive(Debug)]
pub struct VllmConverter {
    instance: InstanceId,
    config: VllmConvertConfig,
    next_event_id: u64,
    map: BlockMap,
    pending: Pending,
    /// Hashers by `(block size, LoRA name)`; `None` when that pair cannot make a hasher.
    hashers: Vec<(usize, Option<String>, Option<BlockHasher>)>,
    /// What the group filter decided for each group seen on a store.
    groups: HashMap<i64, bool>,
    stats: VllmConvertStats,
    /// Index in the output vector where the current call started: messages from there on
    /// may be extended (coalescing).
    run_start: usize,
    /// Blocks the current batch names: the capacity a new message starts with, so that
    /// coalescing a batch's events into it does not grow it step by step.
    batch_blocks: usize,
    /// The fingerprints of every block the current batch names, in order (see `prefetch`).
    batch_fps: Vec<u64>,
    /// Reused buffers.
    fps: Vec<u64>,
    hashes: Vec<SequenceHash>,
    walk: Vec<u64>,
    fold_scratch: Vec<u8>,
    /// Fingerprints learnt while stores wait: their waiting children are placed next.
    learnt: Vec<u64>,
}

impl VllmConverter {
    /// A converter for `instance`; its first message will have event id 1.
    pub fn new(instance: InstanceId, config: VllmConvertConfig) -> Self {
        Self {
            instance,
            map: BlockMap::new(config.max_ghosts, config.map_capacity()),
            pending: Pending::new(config.max_pending_blocks),
            config,
            next_event_id: 1,
            hashers: Vec::new(),
            groups: HashMap::new(),
            stats: VllmConvertStats::default(),
            run_start: 0,
            batch_blocks: 0,
            batch_fps: Vec::new(),
            fps: Vec::new(),
            hashes: Vec::new(),
            walk: Vec::new(),
            fold_scratch: Vec::new(),
            learnt: Vec::new(),
        }
    }

    /// The instance the messages are attributed to.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The event id the next message will carry.
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id
    }

    /// Makes the next message carry event id `id` (for example the router's next expected id
    /// for this instance after a restart). Ids 0 and `u64::MAX` are ignored.
    pub fn set_next_event_id(&mut self, id: u64) {
        if id != 0 && id != u64::MAX {
            self.next_event_id = id;
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> VllmConvertStats {
        let mut stats = self.stats;
        stats.pending_blocks = self.pending.blocks() as u64;
        stats
    }

    /// How many blocks are held on at least one medium.
    pub fn len(&self) -> usize {
        self.map.held()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.map.held() == 0
    }

    /// The kvtier hash of a block held on at least one medium.
    pub fn lookup(&self, external: &ExternalHash) -> Option<SequenceHash> {
        self.map
            .get(fingerprint(external))
            .filter(|e| !e.is_ghost())
            .map(Entry::hash)
    }

    /// How many copies of a block the engine holds on `medium` (saturating at `u16::MAX`).
    pub fn copies(&self, external: &ExternalHash, medium: Medium) -> u16 {
        self.map
            .get(fingerprint(external))
            .map_or(0, |e| e.copies_on(medium))
    }

    /// Blocks waiting for an unknown parent.
    pub fn pending_blocks(&self) -> usize {
        self.pending.blocks()
    }

    /// Entries in the map (held blocks and remembered ghosts).
    pub fn map_entries(&self) -> usize {
        self.map.len()
    }

    /// Bytes the map's tables occupy (buckets, control bytes, ghost queue); pending stores
    /// and hashers are not counted.
    pub fn map_bytes(&self) -> usize {
        self.map.table_bytes()
    }

    /// Converts every event of `batch`, in order, appending the messages to `out`.
    /// Consecutive events that give the same kind of message on the same medium share one
    /// message.
    pub fn apply_batch(&mut self, batch: &VllmBatch, out: &mut Vec<EventMessage>) {
        self.apply_batch_with_peers(batch, &[], out);
    }

    /// Like [`VllmConverter::apply_batch`], also recognising parents and offloaded blocks from
    /// the mappings of `peers` (other ranks of the same source).
    pub(crate) fn apply_batch_with_peers(
        &mut self,
        batch: &VllmBatch,
        peers: &[&VllmConverter],
        out: &mut Vec<EventMessage>,
    ) {
        self.run_start = out.len();
        self.prefetch(batch);
        let fps = std::mem::take(&mut self.batch_fps);
        let mut at = 0;
        // The last block of the previous event, if it was a store, and its fingerprint.
        let mut last: Option<(&ExternalHash, u64)> = None;
        for event in &batch.events {
            let known = match event {
                VllmEvent::BlockStored {
                    block_hashes,
                    parent,
                    ..
                } => {
                    let blocks = fps.get(at..at + block_hashes.len()).unwrap_or_default();
                    at += block_hashes.len();
                    // A decode step's parent is the previous step's block.
                    let parent = match (parent, last) {
                        (Some(p), Some((q, fp))) if p == q => Some(fp),
                        _ => None,
                    };
                    last = block_hashes.last().zip(blocks.last().copied());
                    Fingerprints { blocks, parent }
                }
                VllmEvent::BlockRemoved { block_hashes, .. } => {
                    at += block_hashes.len();
                    last = None;
                    Fingerprints::default()
                }
                _ => {
                    last = None;
                    Fingerprints::default()
                }
            };
            self.event(event, known, peers, out);
        }
        self.batch_fps = fps;
        self.batch_blocks = 0;
    }

    /// Brings the map slots of every block `batch` names into the cache before its events
    /// are applied, so that their cache misses overlap.
    fn prefetch(&mut self, batch: &VllmBatch) {
        let mut fps = std::mem::take(&mut self.batch_fps);
        fps.clear();
        for event in &batch.events {
            if let VllmEvent::BlockStored { block_hashes, .. }
            | VllmEvent::BlockRemoved { block_hashes, .. } = event
            {
                fps.extend(block_hashes.iter().map(fingerprint));
            }
        }
        self.map.prefetch(&fps);
        self.batch_blocks = fps.len();
        self.batch_fps = fps;
    }

    /// Converts one event, appending zero or more messages to `out` (one, unless a block
    /// replaced another hash or waiting stores were placed on another medium).
    pub fn apply_event(&mut self, event: &VllmEvent, out: &mut Vec<EventMessage>) {
        self.run_start = out.len();
        self.event(event, Fingerprints::default(), &[], out);
    }

    /// Places the stores that wait for parents `peer` knows.
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn resolve_from_peer(&mut self, peer: &VllmConverter, out: &mut Vec<EventMessage>) {
        if self.pending.is_empty() {
            return;
        }
        self.run_start = out.len();
        let mut parents = std::mem::take(&mut self.walk);
        parents.clear();
        parents.extend(self.pending.parents());
        for &fp in &parents {
            if self.map.get(fp).is_none() && self.import(fp, peer).is_some() {
                self.learnt.push(fp);
            }
        }
        parents.clear();
        self.walk = parents;
        self.place_learnt(&[peer], out);
    }

    fn event(
        &mut self,
        event: &VllmEvent,
        known: Fingerprints<'_>,
        peers: &[&VllmConverter],
        out: &mut Vec<EventMessage>,
    ) {
        match event {
            VllmEvent::BlockStored {
                block_hashes,
                parent,
                token_ids,
                block_size,
                lora_id,
                lora_name,
                medium,
                group_idx,
                cache_kind,
                extra_keys,
            } => {
                if !self.accept_store(*group_idx, cache_kind.as_deref()) {
                    self.stats.filtered_events += 1;
                    return;
                }
                let medium = medium.unwrap_or(Medium::Gpu);
                let mut fps = std::mem::take(&mut self.fps);
                fps.clear();
                if known.blocks.len() == block_hashes.len() {
                    fps.extend_from_slice(known.blocks);
                } else {
                    fps.extend(block_hashes.iter().map(fingerprint));
                }
                if token_ids.is_empty() {
                    self.store_copies(&fps, medium, peers, out);
                    self.place_learnt(peers, out);
                } else {
                    let chain = Chain {
                        blocks: &fps,
                        tokens: token_ids,
                        block_size: self.block_size(*block_size),
                        lora: LoraKey {
                            name: lora_name.as_deref(),
                            id: *lora_id,
                        },
                        extra_keys: extra_keys.as_deref(),
                        medium,
                        removed: &[],
                    };
                    let parent = known.parent.or_else(|| parent.as_ref().map(fingerprint));
                    self.store(&chain, parent, peers, out);
                    self.place_learnt(peers, out);
                }
                self.fps = fps;
            }
            VllmEvent::BlockRemoved {
                block_hashes,
                medium,
                group_idx,
            } => {
                if !self.accept_remove(*group_idx) {
                    self.stats.filtered_events += 1;
                    return;
                }
                self.remove(block_hashes, medium.unwrap_or(Medium::Gpu), out);
            }
            VllmEvent::AllBlocksCleared => self.clear(out),
            VllmEvent::Skipped { reason } => match reason {
                SkipReason::UnknownTag => self.stats.skipped_unknown_tag += 1,
                SkipReason::UnknownMedium => self.stats.skipped_unknown_medium += 1,
                _ => self.stats.skipped_malformed += 1,
            },
        }
    }

    /// Forgets which blocks the engine holds and emits `Cleared { medium: None }`.
    ///
    /// Used for `AllBlocksCleared` and engine restarts. The mappings are kept as ghosts (up
    /// to the bound), so that the engine's next stores under them are placed; stores waiting
    /// for a parent are dropped (counted as unplaceable).
    pub fn clear(&mut self, out: &mut Vec<EventMessage>) {
        self.map.clear_copies();
        let dropped = self.pending.clear() as u64;
        self.stats.unplaceable_blocks += dropped;
        self.stats.pending_dropped += dropped;
        self.stats.clears += 1;
        self.emit(Payload::Cleared { medium: None }, out);
    }

    fn block_size(&self, block_size: usize) -> usize {
        if block_size == 0 {
            self.config.default_block_size
        } else {
            block_size
        }
    }

    /// Places one chain under `parent` (`None`: a root), or keeps it pending.
    fn store(
        &mut self,
        chain: &Chain<'_>,
        parent: Option<u64>,
        peers: &[&VllmConverter],
        out: &mut Vec<EventMessage>,
    ) {
        let n = chain.blocks.len();
        let held = parent
            .and_then(|fp| self.map.get(fp))
            .filter(|entry| entry.copies_on(chain.medium) > 0)
            .map(Entry::hash);
        let prev = match parent {
            None => None,
            // Held on this medium already: nothing to re-establish.
            Some(_) if held.is_some() => held,
            Some(fp) => match self.known(fp, peers) {
                Some(hash) => {
                    self.reestablish(fp, chain.medium, out);
                    Some(hash)
                }
                None => {
                    self.keep_pending(chain, fp);
                    return;
                }
            },
        };
        let lora_name: Option<Cow<'_, str>> = match (chain.lora.name, chain.lora.id) {
            (Some(name), _) => Some(Cow::Borrowed(name)),
            (None, Some(id)) => Some(Cow::Owned(format!("lora-id:{id}"))),
            (None, None) => None,
        };
        let Some(at) = self.hasher(chain.block_size, lora_name.as_deref()) else {
            self.stats.unplaceable_blocks += n as u64;
            return;
        };
        // Borrowed from the cache, which is put back below (nothing in between uses it).
        let hashers = std::mem::take(&mut self.hashers);
        let Some((_, _, Some(hasher))) = hashers.get(at) else {
            self.hashers = hashers;
            return;
        };
        let first_index = prev.map_or(0, |p: SequenceHash| p.position() as usize + 1);
        let mut prev = prev;
        let mut parent_fp = parent.unwrap_or(0);
        let bs = chain.block_size;
        let medium = chain.medium;
        // Hashes created by this chain, announced together.
        let mut created = std::mem::take(&mut self.hashes);
        created.clear();
        for (i, &fp) in chain.blocks.iter().enumerate() {
            let tokens = i
                .checked_mul(bs)
                .and_then(|start| chain.tokens.get(start..start.checked_add(bs)?));
            let Some(Ok(block_hash)) = tokens.map(|t| hasher.hash_block(first_index + i, t)) else {
                // Missing tokens: this block and its descendants cannot be placed.
                self.stats.unplaceable_blocks += (n - i) as u64;
                break;
            };
            let keys = chain
                .extra_keys
                .and_then(|all| all.get(i))
                .and_then(Option::as_deref)
                .map_or(&[][..], |keys| foldable(keys, chain.lora));
            let block_hash = fold(block_hash, keys, &mut self.fold_scratch);
            let hash = hasher.extend_chain(prev, block_hash);
            let stored = if chain.removed.get(i) == Some(&true) {
                // Stored and removed while it waited: keep the mapping for its children only.
                let replaced = self.map.upsert(fp, hash, parent_fp);
                self.map.note_ghost(fp);
                map::Stored {
                    replaced,
                    first: false,
                }
            } else {
                let stored = self.map.store_copy(fp, hash, parent_fp, medium);
                if !stored.first {
                    self.stats.duplicate_stores += 1;
                }
                stored
            };
            if let Some((old, copies)) = stored.replaced {
                // Announce what came before, then the old hash's removal, in order.
                self.push_hashes(EventKind::Create, medium, &created, out);
                created.clear();
                self.stats.conflicting_stores += 1;
                for m in Medium::ALL {
                    if copies[m.index()] > 0 {
                        self.stats.removed_blocks += 1;
                        self.push_hashes(EventKind::Remove, m, &[old], out);
                    }
                }
            }
            if stored.first {
                self.stats.stored_blocks += 1;
                created.push(hash);
            }
            if !self.pending.is_empty() {
                self.learnt.push(fp);
            }
            prev = Some(hash);
            parent_fp = fp;
        }
        if !created.is_empty() {
            self.push_hashes(EventKind::Create, medium, &created, out);
        }
        created.clear();
        self.hashes = created;
        self.hashers = hashers;
    }

    /// One more copy of a mapped block on `medium`; announced if it is the first there.
    fn add_copy(
        &mut self,
        fp: u64,
        hash: SequenceHash,
        medium: Medium,
        out: &mut Vec<EventMessage>,
    ) {
        match self.map.add_copy(fp, medium) {
            Some(true) => {
                self.stats.stored_blocks += 1;
                self.push_hashes(EventKind::Create, medium, &[hash], out);
            }
            Some(false) => self.stats.duplicate_stores += 1,
            None => {}
        }
    }

    /// Copies of known blocks on `medium` (a store without tokens: offloaded copies).
    fn store_copies(
        &mut self,
        fps: &[u64],
        medium: Medium,
        peers: &[&VllmConverter],
        out: &mut Vec<EventMessage>,
    ) {
        for &fp in fps {
            match self.known(fp, peers) {
                Some(hash) => {
                    self.add_copy(fp, hash, medium, out);
                    if !self.pending.is_empty() {
                        self.learnt.push(fp);
                    }
                }
                None => self.stats.unplaceable_blocks += 1,
            }
        }
    }

    /// The kvtier hash of `fp`: from this map (ghosts included) or imported from a peer.
    fn known(&mut self, fp: u64, peers: &[&VllmConverter]) -> Option<SequenceHash> {
        if let Some(entry) = self.map.get(fp) {
            return Some(entry.hash());
        }
        peers.iter().find_map(|peer| self.import(fp, peer))
    }

    /// Copies `fp`'s mapping and its ancestors' from `peer` as ghosts (up to the first
    /// ancestor known here).
    fn import(&mut self, fp: u64, peer: &VllmConverter) -> Option<SequenceHash> {
        let first = peer.map.get(fp)?;
        let hash = first.hash();
        let mut at = fp;
        let mut entry = *first;
        for _ in 0..MAX_WALK {
            self.map.upsert(at, entry.hash(), entry.parent);
            self.map.note_ghost(at);
            self.stats.learnt_from_peers += 1;
            let parent = entry.parent;
            if parent == 0 || self.map.get(parent).is_some() {
                break;
            }
            match peer.map.get(parent) {
                Some(p) if p.hash().position() < entry.hash().position() => {
                    at = parent;
                    entry = *p;
                }
                _ => break,
            }
        }
        Some(hash)
    }

    /// Marks `fp` and its ancestors as held on `medium` (up to the first that is), announcing
    /// them root first: a stored block's request holds its whole prefix.
    fn reestablish(&mut self, fp: u64, medium: Medium, out: &mut Vec<EventMessage>) {
        let mut walk = std::mem::take(&mut self.walk);
        walk.clear();
        let mut at = fp;
        let mut position = u32::MAX;
        while let Some(entry) = self.map.get(at) {
            let entry_position = entry.hash().position();
            if entry.copies_on(medium) > 0 || entry_position >= position || walk.len() >= MAX_WALK {
                break;
            }
            walk.push(at);
            position = entry_position;
            if entry.parent == 0 {
                break;
            }
            at = entry.parent;
        }
        for &fp in walk.iter().rev() {
            if let Some(entry) = self.map.get(fp) {
                let hash = entry.hash();
                self.stats.reestablished_blocks += 1;
                self.add_copy(fp, hash, medium, out);
            }
        }
        walk.clear();
        self.walk = walk;
    }

    /// Keeps `chain` until `parent` is known.
    fn keep_pending(&mut self, chain: &Chain<'_>, parent: u64) {
        let store = PendingStore {
            blocks: chain.blocks.to_vec(),
            tokens: chain.tokens.to_vec(),
            block_size: chain.block_size,
            lora_name: chain.lora.name.map(str::to_owned),
            lora_id: chain.lora.id,
            extra_keys: chain.extra_keys.map(<[_]>::to_vec),
            medium: chain.medium,
            removed: chain.removed.to_vec(),
        };
        let dropped = self.pending.push(parent, store) as u64;
        self.stats.unplaceable_blocks += dropped;
        self.stats.pending_dropped += dropped;
    }

    /// Places the stores waiting for the fingerprints learnt so far, and for those their
    /// placement teaches, until none is left.
    fn place_learnt(&mut self, peers: &[&VllmConverter], out: &mut Vec<EventMessage>) {
        while let Some(fp) = self.learnt.pop() {
            if self.pending.is_empty() {
                self.learnt.clear();
                break;
            }
            for store in self.pending.take(fp) {
                self.stats.placed_late += store.blocks.len() as u64;
                let chain = Chain {
                    blocks: &store.blocks,
                    tokens: &store.tokens,
                    block_size: store.block_size,
                    lora: LoraKey {
                        name: store.lora_name.as_deref(),
                        id: store.lora_id,
                    },
                    extra_keys: store.extra_keys.as_deref(),
                    medium: store.medium,
                    removed: &store.removed,
                };
                self.store(&chain, Some(fp), peers, out);
            }
        }
    }

    fn remove(
        &mut self,
        block_hashes: &[ExternalHash],
        medium: Medium,
        out: &mut Vec<EventMessage>,
    ) {
        let mut removed = std::mem::take(&mut self.hashes);
        removed.clear();
        for external in block_hashes {
            match self.map.drop_copy(fingerprint(external), medium) {
                Some((hash, true)) => removed.push(hash),
                Some((_, false)) => self.stats.released_copies += 1,
                None if self.pending.mark_removed(fingerprint(external)) => {
                    self.stats.pending_removes += 1;
                }
                None => self.stats.unknown_removes += 1,
            }
        }
        if !removed.is_empty() {
            // Children before parents; equal positions keep the engine's order.
            removed.sort_by_key(|h| std::cmp::Reverse(h.position()));
            self.stats.removed_blocks += removed.len() as u64;
            self.push_hashes(EventKind::Remove, medium, &removed, out);
        }
        removed.clear();
        self.hashes = removed;
    }

    /// Appends `hashes` to the last message of this call if it is a batch of the same kind on
    /// the same medium, or to a new message.
    fn push_hashes(
        &mut self,
        kind: EventKind,
        medium: Medium,
        hashes: &[SequenceHash],
        out: &mut Vec<EventMessage>,
    ) {
        if hashes.is_empty() {
            return;
        }
        if out.len() > self.run_start
            && let Some(last) = out.last_mut()
            && last.instance == self.instance
            && let Payload::Batch(batch) = &mut last.payload
            && batch.kind == kind
            && batch.medium == medium
        {
            batch.hashes.extend_from_slice(hashes);
            return;
        }
        self.emit(
            Payload::Batch(EventBatch {
                medium,
                kind,
                hashes: {
                    let mut all = Vec::with_capacity(hashes.len().max(self.batch_blocks));
                    all.extend_from_slice(hashes);
                    all
                },
                policy: EmitPolicy::All,
            }),
            out,
        );
    }

    fn emit(&mut self, payload: Payload, out: &mut Vec<EventMessage>) {
        out.push(EventMessage {
            instance: self.instance,
            event_id: self.next_event_id,
            payload,
        });
        self.next_event_id = self.next_event_id.saturating_add(1);
    }
}

#[cfg(test)]
mod tests;
