//! Fixtures for the composition's tests: tiers, and a wrapper that counts calls.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tier::{BatchRead, BlockMeta, HitHandler, MissHandler, Storage, StorageError};

/// Block size of every tier in these tests.
pub const BLOCK: usize = 4096;

/// A G2 tier of `blocks` slots.
pub fn host(blocks: usize) -> HostStorage<G2> {
    let manager = BlockManager::<G2>::builder()
        .with_block_count(blocks)
        .build()
        .unwrap();
    let arena = HostArena::new(&manager, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap();
    HostStorage::new(Arc::new(arena))
}

/// A G3 tier of 256 blocks in `dir`.
pub fn disk(dir: &Path) -> Arc<DiskStorage> {
    let tier = DiskTier::open(dir, DiskConfig::new("tiered-test", BLOCK, 256)).unwrap();
    Arc::new(DiskStorage::new(Arc::new(tier)))
}

/// A hook run once, at the next presence probe of a [`Counting`] tier.
pub type ProbeHook = Box<dyn FnOnce() + Send>;

/// Counts the calls a tier gets.
pub struct Counting {
    pub inner: Arc<dyn Storage>,
    pub lookups: AtomicU64,
    pub batches: AtomicU64,
    /// Single-block presence probes (`contains`).
    pub probes: AtomicU64,
    /// Batched presence probes (`contains_batch`).
    pub probe_batches: AtomicU64,
    /// Run (once) when the next `contains_batch` starts, before it reaches the tier.
    pub on_probe: Mutex<Option<ProbeHook>>,
}

impl Counting {
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            lookups: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            probe_batches: AtomicU64::new(0),
            on_probe: Mutex::new(None),
        })
    }

    /// (single probes, batched probes) so far.
    pub fn probe_counts(&self) -> (u64, u64) {
        (
            self.probes.load(Ordering::Relaxed),
            self.probe_batches.load(Ordering::Relaxed),
        )
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Storage for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn block_bytes(&self) -> Option<usize> {
        self.inner.block_bytes()
    }
    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.lookup(hash)
    }
    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        self.inner.get_miss_handler(hash, len)
    }
    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        self.inner.purge(hash)
    }
    fn update_meta(&self, hash: SequenceHash, meta: BlockMeta) -> Result<bool, StorageError> {
        self.inner.update_meta(hash, meta)
    }
    fn contains(&self, hash: SequenceHash) -> bool {
        self.probes.fetch_add(1, Ordering::Relaxed);
        self.inner.contains(hash)
    }
    fn contains_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, StorageError> {
        self.probe_batches.fetch_add(1, Ordering::Relaxed);
        let hook = self.on_probe.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.contains_batch(hashes)
    }
    fn get_batch(
        &self,
        hashes: &[SequenceHash],
        block_len: usize,
        out: &mut [u8],
    ) -> Result<Vec<BatchRead>, StorageError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.inner.get_batch(hashes, block_len, out)
    }
}
