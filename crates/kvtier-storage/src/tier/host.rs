//! [`Storage`] for G2: a [`BlockManager`] and its [`HostArena`].
//!
//! - A hit handler holds the block's [`ImmutableBlock`] guard while it streams the slot's
//!   bytes, so the slot cannot be evicted or reused under the reader.
//! - A miss handler allocates a [`MutableBlock`] (evicting an inactive block if it must) and
//!   writes the chunks straight into its slot; [`finish`](MissHandler::finish) stages and
//!   registers it, and the block stays cached (inactive, evictable). Dropped unfinished, the
//!   block goes back to the free pool unregistered: nothing is visible.
//! - Writing a hash that is already registered replaces it: the old block is marked
//!   evict-on-release and released first. If a reader still holds the old block, the core
//!   keeps it (the new block becomes a duplicate and is freed): readers never see a slot
//!   change under them, and lookups keep serving the old bytes until it is released.
//!   Concurrent writers of one hash each publish a whole block, but as a cache G2 may end up
//!   holding none of them (one writer's release can evict the other's block); the conformance
//!   suite checks exactly that: never a torn block, presence only for durable tiers.
//! - [`purge`](Storage::purge) marks the block evict-on-release and releases it: it is freed at
//!   once when no reader holds it, else when the last reader releases it.

use std::sync::Arc;

use kvtier_core::{BlockManager, ImmutableBlock, MutableBlock, SequenceHash, Tier};

use super::{BlockMeta, HitHandler, MissHandler, Storage, StorageError};
use crate::arena::{ArenaError, HostArena};

impl From<ArenaError> for StorageError {
    fn from(e: ArenaError) -> Self {
        match e {
            ArenaError::SizeMismatch { expected, actual } => StorageError::WrongSize {
                expected,
                got: actual,
            },
            other => StorageError::backend(other),
        }
    }
}

/// A G2 host tier (block manager + arena) as a [`Storage`].
pub struct HostStorage<T: Tier> {
    manager: BlockManager<T>,
    arena: Arc<HostArena<T>>,
}

impl<T: Tier> std::fmt::Debug for HostStorage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStorage")
            .field("arena", &self.arena)
            .finish()
    }
}

impl<T: Tier> HostStorage<T> {
    /// The tier of `arena` (and its manager).
    pub fn new(arena: Arc<HostArena<T>>) -> Self {
        Self {
            manager: arena.manager().clone(),
            arena,
        }
    }

    /// The arena.
    pub fn arena(&self) -> &Arc<HostArena<T>> {
        &self.arena
    }

    /// The block manager.
    pub fn manager(&self) -> &BlockManager<T> {
        &self.manager
    }

    /// Writes `hashes.len()` blocks from `bytes` (block `i` at `i × block_bytes`) into newly
    /// allocated slots, registers them in one batch and returns their guards, in order. All or
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`StorageError::WrongSize`] if `bytes` is not `hashes.len() × block_bytes` long;
    /// [`StorageError::Full`] when fewer blocks are free or evictable.
    pub fn insert_many(
        &self,
        hashes: &[SequenceHash],
        bytes: &[u8],
    ) -> Result<Vec<ImmutableBlock<T>>, StorageError> {
        super::check_batch(hashes.len(), self.arena.block_bytes(), bytes.len())?;
        let mut blocks = self
            .manager
            .allocate_blocks(hashes.len())
            .map_err(|e| StorageError::Full(e.to_string()))?;
        self.arena.write_many_from(&mut blocks, bytes)?;
        let block_size = self.manager.block_size();
        let mut staged = Vec::with_capacity(blocks.len());
        for (block, hash) in blocks.into_iter().zip(hashes) {
            staged.push(
                block
                    .stage(*hash, block_size)
                    .map_err(|e| StorageError::backend(e.to_string()))?,
            );
        }
        self.manager
            .register_blocks(staged)
            .map_err(|e| StorageError::backend(e.to_string()))
    }

    /// Releases `hash` with evict-on-release set to `evict`; returns whether it was registered.
    fn mark(&self, hash: SequenceHash, evict: bool) -> bool {
        match self.manager.scan_matches(&[hash], false).pop().flatten() {
            Some(block) => {
                block.set_evict_on_release(evict);
                true
            }
            None => false,
        }
    }
}

struct HostHit<T: Tier> {
    arena: Arc<HostArena<T>>,
    block: ImmutableBlock<T>,
    pos: usize,
}

impl<T: Tier> HitHandler for HostHit<T> {
    fn len(&self) -> usize {
        self.arena.block_bytes()
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let bytes = self.arena.block(&self.block)?;
        let rest = &bytes[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

struct HostMiss<T: Tier> {
    storage: HostStorage<T>,
    block: MutableBlock<T>,
    hash: SequenceHash,
    written: usize,
}

impl<T: Tier> MissHandler for HostMiss<T> {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let len = self.storage.arena.block_bytes();
        let end = self.written + chunk.len();
        if end > len {
            return Err(StorageError::Overflow { len });
        }
        self.storage.arena.block_mut(&mut self.block)?[self.written..end].copy_from_slice(chunk);
        self.written = end;
        Ok(())
    }

    fn written(&self) -> usize {
        self.written
    }

    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let len = self.storage.arena.block_bytes();
        if self.written != len {
            return Err(StorageError::Incomplete {
                written: self.written,
                len,
            });
        }
        let HostMiss {
            storage,
            block,
            hash,
            ..
        } = *self;
        storage.mark(hash, true);
        let staged = block
            .stage(hash, storage.manager.block_size())
            .map_err(|e| StorageError::backend(e.to_string()))?;
        let held = storage
            .manager
            .register_block(staged)
            .map_err(|e| StorageError::backend(e.to_string()))?;
        drop(held); // cached: inactive and evictable
        Ok(())
    }
}

impl<T: Tier> Clone for HostStorage<T> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            arena: Arc::clone(&self.arena),
        }
    }
}

impl<T: Tier> Storage for HostStorage<T> {
    fn name(&self) -> &str {
        T::NAME
    }

    fn block_bytes(&self) -> Option<usize> {
        Some(self.arena.block_bytes())
    }

    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        Ok(self
            .manager
            .scan_matches(&[hash], true)
            .pop()
            .flatten()
            .map(|block| {
                Box::new(HostHit {
                    arena: Arc::clone(&self.arena),
                    block,
                    pos: 0,
                }) as Box<dyn HitHandler>
            }))
    }

    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        let expected = self.arena.block_bytes();
        if len != expected {
            return Err(StorageError::WrongSize { expected, got: len });
        }
        let block = self
            .manager
            .allocate_blocks(1)
            .map_err(|e| StorageError::Full(e.to_string()))?
            .pop()
            .ok_or_else(|| StorageError::Full("no block allocated".into()))?;
        Ok(Box::new(HostMiss {
            storage: self.clone(),
            block,
            hash,
            written: 0,
        }))
    }

    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        Ok(self.mark(hash, true))
    }

    fn update_meta(&self, hash: SequenceHash, meta: BlockMeta) -> Result<bool, StorageError> {
        Ok(self.mark(hash, meta.evict_soon))
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.manager.contains(hash)
    }
}
