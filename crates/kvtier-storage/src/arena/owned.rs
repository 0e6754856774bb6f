//! [`SlotBytes`]: a block's arena bytes held by an owned read guard, for callers that hand the
//! bytes to another thread or keep them past the current scope (a server writing them to a
//! socket with `writev`, then dropping the guard once they are sent).
//!
//! The guard and the arena travel together, so the view cannot outlive either; the slot is
//! checked once, when the value is made, and `as_ref` only re-derives the same view.

use std::fmt;
use std::sync::Arc;

use kvtier_core::{ImmutableBlock, Tier};

use super::{ArenaError, HostArena};

/// The bytes of one block in a [`HostArena`], kept readable (not evicted, not reused) for as
/// long as this value lives. Made by [`HostArena::slot_bytes`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{BlockManager, G2, SequenceHash};
/// use kvtier_storage::arena::HostArena;
/// use kvtier_storage::layout::BlockLayout;
///
/// let manager = BlockManager::<G2>::builder().with_block_count(4).build()?;
/// let arena = Arc::new(HostArena::new(&manager, BlockLayout::from_bytes(4096)?)?);
/// let mut block = manager.allocate_blocks(1)?.pop().unwrap();
/// arena.write_from(&mut block, &[5u8; 4096])?;
/// let staged = block.stage(SequenceHash::root(1), manager.block_size()).map_err(|e| e.to_string())?;
/// let held = manager.register_block(staged).map_err(|e| e.to_string())?;
///
/// let bytes = arena.slot_bytes(held)?; // owns the guard: may move to another thread
/// let sent = std::thread::spawn(move || bytes.as_ref().iter().map(|&b| u64::from(b)).sum::<u64>());
/// assert_eq!(sent.join().unwrap(), 5 * 4096);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SlotBytes<T: Tier> {
    arena: Arc<HostArena<T>>,
    block: ImmutableBlock<T>,
}

impl<T: Tier> HostArena<T> {
    /// Wraps `block` with the arena into an owned view of its bytes.
    ///
    /// # Errors
    ///
    /// [`ArenaError::ForeignBlock`] for a block of another manager (the block is dropped).
    pub fn slot_bytes(
        self: &Arc<Self>,
        block: ImmutableBlock<T>,
    ) -> Result<SlotBytes<T>, ArenaError> {
        self.block(&block)?;
        Ok(SlotBytes {
            arena: Arc::clone(self),
            block,
        })
    }
}

impl<T: Tier> SlotBytes<T> {
    /// The guard that keeps the slot.
    pub fn block(&self) -> &ImmutableBlock<T> {
        &self.block
    }

    /// The bytes, borrowed from the arena.
    pub fn bytes(&self) -> &[u8] {
        // Checked when made: the block is the arena's, so the view cannot fail.
        self.arena.slots.slot(&self.block).unwrap_or(&[])
    }
}

impl<T: Tier> AsRef<[u8]> for SlotBytes<T> {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl<T: Tier> fmt::Debug for SlotBytes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotBytes")
            .field("block", &self.block.block_id())
            .field("len", &self.bytes().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use kvtier_core::{BlockManager, G2, SequenceHash};

    use super::*;
    use crate::layout::BlockLayout;

    #[test]
    fn foreign_block_is_refused_and_held_slot_is_not_reused() {
        let a = BlockManager::<G2>::builder()
            .with_block_count(1)
            .build()
            .unwrap();
        let b = BlockManager::<G2>::builder()
            .with_block_count(1)
            .build()
            .unwrap();
        let arena = Arc::new(HostArena::new(&a, BlockLayout::from_bytes(4096).unwrap()).unwrap());
        let foreign = b.allocate_blocks(1).unwrap().pop().unwrap();
        let staged = foreign
            .stage(SequenceHash::root(2), b.block_size())
            .unwrap();
        let foreign = b.register_block(staged).unwrap();
        assert!(matches!(
            arena.slot_bytes(foreign),
            Err(ArenaError::ForeignBlock { .. })
        ));

        let mut block = a.allocate_blocks(1).unwrap().pop().unwrap();
        arena.write_from(&mut block, &[9u8; 4096]).unwrap();
        let held = a
            .register_block(block.stage(SequenceHash::root(3), a.block_size()).unwrap())
            .unwrap();
        let bytes = arena.slot_bytes(held).unwrap();
        // The only slot is held by `bytes`: nothing can be allocated over it.
        assert!(a.allocate_blocks(1).is_err());
        assert!(bytes.as_ref().iter().all(|&x| x == 9));
        drop(bytes);
        assert_eq!(a.allocate_blocks(1).unwrap().len(), 1);
    }
}
