//! What a disk tier is opened with, and its validation.
//!
//! The namespace, block size and slots per file are fixed when a tier is created: reopening the
//! directory with other values is refused ([`DiskError::ConfigMismatch`]). The capacity may grow
//! between opens, never shrink.

use super::DiskError;

/// Largest data file the default layout creates (1 GiB); smaller tiers get one smaller file.
const DEFAULT_FILE_BYTES: u64 = 1 << 30;

/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 1024;

/// Settings of a [`DiskTier`](super::DiskTier).
///
/// # Examples
///
/// ```
/// use kvtier_storage::disk::DiskConfig;
///
/// let config = DiskConfig::new("llama-3-8b/xxh3-chained/fp16-l32-b16", 64 * 1024, 10_000)
///     .with_slots_per_file(4096);
/// assert_eq!(config.block_bytes(), 65536);
/// assert_eq!(config.file_bytes(), 4096 * 65536);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    namespace: String,
    block_bytes: usize,
    capacity_blocks: u64,
    slots_per_file: Option<u64>,
    preallocate: bool,
    quick_repair: bool,
}

impl DiskConfig {
    /// A tier named `namespace` (model + hash scheme + block layout: two deployments that must
    /// not read each other's blocks use different namespaces) holding up to `capacity_blocks`
    /// blocks of exactly `block_bytes` bytes each.
    pub fn new(namespace: impl Into<String>, block_bytes: usize, capacity_blocks: u64) -> Self {
        Self {
            namespace: namespace.into(),
            block_bytes,
            capacity_blocks,
            slots_per_file: None,
            preallocate: true,
            quick_repair: false,
        }
    }

    /// Slots (blocks) per data file. Default: as many as fit in 1 GiB (at least one), and no
    /// more than the capacity.
    pub fn with_slots_per_file(mut self, slots: u64) -> Self {
        self.slots_per_file = Some(slots);
        self
    }

    /// Whether new data files get their blocks reserved with `fallocate` (so a full disk shows
    /// when a file is created, not in the middle of a write), or are only sized with
    /// `ftruncate` (sparse). Default: `true`. Where `fallocate` is not supported the tier falls
    /// back to sparse files.
    pub fn with_preallocate(mut self, preallocate: bool) -> Self {
        self.preallocate = preallocate;
        self
    }

    /// Whether every index commit also saves redb's allocator state (two fsyncs per commit
    /// instead of one), so that reopening after a crash does not walk the whole index to repair
    /// it. Default: `false`: writes are acknowledged sooner, a clean restart is as fast either
    /// way, and a restart after a crash takes longer (redb verifies every index page). Either
    /// way no acknowledged block is lost.
    pub fn with_quick_repair(mut self, quick_repair: bool) -> Self {
        self.quick_repair = quick_repair;
        self
    }

    /// Whether index commits keep redb's quick-repair state.
    pub fn quick_repair(&self) -> bool {
        self.quick_repair
    }

    /// The namespace the tier's blocks belong to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Bytes in every block.
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Most blocks the tier holds before it evicts.
    pub fn capacity_blocks(&self) -> u64 {
        self.capacity_blocks
    }

    /// Slots in each data file (the default resolved).
    pub fn slots_per_file(&self) -> u64 {
        self.slots_per_file.unwrap_or_else(|| {
            let per_gib = DEFAULT_FILE_BYTES / (self.block_bytes.max(1) as u64);
            per_gib.clamp(1, self.capacity_blocks.max(1))
        })
    }

    /// Bytes in each data file.
    pub fn file_bytes(&self) -> u64 {
        self.slots_per_file()
            .saturating_mul(self.block_bytes as u64)
    }

    /// Whether data files are preallocated with `fallocate`.
    pub fn preallocate(&self) -> bool {
        self.preallocate
    }

    /// Checks that the settings describe a tier.
    pub(crate) fn validate(&self) -> Result<(), DiskError> {
        let invalid = |reason: &str| {
            Err(DiskError::InvalidConfig {
                reason: reason.to_owned(),
            })
        };
        if self.namespace.is_empty() {
            return invalid("the namespace is empty");
        }
        if self.namespace.len() > MAX_NAMESPACE_BYTES {
            return invalid("the namespace is longer than 1024 bytes");
        }
        if self.block_bytes == 0 {
            return invalid("block_bytes is 0");
        }
        if u32::try_from(self.block_bytes).is_err() {
            return invalid("block_bytes exceeds 4 GiB - 1");
        }
        if self.capacity_blocks == 0 {
            return invalid("capacity_blocks is 0");
        }
        if self.slots_per_file() == 0 {
            return invalid("slots_per_file is 0");
        }
        let file_count = self.capacity_blocks.div_ceil(self.slots_per_file());
        if file_count > 1_000_000 {
            return invalid("more than 1,000,000 data files: raise slots_per_file");
        }
        let file_bytes = self.slots_per_file().checked_mul(self.block_bytes as u64);
        if file_bytes.is_none_or(|b| b > i64::MAX as u64) {
            return invalid("slots_per_file * block_bytes overflows a file size");
        }
        Ok(())
    }
}
