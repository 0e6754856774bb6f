//! Read-only accessors of [`RequestSequence`]: the page table, tokens, hashes and counters.
//! They never touch the manager.

use super::request::RequestSequence;
use crate::{BlockHasher, BlockId, BlockManager, ImmutableBlock, MutableBlock, SequenceHash, Tier};

impl<T: Tier> RequestSequence<T> {
    /// The page table: the id of every held block, in token order.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.allocate_for_prefill()?;
    /// assert_eq!(seq.block_ids().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_ids(&self) -> Vec<BlockId> {
        self.registered
            .iter()
            .map(ImmutableBlock::block_id)
            .chain(self.pending.iter().map(MutableBlock::block_id))
            .collect()
    }

    /// The registered blocks (the first [`num_registered_blocks`](Self::num_registered_blocks)
    /// of the page table), for pinning or offloading.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// assert_eq!(seq.registered_blocks()[0].sequence_hash(), seq.sequence_hashes()[0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn registered_blocks(&self) -> &[ImmutableBlock<T>] {
        &self.registered
    }

    /// The sequence hash of every full block of [`tokens`](Self::tokens), in order (whether
    /// or not the block is held right now).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher.clone(), vec![1, 2, 3, 4, 5], 0)?;
    /// assert_eq!(seq.sequence_hashes(), hasher.sequence_hashes(&[1, 2, 3, 4]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sequence_hashes(&self) -> &[SequenceHash] {
        self.tokens.sequence_hashes()
    }

    /// Every token: the prompt, then the generated tokens.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![9, 8], 0)?;
    /// assert_eq!(seq.tokens(), &[9, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tokens(&self) -> &[u32] {
        self.tokens.tokens()
    }

    /// Number of tokens (prompt plus generated).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![9, 8, 7], 0)?;
    /// assert_eq!(seq.len(), 3);
    /// assert!(!seq.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the sequence has no token (an empty prompt before any decode).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// assert!(RequestSequence::new(&manager, hasher, Vec::new(), 4)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens whose KV is written or scheduled: the matched prefix, then prefill chunks, then
    /// every decoded token. Equals [`len`](Self::len) once the prefill is scheduled; 0 while
    /// released.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.prefill_chunk(2)?;
    /// assert_eq!(seq.kv_position(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kv_position(&self) -> usize {
        self.kv_position
    }

    /// Tokens whose KV still has to be computed: `len() - kv_position()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// assert_eq!(seq.new_tokens_for_prefill(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_tokens_for_prefill(&self) -> usize {
        self.len() - self.kv_position
    }

    /// Blocks found in the cache by the last [`match_prefix`](Self::match_prefix) or
    /// [`reacquire`](Self::reacquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.match_prefix()?;
    /// assert_eq!(seq.prefix_matched_blocks(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix_matched_blocks(&self) -> usize {
        self.prefix_matched_blocks
    }

    /// Tokens covered by the matched prefix: `prefix_matched_blocks() * block_size()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// assert_eq!(seq.prefix_matched_tokens(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix_matched_tokens(&self) -> usize {
        self.prefix_matched_blocks * self.block_size
    }

    /// Blocks held: registered plus writable.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.allocate(1)?;
    /// assert_eq!(seq.num_blocks(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn num_blocks(&self) -> usize {
        self.registered.len() + self.pending.len()
    }

    /// Registered blocks held (the first ones of the page table).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 0)?;
    /// seq.allocate_for_prefill()?;
    /// seq.register_filled()?;
    /// assert_eq!((seq.num_registered_blocks(), seq.num_blocks()), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn num_registered_blocks(&self) -> usize {
        self.registered.len()
    }

    /// Whether [`release`](Self::release) gave the blocks back (and no
    /// [`reacquire`](Self::reacquire) succeeded since).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, vec![1], 0)?;
    /// assert!(!seq.is_released());
    /// seq.release();
    /// assert!(seq.is_released());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Number of prompt tokens.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// assert_eq!(RequestSequence::new(&manager, hasher, vec![1, 2], 0)?.prompt_len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Number of generated tokens so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, Vec::new(), 4)?;
    /// seq.append_token(5)?;
    /// assert_eq!(seq.output_len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn output_len(&self) -> usize {
        self.len() - self.prompt_len
    }

    /// The most tokens the sequence may generate.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// assert_eq!(RequestSequence::new(&manager, hasher, vec![1], 7)?.max_output_tokens(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_output_tokens(&self) -> usize {
        self.max_output_tokens
    }

    /// Tokens that may still be generated.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = RequestSequence::new(&manager, hasher, Vec::new(), 1)?;
    /// assert_eq!(seq.remaining_output_tokens(), 1);
    /// seq.append_token(5)?;
    /// assert!(seq.is_finished());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remaining_output_tokens(&self) -> usize {
        self.max_output_tokens.saturating_sub(self.output_len())
    }

    /// Whether `max_output_tokens` tokens were generated.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// assert!(RequestSequence::new(&manager, hasher, vec![1], 0)?.is_finished());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.remaining_output_tokens() == 0
    }

    /// Tokens per block.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// assert_eq!(RequestSequence::new(&manager, hasher, vec![1], 0)?.block_size(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The hasher (block size, scheme, extra keys) the sequence hashes with.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::dynamo(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher.clone(), vec![1], 0)?;
    /// assert_eq!(seq.hasher(), &hasher);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hasher(&self) -> &BlockHasher {
        self.tokens.hasher()
    }

    /// The manager the sequence takes its blocks from.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence};
    ///
    /// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(2).build()?;
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = RequestSequence::new(&manager, hasher, vec![1], 0)?;
    /// assert_eq!(seq.manager().id(), manager.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn manager(&self) -> &BlockManager<T> {
        &self.manager
    }
}
