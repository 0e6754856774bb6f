//! [`VllmConvertConfig`]: how a [`super::VllmConverter`] hashes blocks and what it remembers,
//! with the group filter of hybrid models ([`VllmGroupFilter`]) and the multimodal key style
//! ([`VllmMmKeys`]). Plain data; no hashing here.

use kvtier_core::{ExtraKeys, HashScheme};

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

/// How a [`crate::VllmConverter`] hashes blocks.
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
    /// How the engine writes multimodal items in a block's extra keys (default
    /// [`VllmMmKeys::WithOffset`]); only [`crate::vllm_request_hashes`] needs it.
    pub mm_keys: VllmMmKeys,
    /// The most blocks the engine no longer holds whose mapping is remembered (default 65 536).
    pub max_ghosts: usize,
    /// The most blocks kept waiting for an unknown parent (default 65 536).
    pub max_pending_blocks: usize,
    /// How many blocks the engine is expected to hold (default 0: unknown); the converter's
    /// map is sized for them up front.
    pub expected_blocks: usize,
}

/// How an engine writes a multimodal item into a block's extra keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VllmMmKeys {
    /// `(identifier, offset - block start)` (vLLM since multimodal offsets were hashed; the
    /// default).
    #[default]
    WithOffset,
    /// The identifier alone (older vLLM).
    IdentifierOnly,
}

impl Default for VllmConvertConfig {
    fn default() -> Self {
        Self {
            scheme: HashScheme::Kvtier,
            default_block_size: 16,
            model: None,
            groups: VllmGroupFilter::FullAttention,
            mm_keys: VllmMmKeys::WithOffset,
            max_ghosts: 1 << 16,
            max_pending_blocks: 1 << 16,
            expected_blocks: 0,
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

    /// Sets how the engine writes multimodal extra keys (default [`VllmMmKeys::WithOffset`]).
    pub fn with_mm_keys(mut self, mm_keys: VllmMmKeys) -> Self {
        self.mm_keys = mm_keys;
        self
    }

    /// Sets how many mappings of blocks the engine no longer holds are remembered (default
    /// 65 536; each costs about 48 bytes).
    pub fn with_max_ghosts(mut self, max: usize) -> Self {
        self.max_ghosts = max;
        self
    }

    /// Sets how many blocks may wait for an unknown parent (default 65 536); beyond it the
    /// oldest waiting stores are dropped and counted as unplaceable.
    pub fn with_max_pending_blocks(mut self, max: usize) -> Self {
        self.max_pending_blocks = max;
        self
    }

    /// Sets how many blocks the engine is expected to hold at once, on all its media (default
    /// 0: unknown), for example vLLM's `num_gpu_blocks` plus its CPU offload blocks.
    ///
    /// The converter's map is allocated for that many entries (plus the ghosts it may
    /// remember, about 50–75 bytes each) when the converter is made, instead of growing
    /// while the engine warms up: each growth copies every entry and faults in a new table,
    /// a third of the converter's cost per block on a cold start. It still grows beyond.
    pub fn with_expected_blocks(mut self, blocks: usize) -> Self {
        self.expected_blocks = blocks;
        self
    }

    /// The entries the converter's map is sized for up front: the expected blocks and the
    /// ghosts it may remember, or none when the expected blocks are unknown.
    pub(crate) fn map_capacity(&self) -> usize {
        if self.expected_blocks == 0 {
            0
        } else {
            self.expected_blocks.saturating_add(self.max_ghosts)
        }
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
