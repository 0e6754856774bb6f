//! [`VllmConverter`]: turns one engine instance's decoded events into kvtier [`EventMessage`]s.
//!
//! vLLM and SGLang publish their own block hashes, which a kvtier router cannot compute from a
//! request's tokens. The converter re-hashes every stored block with kvtier's [`BlockHasher`]
//! (the configured [`HashScheme`], the event's block size, and [`ExtraKeys`] made of the
//! configured model name plus the event's LoRA), chaining onto the kvtier hash of the block's
//! parent, so the router's index answers token queries with ordinary
//! [`BlockHasher::sequence_hashes`]. It keeps the map that makes this possible:
//!
//! ```text
//! external hash ──▶ (kvtier SequenceHash, media bitmask)     one map per instance
//!
//! BlockStored{hashes, parent, tokens}:
//!     parent None            → chain from the root (block index 0)
//!     parent known           → chain from its kvtier hash (block index = its position + 1)
//!     parent unknown         → every block is `unplaceable` (events were lost): skipped
//!     block i = extend_chain(prev, hash_block(index + i, tokens[i*bs .. (i+1)*bs]))
//!     → Create { medium, hashes by position ascending }
//! BlockRemoved{hashes}       → Remove { mapped hashes by position descending }; unknown counted
//! AllBlocksCleared           → Cleared { medium: None }; the map is emptied
//! ```
//!
//! # Invariants
//!
//! - Event ids of one converter are 1, 2, 3, ... with no hole, whatever happens (gaps, resets).
//! - A map entry exists exactly while the block is on at least one medium the converter was
//!   told about; a medium's `BlockRemoved` clears only that medium's bit.
//! - An external hash always maps to the same kvtier hash while its entry lives (the kvtier
//!   hash is a pure function of the tokens of the block's whole prefix).
//!
//! # Limitations
//!
//! Per-block `extra_keys` (multimodal identifiers, `cache_salt`) are not folded into the kvtier
//! hash: such blocks are indexed as if they held text only. That can only mislead routing (the
//! engine recomputes what it lacks), never corrupt data.

use hashbrown::HashMap;
use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};

use super::decode::{ExternalHash, VllmBatch, VllmEvent};

/// The most `(block size, LoRA)` hashers kept; the cache is emptied when full.
const MAX_HASHERS: usize = 256;

/// Which KV-cache groups of hybrid models (vLLM `group_idx`) the converter indexes.
///
/// Hybrid models publish one event stream per group, with the same block hashes; a
/// sliding-window group evicts early blocks long before the full-attention group does, so
/// indexing every group would remove prefixes that are still reusable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VllmGroupFilter {
    /// Events without a group, and groups whose `kv_cache_spec_kind` is `full_attention` or
    /// `mla_attention` (the default). A group that never announced its kind counts as
    /// full attention only if it is group 0.
    #[default]
    FullAttention,
    /// Only this group (events without a group are kept too).
    Index(i64),
    /// Every event, whatever its group.
    All,
}

/// How a [`VllmConverter`] hashes blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VllmConvertConfig {
    /// The scheme of the kvtier hashes (default [`HashScheme::Kvtier`]); queries must use the
    /// same.
    pub scheme: HashScheme,
    /// Block size used when an event says 0 (default 16).
    pub default_block_size: usize,
    /// Model name bound into every hash through [`ExtraKeys::with_model`] (default none).
    pub model: Option<String>,
    /// Which groups of hybrid models are indexed (default [`VllmGroupFilter::FullAttention`]).
    pub groups: VllmGroupFilter,
}

impl Default for VllmConvertConfig {
    fn default() -> Self {
        Self {
            scheme: HashScheme::Kvtier,
            default_block_size: 16,
            model: None,
            groups: VllmGroupFilter::FullAttention,
        }
    }
}

impl VllmConvertConfig {
    /// Sets the hash scheme (default [`HashScheme::Kvtier`]).
    pub fn with_scheme(mut self, scheme: HashScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets the block size used when an event says 0 (default 16).
    pub fn with_default_block_size(mut self, block_size: usize) -> Self {
        self.default_block_size = block_size;
        self
    }

    /// Sets the model name bound into every hash (default none).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the group filter (default [`VllmGroupFilter::FullAttention`]).
    pub fn with_groups(mut self, groups: VllmGroupFilter) -> Self {
        self.groups = groups;
        self
    }

    /// The [`ExtraKeys`] of blocks stored under `lora` (the LoRA adapter name, if any).
    ///
    /// A query for such blocks hashes its tokens with these keys.
    pub fn extra_keys(&self, lora: Option<&str>) -> ExtraKeys {
        let mut keys = ExtraKeys::new();
        if let Some(model) = &self.model {
            keys = keys.with_model(model.clone());
        }
        if let Some(lora) = lora {
            keys = keys.with_lora(lora);
        }
        keys
    }
}

/// Counters of one converter (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VllmConvertStats {
    /// Blocks mapped and announced as created.
    pub stored_blocks: u64,
    /// Blocks announced as removed.
    pub removed_blocks: u64,
    /// Stored blocks skipped: unknown parent, missing tokens, or an unusable block size.
    pub unplaceable_blocks: u64,
    /// Removed hashes that were not mapped on that medium.
    pub unknown_removes: u64,
    /// Stored blocks that were already mapped on the same medium (announced again).
    pub duplicate_stores: u64,
    /// Events dropped by the group filter.
    pub filtered_events: u64,
    /// `Cleared` messages emitted (engine resets and unrepairable gaps).
    pub clears: u64,
}

impl VllmConvertStats {
    /// Adds `other` to `self`, field by field.
    pub fn accumulate(&mut self, other: &VllmConvertStats) {
        self.stored_blocks += other.stored_blocks;
        self.removed_blocks += other.removed_blocks;
        self.unplaceable_blocks += other.unplaceable_blocks;
        self.unknown_removes += other.unknown_removes;
        self.duplicate_stores += other.duplicate_stores;
        self.filtered_events += other.filtered_events;
        self.clears += other.clears;
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: SequenceHash,
    /// Bit `Medium::index()` set while the block is on that medium.
    media: u8,
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
    map: HashMap<ExternalHash, Entry>,
    /// Hashers by `(block size, LoRA name)`; `None` when that pair cannot make a hasher.
    hashers: HashMap<(usize, Option<String>), Option<BlockHasher>>,
    /// What the group filter decided for each group seen on a store.
    groups: HashMap<i64, bool>,
    stats: VllmConvertStats,
}

impl VllmConverter {
    /// A converter for `instance`; its first message will have event id 1.
    pub fn new(instance: InstanceId, config: VllmConvertConfig) -> Self {
        Self {
            instance,
            config,
            next_event_id: 1,
            map: HashMap::new(),
            hashers: HashMap::new(),
            groups: HashMap::new(),
            stats: VllmConvertStats::default(),
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

    /// The counters so far.
    pub fn stats(&self) -> VllmConvertStats {
        self.stats
    }

    /// How many external hashes are mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no external hash is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The kvtier hash an external hash is mapped to, if it is.
    pub fn lookup(&self, external: &ExternalHash) -> Option<SequenceHash> {
        self.map.get(external).map(|e| e.hash)
    }

    /// Converts every event of `batch`, in order, appending the messages to `out`.
    pub fn apply_batch(&mut self, batch: &VllmBatch, out: &mut Vec<EventMessage>) {
        for event in &batch.events {
            self.apply_event(event, out);
        }
    }

    /// Converts one event, appending zero or one message to `out`.
    pub fn apply_event(&mut self, event: &VllmEvent, out: &mut Vec<EventMessage>) {
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
                ..
            } => {
                if !self.accept_store(*group_idx, cache_kind.as_deref()) {
                    self.stats.filtered_events += 1;
                    return;
                }
                // vLLM keys LoRA blocks by name; engines that only send the numeric id get a
                // stable stand-in name (documented on `VllmSourceBuilder`).
                let lora = match (lora_name, lora_id) {
                    (Some(name), _) => Some(name.clone()),
                    (None, Some(id)) => Some(format!("lora-id:{id}")),
                    (None, None) => None,
                };
                let medium = medium.unwrap_or(Medium::Gpu);
                self.store(
                    block_hashes,
                    parent.as_ref(),
                    token_ids,
                    *block_size,
                    lora,
                    medium,
                    out,
                );
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
            VllmEvent::Skipped { .. } => {}
        }
    }

    /// Forgets every mapped block and emits `Cleared { medium: None }`.
    ///
    /// Used for `AllBlocksCleared`, and by the source when events were lost for good (the
    /// router must then drop what it believed the instance held).
    pub fn clear(&mut self, out: &mut Vec<EventMessage>) {
        self.map.clear();
        self.stats.clears += 1;
        self.emit(Payload::Cleared { medium: None }, out);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one BlockStored event"
    )]
    fn store(
        &mut self,
        block_hashes: &[ExternalHash],
        parent: Option<&ExternalHash>,
        token_ids: &[u32],
        block_size: usize,
        lora: Option<String>,
        medium: Medium,
        out: &mut Vec<EventMessage>,
    ) {
        let n = block_hashes.len() as u64;
        let parent = match parent {
            None => None,
            Some(p) => match self.map.get(p) {
                Some(entry) => Some(entry.hash),
                None => {
                    self.stats.unplaceable_blocks += n;
                    return;
                }
            },
        };
        let block_size = if block_size == 0 {
            self.config.default_block_size
        } else {
            block_size
        };
        let Some(hasher) = self.hasher(block_size, lora) else {
            self.stats.unplaceable_blocks += n;
            return;
        };
        let first_index = parent.map_or(0, |p| p.position() as usize + 1);
        let bit = 1u8 << medium.index();
        let mut prev = parent;
        let mut created = Vec::with_capacity(block_hashes.len());
        for (i, external) in block_hashes.iter().enumerate() {
            let block = i
                .checked_mul(block_size)
                .and_then(|start| token_ids.get(start..start.checked_add(block_size)?));
            let Some(Ok(block_hash)) = block.map(|t| hasher.hash_block(first_index + i, t)) else {
                // Missing tokens: this block and its descendants cannot be placed.
                self.stats.unplaceable_blocks += (block_hashes.len() - i) as u64;
                break;
            };
            let hash = hasher.extend_chain(prev, block_hash);
            let entry = self
                .map
                .entry(external.clone())
                .or_insert(Entry { hash, media: 0 });
            if entry.hash == hash && entry.media & bit != 0 {
                self.stats.duplicate_stores += 1;
            }
            if entry.hash != hash {
                // Same external hash, other content: the engine's hash collided or it reused
                // the hash for another prefix. The newest store wins.
                entry.hash = hash;
                entry.media = 0;
            }
            entry.media |= bit;
            created.push(hash);
            prev = Some(hash);
        }
        if created.is_empty() {
            return;
        }
        self.stats.stored_blocks += created.len() as u64;
        self.emit(
            Payload::Batch(EventBatch {
                medium,
                kind: EventKind::Create,
                hashes: created,
                policy: EmitPolicy::All,
            }),
            out,
        );
    }

    fn remove(
        &mut self,
        block_hashes: &[ExternalHash],
        medium: Medium,
        out: &mut Vec<EventMessage>,
    ) {
        let bit = 1u8 << medium.index();
        let mut removed = Vec::with_capacity(block_hashes.len());
        for external in block_hashes {
            match self.map.get_mut(external) {
                Some(entry) if entry.media & bit != 0 => {
                    entry.media &= !bit;
                    removed.push(entry.hash);
                    if entry.media == 0 {
                        self.map.remove(external);
                    }
                }
                _ => self.stats.unknown_removes += 1,
            }
        }
        if removed.is_empty() {
            return;
        }
        // Children before parents; equal positions keep the engine's order.
        removed.sort_by_key(|h| std::cmp::Reverse(h.position()));
        self.stats.removed_blocks += removed.len() as u64;
        self.emit(
            Payload::Batch(EventBatch {
                medium,
                kind: EventKind::Remove,
                hashes: removed,
                policy: EmitPolicy::All,
            }),
            out,
        );
    }

    fn hasher(&mut self, block_size: usize, lora: Option<String>) -> Option<BlockHasher> {
        // A stream that cycles through endless LoRA names must not grow the cache forever.
        if self.hashers.len() >= MAX_HASHERS
            && !self.hashers.contains_key(&(block_size, lora.clone()))
        {
            self.hashers.clear();
        }
        let config = &self.config;
        self.hashers
            .entry((block_size, lora))
            .or_insert_with_key(|(bs, lora)| {
                BlockHasher::new(*bs, config.scheme, config.extra_keys(lora.as_deref())).ok()
            })
            .clone()
    }

    fn accept_store(&mut self, group: Option<i64>, kind: Option<&str>) -> bool {
        let Some(group) = group else { return true };
        let accept = match self.config.groups {
            VllmGroupFilter::All => true,
            VllmGroupFilter::Index(only) => group == only,
            VllmGroupFilter::FullAttention => match kind {
                Some(kind) => ["full_attention", "mla_attention"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(kind)),
                None => group == 0,
            },
        };
        self.groups.insert(group, accept);
        accept
    }

    fn accept_remove(&self, group: Option<i64>) -> bool {
        let Some(group) = group else { return true };
        match self.config.groups {
            VllmGroupFilter::All => true,
            VllmGroupFilter::Index(only) => group == only,
            // Removes carry no kind: use what the group's stores said.
            VllmGroupFilter::FullAttention => {
                self.groups.get(&group).copied().unwrap_or(group == 0)
            }
        }
    }

    fn emit(&mut self, payload: Payload, out: &mut Vec<EventMessage>) {
        out.push(EventMessage {
            instance: self.instance,
            event_id: self.next_event_id,
            payload,
        });
        self.next_event_id += 1;
    }
}

#[cfg(test)]
mod tests;
