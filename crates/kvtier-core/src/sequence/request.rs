//! [`RequestSequence`]: one request's tokens plus the blocks that hold its KV.
//!
//! Registration happens at *schedule time*: a block is registered as soon as its tokens are
//! covered by `kv_position` (the tokens whose KV is written, or scheduled to be written in the
//! engine's current step), the same convention as vLLM's prefix cache. The engine must write a
//! block's KV in the step that covers it, before a request that matches the block reads it.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use super::error::SequenceError;
use crate::{
    BlockHasher, BlockManager, CompleteBlock, ImmutableBlock, MutableBlock, SequenceHash, Tier,
    TokenSequence,
};

/// One inference request driven through a [`BlockManager`]: prefix match, prefill, decode,
/// preemption (release / reacquire), chunked prefill and speculative rollback.
///
/// The hasher decides the block identities, so extra keys (model, LoRA, tenant salt,
/// multimodal content) are set on the [`BlockHasher`]'s [`ExtraKeys`](crate::ExtraKeys).
/// Dropping the sequence releases its blocks deepest first.
///
/// # Examples
///
/// Prefill on an empty cache, decode across a block boundary, then a second request that
/// shares the prompt reuses its blocks.
///
/// ```
/// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
///
/// let manager = BlockManager::<G1>::builder().with_block_count(16).with_block_size(4).build()?;
/// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new().with_salt(b"t1".to_vec()))?;
/// let prompt: Vec<u32> = (0..10).collect();
///
/// let mut first = RequestSequence::new(&manager, hasher.clone(), prompt.clone(), 32)?;
/// assert_eq!(first.match_prefix()?, 0); // empty cache
/// first.allocate_for_prefill()?; // 3 blocks: 10 prompt tokens + the first generated one
/// assert_eq!(first.register_filled()?, 2); // the two full prompt blocks
/// first.append_token(100)?;
/// assert_eq!(first.append_token(101)?, Some(2)); // block 2 filled and registered
///
/// let mut second = RequestSequence::new(&manager, hasher, prompt, 32)?;
/// assert_eq!(second.match_prefix()?, 2);
/// assert_eq!(second.block_ids()[..2], first.block_ids()[..2]);
/// assert_eq!(second.new_tokens_for_prefill(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RequestSequence<T: Tier> {
    pub(super) manager: BlockManager<T>,
    pub(super) tokens: TokenSequence,
    pub(super) block_size: usize,
    pub(super) prompt_len: usize,
    pub(super) max_output_tokens: usize,
    /// Blocks `0..registered.len()` of the page table, in order.
    pub(super) registered: Vec<ImmutableBlock<T>>,
    /// Blocks after the registered ones, in order (front = next to fill).
    pub(super) pending: VecDeque<MutableBlock<T>>,
    /// Tokens whose KV is written or scheduled (see the module docs).
    pub(super) kv_position: usize,
    pub(super) prefix_matched_blocks: usize,
    pub(super) released: bool,
}

impl<T: Tier> RequestSequence<T> {
    /// A sequence for `prompt` that may generate up to `max_output_tokens` tokens. Every full
    /// prompt block is hashed now; nothing is taken from the manager yet.
    ///
    /// # Errors
    ///
    /// [`SequenceError::BlockSizeMismatch`] when the hasher's block size is not the manager's.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(4).build()?;
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3, 4, 5], 16)?;
    /// assert_eq!(seq.len(), 5);
    /// assert_eq!(seq.sequence_hashes().len(), 1);
    /// assert_eq!(seq.num_blocks(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        manager: &BlockManager<T>,
        hasher: BlockHasher,
        prompt: impl Into<Vec<u32>>,
        max_output_tokens: usize,
    ) -> Result<Self, SequenceError> {
        if hasher.block_size() != manager.block_size() {
            return Err(SequenceError::BlockSizeMismatch {
                hasher: hasher.block_size(),
                manager: manager.block_size(),
            });
        }
        let block_size = hasher.block_size();
        let tokens = TokenSequence::new(hasher, prompt);
        Ok(Self {
            manager: manager.clone(),
            block_size,
            prompt_len: tokens.len(),
            tokens,
            max_output_tokens,
            registered: Vec::new(),
            pending: VecDeque::new(),
            kv_position: 0,
            prefix_matched_blocks: 0,
            released: false,
        })
    }

    /// Matches the longest cached prefix of the sequence's full blocks and keeps the matched
    /// blocks (they become active). Returns the number of matched blocks; the prefill then
    /// starts at [`kv_position`](Self::kv_position).
    ///
    /// Every full block may match, so [`new_tokens_for_prefill`](Self::new_tokens_for_prefill)
    /// can be 0; an engine that needs logits for the last prompt token recomputes it.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`] on a released sequence (use [`reacquire`](Self::reacquire));
    /// [`SequenceError::BlocksHeld`] once blocks are held (match before allocating).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut a = RequestSequence::new(&manager, hasher.clone(), vec![1, 2, 3, 4], 0)?;
    /// a.allocate_for_prefill()?;
    /// a.register_filled()?;
    /// drop(a); // the blocks stay cached (inactive)
    ///
    /// let mut b = RequestSequence::new(&manager, hasher, vec![1, 2, 3, 4, 5], 4)?;
    /// assert_eq!(b.match_prefix()?, 2);
    /// assert_eq!(b.prefix_matched_tokens(), 4);
    /// assert_eq!(b.new_tokens_for_prefill(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn match_prefix(&mut self) -> Result<usize, SequenceError> {
        self.check_live()?;
        if self.num_blocks() > 0 {
            return Err(SequenceError::BlocksHeld {
                held: self.num_blocks(),
            });
        }
        self.registered = self.manager.match_blocks(self.tokens.sequence_hashes());
        self.prefix_matched_blocks = self.registered.len();
        self.kv_position = self.registered.len() * self.block_size;
        Ok(self.prefix_matched_blocks)
    }

    /// Allocates `n` more writable blocks at the end of the page table, all or nothing.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`]; [`SequenceError::TooManyBlocks`] beyond what the sequence
    /// can ever fill; [`SequenceError::Alloc`] when the manager has too few free or evictable
    /// blocks. Nothing is taken on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence,
    ///     SequenceError};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(2).with_block_size(4).build()?;
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![0; 12], 0)?;
    /// assert!(matches!(seq.allocate(3), Err(SequenceError::Alloc { .. })));
    /// assert_eq!(manager.available_blocks(), 2); // all or nothing
    /// seq.allocate(2)?;
    /// assert_eq!(seq.num_blocks(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate(&mut self, n: usize) -> Result<(), SequenceError> {
        self.check_live()?;
        let blocks = self.take_blocks(n)?;
        self.pending.extend(blocks);
        Ok(())
    }

    /// Allocates what the prefill needs: blocks for every prompt token not covered yet plus
    /// the block of the first generated token (when the sequence may generate one). All or
    /// nothing; returns the number of blocks allocated (0 when enough are held).
    ///
    /// # Errors
    ///
    /// As [`allocate`](Self::allocate).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(4).build()?;
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// // 8 prompt tokens fill two blocks; the first generated token needs a third.
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![7; 8], 1)?;
    /// assert_eq!(seq.allocate_for_prefill()?, 3);
    /// assert_eq!(seq.allocate_for_prefill()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allocate_for_prefill(&mut self) -> Result<usize, SequenceError> {
        self.check_live()?;
        let tokens = self.len() + usize::from(self.remaining_output_tokens() > 0);
        let need = self.blocks_for(tokens).saturating_sub(self.num_blocks());
        let blocks = self.take_blocks(need)?;
        self.pending.extend(blocks);
        Ok(need)
    }

    /// Marks every token that has a slot as computed (the prefill is scheduled) and registers
    /// every held block whose tokens are all present, in one `register_blocks` batch. Returns
    /// the number of blocks registered.
    ///
    /// Under [`DuplicationPolicy::Reject`](crate::DuplicationPolicy::Reject) a block whose hash
    /// is already cached is swapped for the cached one, so [`block_ids`](Self::block_ids) may
    /// change at that position; the engine must then read from the returned id.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(4).build()?;
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, (0..9).collect::<Vec<u32>>(), 4)?;
    /// seq.allocate_for_prefill()?;
    /// assert_eq!(seq.register_filled()?, 2);
    /// assert_eq!(seq.kv_position(), 9);
    /// assert!(manager.contains(seq.sequence_hashes()[1]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_filled(&mut self) -> Result<usize, SequenceError> {
        self.check_live()?;
        let covered = self.len().min(self.num_blocks() * self.block_size);
        self.kv_position = self.kv_position.max(covered);
        Ok(self.register_through(self.kv_position / self.block_size))
    }

    /// Chunked prefill: marks the next `n_tokens` prompt tokens as computed, allocating the
    /// blocks they need (all or nothing), and registers every block the chunk completes.
    /// Returns the number of blocks registered.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`]; [`SequenceError::ChunkTooLarge`] past the end of the
    /// tokens; allocation errors as [`allocate`](Self::allocate).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(4).build()?;
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![3; 10], 4)?;
    /// assert_eq!(seq.prefill_chunk(6)?, 1); // tokens 0..6: block 0 complete
    /// assert_eq!(seq.prefill_chunk(4)?, 1); // tokens 6..10: block 1 complete
    /// assert_eq!(seq.new_tokens_for_prefill(), 0);
    /// seq.append_token(42)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefill_chunk(&mut self, n_tokens: usize) -> Result<usize, SequenceError> {
        self.check_live()?;
        let remaining = self.len() - self.kv_position;
        if n_tokens > remaining {
            return Err(SequenceError::ChunkTooLarge {
                requested: n_tokens,
                remaining,
            });
        }
        let target = self.kv_position + n_tokens;
        let need = self.blocks_for(target).saturating_sub(self.num_blocks());
        let blocks = self.take_blocks(need)?;
        self.pending.extend(blocks);
        self.kv_position = target;
        Ok(self.register_through(target / self.block_size))
    }

    /// Decode: appends one generated token. When the current block is full a new one is
    /// allocated first; when the token completes a block, the block is registered at once and
    /// its index returned.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`]; [`SequenceError::PrefillIncomplete`] while prompt tokens
    /// are not covered; [`SequenceError::MaxOutputTokens`] once `max_output_tokens` tokens were
    /// generated; [`SequenceError::Alloc`] when a new block is needed and none is available.
    /// On error the token is not appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence,
    ///     SequenceError};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1], 2)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// assert_eq!(seq.append_token(2)?, Some(0)); // block 0 = [1, 2] registered
    /// assert_eq!(seq.append_token(3)?, None); // a new block was allocated lazily
    /// assert!(matches!(seq.append_token(4), Err(SequenceError::MaxOutputTokens { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_token(&mut self, token: u32) -> Result<Option<usize>, SequenceError> {
        self.check_decodable(1)?;
        if self.num_blocks() * self.block_size == self.len() {
            let block = self.take_blocks(1)?;
            self.pending.extend(block);
        }
        let filled = self.tokens.append(token);
        self.kv_position = self.len();
        Ok(filled.map(|hash| {
            let block = self
                .pending
                .pop_front()
                .expect("a slot was ensured for every covered token");
            let staged = self.stage(block, hash);
            let registered = self
                .manager
                .register_block(staged)
                .expect("blocks come from this sequence's manager");
            self.registered.push(registered);
            self.registered.len() - 1
        }))
    }

    /// Appends several tokens at once (accepted speculative tokens, or drafts to verify),
    /// allocating the blocks they need first (all or nothing) and registering every block they
    /// complete in one batch. Returns the indices of the registered blocks.
    ///
    /// # Errors
    ///
    /// As [`append_token`](Self::append_token); nothing is appended on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1], 8)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// assert_eq!(seq.append_tokens(&[2, 3, 4, 5])?, 0..2);
    /// assert_eq!(seq.len(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_tokens(&mut self, tokens: &[u32]) -> Result<Range<usize>, SequenceError> {
        self.check_decodable(tokens.len())?;
        let need = self
            .blocks_for(self.len() + tokens.len())
            .saturating_sub(self.num_blocks());
        let blocks = self.take_blocks(need)?;
        self.pending.extend(blocks);
        let start = self.registered.len();
        self.tokens.extend(tokens);
        self.kv_position = self.len();
        self.register_through(self.kv_position / self.block_size);
        Ok(start..self.registered.len())
    }

    /// Removes the last `n` generated tokens (rejected speculative drafts) and gives back the
    /// blocks that no longer hold any token, deepest first. Returns how many trailing tokens
    /// must have their KV rewritten: 0, unless the new tail block had been registered (a
    /// draft completed it); that block is then replaced by a fresh writable one holding the
    /// `len() % block_size` kept tokens, whose KV the engine recomputes or copies.
    ///
    /// The dropped registered blocks stay cached: their KV is valid for the drafted tokens.
    ///
    /// # Errors
    ///
    /// [`SequenceError::Released`]; [`SequenceError::RollbackTooFar`] when `n` exceeds the
    /// generated tokens; [`SequenceError::Alloc`] when the tail block must be replaced and no
    /// block is available. Nothing changes on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2], 8)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// seq.append_tokens(&[10, 11, 12])?; // drafts: block [10, 11] registered, [12] partial
    /// assert_eq!(seq.rollback(1)?, 0); // drop 12: its block goes back to the manager
    /// assert_eq!(seq.num_blocks(), 2);
    /// assert_eq!(seq.rollback(1)?, 1); // drop 11: block 1 is partial again, rewrite token 10
    /// assert_eq!(seq.tokens(), &[1, 2, 10]);
    /// assert_eq!(seq.num_registered_blocks(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback(&mut self, n: usize) -> Result<usize, SequenceError> {
        self.check_live()?;
        let generated = self.output_len();
        if n > generated {
            return Err(SequenceError::RollbackTooFar {
                requested: n,
                generated,
            });
        }
        if n == 0 {
            return Ok(0);
        }
        let new_len = self.len() - n;
        let full = new_len / self.block_size;
        let keep = self.blocks_for(new_len);
        let tail = new_len % self.block_size;
        // The new partial tail sits in a registered block: it needs a writable replacement.
        // Allocate it before touching anything so a failure changes nothing.
        let replacement = if tail > 0 && self.registered.len() > full {
            self.manager.allocate_blocks(1)?.pop()
        } else {
            None
        };
        // Registered blocks stay only below `full` (a replaced tail is dropped too); writable
        // blocks fill the rest of `keep`. Everything else goes back deepest first.
        let registered_keep = self.registered.len().min(full);
        let pending_keep = keep - registered_keep - usize::from(replacement.is_some());
        while self.pending.len() > pending_keep {
            self.pending.pop_back();
        }
        self.manager
            .release_blocks(self.registered.drain(registered_keep..).rev());
        let rewrite = match replacement {
            Some(block) => {
                self.pending.push_front(block);
                tail
            }
            None => 0,
        };
        self.tokens.truncate(new_len);
        self.kv_position = new_len;
        Ok(rewrite)
    }

    /// Gives every block back, deepest first, so the tail of the request becomes evictable
    /// before its prefix (a prefix without its root is useless to every future request).
    /// Tokens and hashes are kept; [`reacquire`](Self::reacquire) restores the page table.
    /// Does nothing on a released sequence.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3, 4, 5], 4)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// seq.release();
    /// assert!(seq.is_released());
    /// assert_eq!(seq.num_blocks(), 0);
    /// assert_eq!(manager.available_blocks(), 8); // registered blocks are cached, evictable
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&mut self) {
        self.drop_blocks_tail_first();
        self.kv_position = 0;
        self.prefix_matched_blocks = 0;
        self.released = true;
    }

    /// After [`release`](Self::release) (preemption): matches the cached prefix again,
    /// allocates the missing blocks and registers every full one (hashes are cached, nothing
    /// is rehashed), all or nothing. Returns how many trailing tokens lost their KV and must be
    /// recomputed: those from [`prefix_matched_tokens`](Self::prefix_matched_tokens) to
    /// [`len`](Self::len).
    ///
    /// # Errors
    ///
    /// [`SequenceError::NotReleased`] on a sequence that holds its blocks;
    /// [`SequenceError::Alloc`] when the missing blocks cannot be allocated (the sequence stays
    /// released and holds nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(8).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3, 4, 5], 4)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// let before = seq.block_ids();
    /// seq.release();
    /// assert_eq!(seq.reacquire()?, 1); // blocks 0-1 still cached; token 5 is recomputed
    /// assert_eq!(seq.block_ids()[..2], before[..2]);
    /// assert_eq!(seq.kv_position(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reacquire(&mut self) -> Result<usize, SequenceError> {
        if !self.released {
            return Err(SequenceError::NotReleased);
        }
        let mut matched = self.manager.match_blocks(self.tokens.sequence_hashes());
        let need = self.blocks_for(self.len()) - matched.len();
        let fresh = match self.manager.allocate_blocks(need) {
            Ok(fresh) => fresh,
            Err(e) => {
                self.manager.release_blocks(matched.drain(..).rev());
                return Err(e.into());
            }
        };
        let m = matched.len();
        self.registered = matched;
        self.pending = fresh.into();
        self.prefix_matched_blocks = m;
        self.kv_position = self.len();
        self.released = false;
        self.register_through(self.tokens.block_count());
        Ok(self.len() - m * self.block_size)
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    fn max_blocks(&self) -> usize {
        self.blocks_for(self.prompt_len.saturating_add(self.max_output_tokens))
    }

    fn check_live(&self) -> Result<(), SequenceError> {
        if self.released {
            Err(SequenceError::Released)
        } else {
            Ok(())
        }
    }

    /// Checks that `n` tokens may be decoded now.
    fn check_decodable(&self, n: usize) -> Result<(), SequenceError> {
        self.check_live()?;
        if self.kv_position < self.len() {
            return Err(SequenceError::PrefillIncomplete {
                kv_position: self.kv_position,
                len: self.len(),
            });
        }
        let remaining = self.remaining_output_tokens();
        if n > remaining {
            return Err(SequenceError::MaxOutputTokens {
                max_output_tokens: self.max_output_tokens,
                requested: n,
                remaining,
            });
        }
        Ok(())
    }

    /// `n` blocks from the manager, within the sequence's maximum. All or nothing.
    fn take_blocks(&self, n: usize) -> Result<Vec<MutableBlock<T>>, SequenceError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let held = self.num_blocks();
        let max = self.max_blocks();
        if held + n > max {
            return Err(SequenceError::TooManyBlocks {
                requested: n,
                held,
                max,
            });
        }
        Ok(self.manager.allocate_blocks(n)?)
    }

    fn stage(&self, block: MutableBlock<T>, hash: SequenceHash) -> CompleteBlock<T> {
        block
            .stage(hash, self.block_size)
            .expect("the hasher's block size equals the manager's (checked in new)")
    }

    /// Registers writable blocks from the front until `full` blocks are registered (or no
    /// writable block is left), in one batch. Returns how many were registered.
    fn register_through(&mut self, full: usize) -> usize {
        let start = self.registered.len();
        let n = full.saturating_sub(start).min(self.pending.len());
        if n == 0 {
            return 0;
        }
        let hashes = &self.tokens.sequence_hashes()[start..start + n];
        let staged: Vec<_> = self
            .pending
            .drain(..n)
            .zip(hashes)
            .map(|(block, &hash)| {
                block
                    .stage(hash, self.block_size)
                    .expect("the hasher's block size equals the manager's (checked in new)")
            })
            .collect();
        let registered = self
            .manager
            .register_blocks(staged)
            .expect("blocks come from this sequence's manager");
        self.registered.extend(registered);
        n
    }

    /// Drops writable blocks, then registered ones, deepest first (one batch release).
    fn drop_blocks_tail_first(&mut self) {
        while self.pending.pop_back().is_some() {}
        self.manager.release_blocks(self.registered.drain(..).rev());
    }
}

impl<T: Tier> Drop for RequestSequence<T> {
    /// Releases every block, deepest first (see [`RequestSequence::release`]).
    fn drop(&mut self) {
        self.drop_blocks_tail_first();
    }
}

impl<T: Tier> fmt::Debug for RequestSequence<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSequence")
            .field("tier", &T::NAME)
            .field("len", &self.len())
            .field("prompt_len", &self.prompt_len)
            .field("kv_position", &self.kv_position)
            .field("registered", &self.registered.len())
            .field("writable", &self.pending.len())
            .field("prefix_matched_blocks", &self.prefix_matched_blocks)
            .field("released", &self.released)
            .finish()
    }
}
