//! [`Storage`] for G3: a [`DiskTier`] behind the tier interface.
//!
//! Reads are verified whole blocks (the checksum covers every byte), streamed from memory;
//! writes are gathered and stored durably at finish with one [`DiskTier::put`]. Batched reads go
//! to [`DiskTier::get_batch`] (one `pread` per run of consecutive slots).

use std::sync::Arc;

use kvtier_core::SequenceHash;

use super::buffered::{BufferedHit, BufferedMiss};
use super::{BatchRead, BlockMeta, HitHandler, MissHandler, Storage, StorageError, check_batch};
use crate::disk::{BlockRead, DiskError, DiskTier};

/// The G3 disk tier as a [`Storage`].
#[derive(Debug, Clone)]
pub struct DiskStorage {
    tier: Arc<DiskTier>,
}

impl DiskStorage {
    /// Wraps `tier`.
    pub fn new(tier: Arc<DiskTier>) -> Self {
        Self { tier }
    }

    /// The disk tier.
    pub fn tier(&self) -> &Arc<DiskTier> {
        &self.tier
    }
}

impl From<DiskError> for StorageError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::WrongSize { expected, got } => StorageError::WrongSize { expected, got },
            DiskError::Corrupt { hash } => StorageError::Corrupt { hash },
            DiskError::BatchTooLarge { .. } => StorageError::Full(e.to_string()),
            other => StorageError::backend(other),
        }
    }
}

impl Storage for DiskStorage {
    fn name(&self) -> &str {
        "g3"
    }

    fn block_bytes(&self) -> Option<usize> {
        Some(self.tier.block_bytes())
    }

    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        if !self.tier.contains(hash) {
            return Ok(None);
        }
        let mut buf = vec![0u8; self.tier.block_bytes()];
        if self.tier.get(hash, &mut buf)? {
            Ok(Some(Box::new(BufferedHit::new(buf))))
        } else {
            Ok(None)
        }
    }

    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        let expected = self.tier.block_bytes();
        if len != expected {
            return Err(StorageError::WrongSize { expected, got: len });
        }
        let tier = Arc::clone(&self.tier);
        Ok(Box::new(BufferedMiss::new(
            hash,
            len,
            Box::new(move |hash, bytes| tier.put(hash, &bytes).map_err(StorageError::from)),
        )))
    }

    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        Ok(self.tier.delete(hash)?)
    }

    /// G3 evicts in write order and keeps no per-block hints: only reports presence.
    fn update_meta(&self, hash: SequenceHash, _meta: BlockMeta) -> Result<bool, StorageError> {
        Ok(self.tier.contains(hash))
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.tier.contains(hash)
    }

    fn get_batch(
        &self,
        hashes: &[SequenceHash],
        block_len: usize,
        out: &mut [u8],
    ) -> Result<Vec<BatchRead>, StorageError> {
        check_batch(hashes.len(), block_len, out.len())?;
        if block_len != self.tier.block_bytes() {
            return Err(StorageError::WrongSize {
                expected: self.tier.block_bytes(),
                got: block_len,
            });
        }
        Ok(self
            .tier
            .get_batch(hashes, out)?
            .into_iter()
            .map(|r| match r {
                BlockRead::Hit => BatchRead::Hit,
                BlockRead::Miss => BatchRead::Miss,
                BlockRead::Corrupt => BatchRead::Corrupt,
            })
            .collect())
    }

    /// One [`DiskTier::put_batch`]: the batch's bytes are written, synced and committed
    /// together (one `fdatasync` per file touched and one index commit for the batch).
    fn put_batch(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), StorageError> {
        Ok(self.tier.put_batch(blocks)?)
    }
}
