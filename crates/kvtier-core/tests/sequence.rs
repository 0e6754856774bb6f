//! Public behaviour of [`RequestSequence`]: prefill, prefix sharing, decode registration,
//! preemption (release / reacquire), tail-first release order, allocation failures without
//! leaks, output limits, chunked prefill, speculative rollback and Drop; then a proptest of
//! random operation sequences against a token model, with an adversary that hogs blocks.

use std::collections::HashSet;
use std::sync::Arc;

use kvtier_core::{
    AllocError, BlockHasher, BlockManager, DuplicationPolicy, ExtraKeys, FifoFactory, G1,
    HashScheme, MutableBlock, RequestSequence, SequenceError,
};
use proptest::prelude::*;

const BS: usize = 4;

fn manager(blocks: usize) -> BlockManager<G1> {
    BlockManager::<G1>::builder()
        .with_block_count(blocks)
        .with_block_size(BS)
        .build()
        .expect("valid manager")
}

/// One shard and FIFO order, so the eviction order is exactly the release order.
fn fifo_manager(blocks: usize) -> BlockManager<G1> {
    BlockManager::<G1>::builder()
        .with_block_count(blocks)
        .with_block_size(BS)
        .with_policy(Arc::new(FifoFactory::new()))
        .with_shards(1)
        .build()
        .expect("valid manager")
}

fn hasher() -> BlockHasher {
    BlockHasher::new(BS, HashScheme::default(), ExtraKeys::new()).expect("valid hasher")
}

fn tokens(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

/// A sequence with its prompt prefilled (prefix matched, blocks allocated and registered).
fn prefilled(m: &BlockManager<G1>, prompt: Vec<u32>, max_out: usize) -> RequestSequence<G1> {
    let mut seq = RequestSequence::new(m, hasher(), prompt, max_out).expect("sequence");
    seq.match_prefix().expect("match");
    seq.allocate_for_prefill().expect("allocate");
    seq.register_filled().expect("register");
    seq
}

/// Every slot is back in the reset or inactive pool and no guard is outstanding.
fn assert_no_leak(m: &BlockManager<G1>) {
    assert_eq!(m.available_blocks(), m.total_blocks());
    let snap = m.metrics();
    assert_eq!(snap.inflight_mutable, 0);
    assert_eq!(snap.inflight_immutable, 0);
    assert_eq!(
        snap.reset_pool_size + snap.inactive_pool_size,
        snap.total_blocks
    );
}

#[test]
fn prefill_on_empty_cache_registers_every_full_block() {
    let m = manager(16);
    let prompt = tokens(0..14); // 3 full blocks + 2 tokens
    let mut seq = RequestSequence::new(&m, hasher(), prompt.clone(), 8).unwrap();
    assert_eq!(seq.match_prefix().unwrap(), 0);
    assert_eq!(seq.new_tokens_for_prefill(), 14);
    // 14 prompt tokens + the first generated token fit 4 blocks.
    assert_eq!(seq.allocate_for_prefill().unwrap(), 4);
    assert_eq!(seq.register_filled().unwrap(), 3);

    let expected = hasher().sequence_hashes(&prompt);
    assert_eq!(seq.sequence_hashes(), expected);
    for (block, hash) in seq.registered_blocks().iter().zip(&expected) {
        assert_eq!(block.sequence_hash(), *hash);
        assert!(m.contains(*hash));
    }
    assert_eq!(seq.num_blocks(), 4);
    assert_eq!(seq.num_registered_blocks(), 3);
    assert_eq!(seq.kv_position(), 14);
    assert_eq!(seq.new_tokens_for_prefill(), 0);
    assert_eq!(m.metrics().registrations, 3);
}

#[test]
fn second_request_sharing_the_prefix_matches_the_same_blocks() {
    let m = manager(16);
    let first = prefilled(&m, tokens(0..12), 4);
    let mut prompt = tokens(0..8);
    prompt.extend([99, 98, 97, 96, 95]); // shares blocks 0-1, diverges in block 2
    let mut second = RequestSequence::new(&m, hasher(), prompt, 4).unwrap();
    assert_eq!(second.match_prefix().unwrap(), 2);
    assert_eq!(second.prefix_matched_tokens(), 8);
    assert_eq!(second.new_tokens_for_prefill(), 5);
    assert_eq!(second.block_ids(), first.block_ids()[..2]);
    assert_eq!(second.allocate_for_prefill().unwrap(), 2);
    assert_eq!(second.register_filled().unwrap(), 1);
    assert_ne!(second.block_ids()[2], first.block_ids()[2]);

    // The shared blocks stay active while either request holds them.
    drop(first);
    let shared = second.registered_blocks()[0].clone();
    assert_eq!(shared.use_count(), 2);
}

#[test]
fn match_after_the_first_request_finished_resurrects_cached_blocks() {
    let m = manager(8);
    let ids = prefilled(&m, tokens(0..8), 0).block_ids();
    assert_eq!(m.metrics().inactive_pool_size, 2);
    let mut again = RequestSequence::new(&m, hasher(), tokens(0..8), 4).unwrap();
    assert_eq!(again.match_prefix().unwrap(), 2);
    assert_eq!(again.block_ids(), ids);
    assert_eq!(again.new_tokens_for_prefill(), 0);
    assert_eq!(m.metrics().inactive_pool_size, 0);
}

#[test]
fn reject_policy_keeps_the_block_the_manager_returns() {
    let m = BlockManager::<G1>::builder()
        .with_block_count(8)
        .with_block_size(BS)
        .with_duplication_policy(DuplicationPolicy::Reject)
        .build()
        .unwrap();
    let first = prefilled(&m, tokens(0..8), 0);
    // No match: both sequences fill the same blocks independently.
    let mut second = RequestSequence::new(&m, hasher(), tokens(0..8), 0).unwrap();
    second.allocate_for_prefill().unwrap();
    let own = second.block_ids();
    assert_eq!(second.register_filled().unwrap(), 2);
    assert_eq!(second.block_ids(), first.block_ids());
    assert_ne!(second.block_ids(), own);
    assert_eq!(m.available_blocks(), 6); // the rejected slots went back
}

#[test]
fn decode_across_a_block_boundary_registers_the_block() {
    let m = manager(8);
    let mut seq = prefilled(&m, tokens(0..6), 16);
    assert_eq!(seq.append_token(100).unwrap(), None);
    assert_eq!(seq.num_registered_blocks(), 1);
    assert_eq!(seq.append_token(101).unwrap(), Some(1));
    assert_eq!(seq.num_registered_blocks(), 2);

    let mut all = tokens(0..6);
    all.extend([100, 101]);
    let from_slice = hasher().sequence_hashes(&all);
    assert_eq!(seq.registered_blocks()[1].sequence_hash(), from_slice[1]);
    assert!(m.contains(from_slice[1]));
    assert_eq!(seq.tokens(), all);
    assert_eq!(seq.kv_position(), 8);

    // The block was full: the next token allocates a new one lazily.
    assert_eq!(seq.num_blocks(), 2);
    assert_eq!(seq.append_token(102).unwrap(), None);
    assert_eq!(seq.num_blocks(), 3);
}

#[test]
fn release_then_reacquire_restores_hashes_and_page_table() {
    let m = manager(16);
    let mut seq = prefilled(&m, tokens(0..10), 16);
    for t in 200..205 {
        seq.append_token(t).unwrap();
    }
    let hashes = seq.sequence_hashes().to_vec();
    let registered: Vec<_> = seq
        .registered_blocks()
        .iter()
        .map(|b| b.sequence_hash())
        .collect();
    let page_len = seq.block_ids().len();
    let ids = seq.block_ids();

    seq.release();
    assert!(seq.is_released());
    assert_eq!(seq.num_blocks(), 0);
    assert_eq!(seq.kv_position(), 0);
    assert_eq!(m.available_blocks(), 16);
    assert_eq!(seq.append_token(1), Err(SequenceError::Released));

    // Nothing was evicted in between: every full block matches, the partial tail is new.
    let recompute = seq.reacquire().unwrap();
    assert!(!seq.is_released());
    assert_eq!(seq.prefix_matched_blocks(), 3);
    assert_eq!(recompute, 15 - 12);
    assert_eq!(seq.sequence_hashes(), hashes);
    let again: Vec<_> = seq
        .registered_blocks()
        .iter()
        .map(|b| b.sequence_hash())
        .collect();
    assert_eq!(again, registered);
    assert_eq!(seq.block_ids().len(), page_len);
    assert_eq!(seq.block_ids()[..3], ids[..3]);
    assert_eq!(seq.kv_position(), seq.len());
    assert_eq!(seq.reacquire(), Err(SequenceError::NotReleased));

    // Decoding continues from where it stopped.
    assert_eq!(seq.append_token(205).unwrap(), Some(3));
    let mut all = tokens(0..10);
    all.extend(200..206);
    assert_eq!(seq.sequence_hashes(), hasher().sequence_hashes(&all));
}

#[test]
fn reacquire_after_eviction_reregisters_the_missing_blocks() {
    let m = fifo_manager(4);
    let mut seq = prefilled(&m, tokens(0..12), 4);
    let hashes = seq.sequence_hashes().to_vec();
    seq.release();
    // Another request takes three blocks: the free one (the sequence's writable tail) and
    // the two deepest cached blocks.
    let other = m.allocate_blocks(3).unwrap();
    assert!(m.contains(hashes[0]));
    assert!(!m.contains(hashes[2]));
    assert!(!m.contains(hashes[1]));
    drop(other);

    assert_eq!(seq.reacquire().unwrap(), 12 - 4);
    assert_eq!(seq.prefix_matched_blocks(), 1);
    assert_eq!(seq.num_registered_blocks(), 3);
    for h in &hashes {
        assert!(m.contains(*h));
    }
}

#[test]
fn reacquire_failure_leaves_the_sequence_released_and_takes_nothing() {
    let m = fifo_manager(4);
    let mut seq = prefilled(&m, tokens(0..12), 4);
    seq.release();
    let hog = m.allocate_blocks(3).unwrap(); // the free slot, then evicts blocks 2 and 1
    assert_eq!(m.available_blocks(), 1);
    // Block 0 matches, but blocks 1 and 2 need slots and none is left.
    assert!(matches!(
        seq.reacquire(),
        Err(SequenceError::Alloc {
            source: AllocError::Exhausted { requested: 2, .. }
        })
    ));
    assert!(seq.is_released());
    assert_eq!(seq.num_blocks(), 0);
    drop(hog);
    assert_no_leak(&m);
    assert_eq!(seq.reacquire().unwrap(), 12 - 4);
}

#[test]
fn release_is_tail_first() {
    let m = fifo_manager(4);
    let mut seq = prefilled(&m, tokens(0..16), 0);
    assert_eq!(seq.num_blocks(), 4);
    assert_eq!(m.available_blocks(), 0);
    let hashes = seq.sequence_hashes().to_vec();
    seq.release();
    assert_eq!(m.metrics().inactive_pool_size, 4);

    // FIFO evicts in release order: the deepest block went first, the root last.
    let mut taken = Vec::new();
    for depth in (0..4).rev() {
        let (block, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
        assert_eq!(evicted, [hashes[depth]]);
        taken.extend(block); // keep the slot so the next allocation evicts again
    }
}

#[test]
fn drop_releases_tail_first_and_everything() {
    let m = fifo_manager(4);
    let seq = prefilled(&m, tokens(0..16), 0);
    let hashes = seq.sequence_hashes().to_vec();
    drop(seq);
    assert_no_leak(&m);
    let (_blocks, evicted) = m.allocate_blocks_with_evictions(2).unwrap();
    assert_eq!(evicted, [hashes[3], hashes[2]]);
}

#[test]
fn allocation_failure_mid_decode_returns_an_error_and_leaks_nothing() {
    let m = manager(3);
    let mut seq = prefilled(&m, tokens(0..4), 16); // block 0 + the first generated token's block
    let hog = m.allocate_blocks(1).unwrap(); // the last free block
    for t in 0..4 {
        seq.append_token(t).unwrap();
    }
    assert_eq!(seq.num_blocks(), 2);
    let before = (seq.tokens().to_vec(), seq.block_ids(), seq.kv_position());
    let err = seq.append_token(4).unwrap_err();
    assert!(matches!(
        err,
        SequenceError::Alloc {
            source: AllocError::Exhausted { requested: 1, .. }
        }
    ));
    // The token was not appended and nothing changed.
    assert_eq!(
        (seq.tokens().to_vec(), seq.block_ids(), seq.kv_position()),
        before
    );
    // The sequence recovers once a block is free.
    drop(hog);
    assert_eq!(seq.append_token(4).unwrap(), None);
    drop(seq);
    assert_no_leak(&m);
}

#[test]
fn allocation_failure_in_prefill_is_all_or_nothing() {
    let m = manager(3);
    let mut seq = RequestSequence::new(&m, hasher(), tokens(0..16), 4).unwrap();
    assert_eq!(seq.match_prefix().unwrap(), 0);
    assert!(matches!(
        seq.allocate_for_prefill(),
        Err(SequenceError::Alloc { .. })
    ));
    assert_eq!(seq.num_blocks(), 0);
    assert_eq!(m.available_blocks(), 3);
    drop(seq);
    assert_no_leak(&m);
}

#[test]
fn max_output_tokens_is_enforced() {
    let m = manager(8);
    let mut seq = prefilled(&m, tokens(0..3), 2);
    assert_eq!(seq.remaining_output_tokens(), 2);
    seq.append_token(7).unwrap();
    seq.append_token(8).unwrap();
    assert!(seq.is_finished());
    assert_eq!(
        seq.append_token(9),
        Err(SequenceError::MaxOutputTokens {
            max_output_tokens: 2,
            requested: 1,
            remaining: 0
        })
    );
    assert_eq!(seq.len(), 5);
    assert_eq!(seq.output_len(), 2);
    // No block beyond what the sequence can fill.
    assert!(matches!(
        seq.allocate(1),
        Err(SequenceError::TooManyBlocks { max: 2, .. })
    ));
}

#[test]
fn decode_before_prefill_is_refused() {
    let m = manager(8);
    let mut seq = RequestSequence::new(&m, hasher(), tokens(0..6), 4).unwrap();
    assert_eq!(
        seq.append_token(1),
        Err(SequenceError::PrefillIncomplete {
            kv_position: 0,
            len: 6
        })
    );
    seq.allocate(1).unwrap();
    assert_eq!(
        seq.match_prefix(),
        Err(SequenceError::BlocksHeld { held: 1 })
    );
}

#[test]
fn hasher_and_manager_block_sizes_must_agree() {
    let m = manager(4);
    let h = BlockHasher::new(8, HashScheme::default(), ExtraKeys::new()).unwrap();
    assert_eq!(
        RequestSequence::new(&m, h, tokens(0..8), 1).unwrap_err(),
        SequenceError::BlockSizeMismatch {
            hasher: 8,
            manager: BS
        }
    );
}

#[test]
fn salt_isolates_requests() {
    let m = manager(8);
    let salted = |s: &[u8]| {
        BlockHasher::new(
            BS,
            HashScheme::default(),
            ExtraKeys::new().with_salt(s.to_vec()),
        )
        .unwrap()
    };
    let mut a = RequestSequence::new(&m, salted(b"tenant-a"), tokens(0..8), 0).unwrap();
    a.allocate_for_prefill().unwrap();
    a.register_filled().unwrap();
    let mut b = RequestSequence::new(&m, salted(b"tenant-b"), tokens(0..8), 0).unwrap();
    assert_eq!(b.match_prefix().unwrap(), 0);
    let mut c = RequestSequence::new(&m, salted(b"tenant-a"), tokens(0..8), 0).unwrap();
    assert_eq!(c.match_prefix().unwrap(), 2);
}

#[test]
fn chunked_prefill_registers_blocks_as_chunks_complete() {
    let m = manager(8);
    let prompt = tokens(0..11);
    let mut seq = RequestSequence::new(&m, hasher(), prompt.clone(), 4).unwrap();
    assert_eq!(seq.prefill_chunk(3).unwrap(), 0);
    assert_eq!((seq.num_blocks(), seq.kv_position()), (1, 3));
    assert_eq!(seq.prefill_chunk(6).unwrap(), 2);
    assert_eq!((seq.num_blocks(), seq.kv_position()), (3, 9));
    assert_eq!(
        seq.prefill_chunk(3),
        Err(SequenceError::ChunkTooLarge {
            requested: 3,
            remaining: 2
        })
    );
    assert!(matches!(
        seq.append_token(1),
        Err(SequenceError::PrefillIncomplete { .. })
    ));
    assert_eq!(seq.prefill_chunk(2).unwrap(), 0);
    assert_eq!(seq.new_tokens_for_prefill(), 0);
    assert_eq!(seq.append_token(50).unwrap(), Some(2));
    let mut all = prompt;
    all.push(50);
    let expected = hasher().sequence_hashes(&all);
    let got: Vec<_> = seq
        .registered_blocks()
        .iter()
        .map(|b| b.sequence_hash())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn chunked_prefill_after_a_prefix_match() {
    let m = manager(8);
    let _warm = prefilled(&m, tokens(0..8), 0);
    let mut seq = RequestSequence::new(&m, hasher(), tokens(0..13), 4).unwrap();
    assert_eq!(seq.match_prefix().unwrap(), 2);
    assert_eq!(seq.kv_position(), 8);
    assert_eq!(seq.prefill_chunk(5).unwrap(), 1);
    assert_eq!(seq.num_registered_blocks(), 3);
    assert_eq!(seq.num_blocks(), 4);
}

#[test]
fn speculative_append_and_rollback_drop_blocks_lifo() {
    let m = fifo_manager(8);
    let mut seq = prefilled(&m, tokens(0..4), 16); // block 0 registered, block 1 ready
    let base = seq.block_ids();
    // Drafts fill block 1, block 2 and one token of block 3.
    assert_eq!(
        seq.append_tokens(&[10, 11, 12, 13, 14, 15, 16, 17, 18])
            .unwrap(),
        1..3
    );
    assert_eq!(seq.num_blocks(), 4);
    let draft_hashes = seq.sequence_hashes().to_vec();

    // Reject the last 6 drafts: keep 10, 11, 12. Block 3 and block 2 go (deepest first),
    // block 1 became partial again and is replaced by a writable block.
    let rewrite = seq.rollback(6).unwrap();
    assert_eq!(rewrite, 3);
    assert_eq!(seq.tokens(), [0, 1, 2, 3, 10, 11, 12]);
    assert_eq!(seq.num_blocks(), 2);
    assert_eq!(seq.num_registered_blocks(), 1);
    assert_eq!(seq.block_ids()[0], base[0]);
    assert_eq!(seq.kv_position(), 7);
    assert_eq!(seq.sequence_hashes(), &draft_hashes[..1]);

    // The rejected blocks stay cached; FIFO order shows block 2 was released before block 1.
    let (_taken, evicted) = m.allocate_blocks_with_evictions(8 - 2).unwrap();
    assert_eq!(evicted, [draft_hashes[2], draft_hashes[1]]);
    drop(_taken);

    // Decoding continues from the rolled-back state.
    assert_eq!(seq.append_token(20).unwrap(), Some(1));
    assert_eq!(
        seq.sequence_hashes(),
        hasher().sequence_hashes(&[0, 1, 2, 3, 10, 11, 12, 20])
    );
    assert_eq!(
        seq.rollback(5),
        Err(SequenceError::RollbackTooFar {
            requested: 5,
            generated: 4
        })
    );
    drop(seq);
    assert_no_leak(&m);
}

#[test]
fn append_tokens_respects_limits_atomically() {
    let m = manager(3);
    let mut seq = prefilled(&m, tokens(0..4), 16);
    assert!(matches!(
        seq.append_tokens(&[1; 17]),
        Err(SequenceError::MaxOutputTokens { requested: 17, .. })
    ));
    // 4 + 9 tokens need 4 blocks; only 3 exist.
    assert!(matches!(
        seq.append_tokens(&[1; 9]),
        Err(SequenceError::Alloc { .. })
    ));
    assert_eq!(seq.len(), 4);
    assert_eq!(seq.num_blocks(), 2);
    assert_eq!(seq.append_tokens(&[]).unwrap(), 1..1);
}

#[test]
fn empty_prompt_decodes_from_scratch() {
    let m = manager(4);
    let mut seq = RequestSequence::new(&m, hasher(), Vec::new(), 8).unwrap();
    assert_eq!(seq.match_prefix().unwrap(), 0);
    for t in 0..3 {
        assert_eq!(seq.append_token(t).unwrap(), None);
    }
    assert_eq!(seq.append_token(3).unwrap(), Some(0));
    assert_eq!(seq.num_blocks(), 1);
}

#[test]
fn sequence_is_send_and_sync() {
    fn check<S: Send + Sync>() {}
    check::<RequestSequence<G1>>();
}

// ---------------------------------------------------------------------------------------------
// Model-based property test.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Append(u32),
    AppendMany(Vec<u32>),
    Rollback(usize),
    Release,
    Reacquire,
    Chunk(usize),
    RegisterFilled,
    AllocateForPrefill,
    /// Another user takes `n` blocks (allocation failures, evictions of our cached blocks).
    Hog(usize),
    Unhog,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..3).prop_map(Op::Append),
        2 => proptest::collection::vec(0u32..3, 0..7).prop_map(Op::AppendMany),
        2 => (0usize..7).prop_map(Op::Rollback),
        1 => Just(Op::Release),
        2 => Just(Op::Reacquire),
        1 => (0usize..6).prop_map(Op::Chunk),
        1 => Just(Op::RegisterFilled),
        1 => Just(Op::AllocateForPrefill),
        1 => (1usize..4).prop_map(Op::Hog),
        1 => Just(Op::Unhog),
    ]
}

struct Model {
    tokens: Vec<u32>,
    released: bool,
}

fn check_invariants(m: &BlockManager<G1>, seq: &RequestSequence<G1>, model: &Model) {
    assert_eq!(seq.tokens(), model.tokens);
    assert_eq!(
        seq.sequence_hashes(),
        hasher().sequence_hashes(&model.tokens)
    );
    assert_eq!(seq.is_released(), model.released);
    let ids = seq.block_ids();
    assert_eq!(ids.len(), seq.num_blocks());
    let kv = seq.kv_position();
    if model.released {
        assert_eq!((seq.num_blocks(), kv), (0, 0));
        return;
    }
    assert!(kv <= seq.len());
    assert!(seq.num_blocks() * BS >= kv);
    assert_eq!(seq.num_registered_blocks(), kv / BS);
    let max = (seq.prompt_len() + seq.max_output_tokens()).div_ceil(BS);
    assert!(
        seq.num_blocks() <= max,
        "{} blocks > max {max}",
        seq.num_blocks()
    );
    for (block, hash) in seq.registered_blocks().iter().zip(seq.sequence_hashes()) {
        assert_eq!(block.sequence_hash(), *hash);
        assert!(m.contains(*hash));
    }
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
}

fn run_model(dup: DuplicationPolicy, prompt: Vec<u32>, max_out: usize, ops: Vec<Op>) {
    let m = BlockManager::<G1>::builder()
        .with_block_count(6)
        .with_block_size(BS)
        .with_duplication_policy(dup)
        .with_shards(2)
        .build()
        .unwrap();
    // A cached neighbour that shares a prefix, so matches and evictions happen.
    drop(prefilled(&m, prompt.iter().copied().take(5).collect(), 0));
    let mut seq = RequestSequence::new(&m, hasher(), prompt.clone(), max_out).unwrap();
    let mut model = Model {
        tokens: prompt,
        released: false,
    };
    seq.match_prefix().unwrap();
    let mut hog: Vec<MutableBlock<G1>> = Vec::new();
    for op in ops {
        let was_released = model.released;
        let prompt_len = seq.prompt_len();
        let before = (
            seq.block_ids(),
            seq.kv_position(),
            seq.num_registered_blocks(),
            seq.prefix_matched_blocks(),
        );
        let result: Result<(), SequenceError> = match &op {
            Op::Append(t) => seq.append_token(*t).map(|filled| {
                let full_now = (model.tokens.len() + 1) % BS == 0;
                assert_eq!(filled.is_some(), full_now);
                model.tokens.push(*t);
            }),
            Op::AppendMany(v) => seq.append_tokens(v).map(|range| {
                model.tokens.extend_from_slice(v);
                assert_eq!(range.end, model.tokens.len() / BS);
            }),
            Op::Rollback(n) => seq.rollback(*n).map(|rewrite| {
                let new_len = model.tokens.len() - n;
                assert!(rewrite < BS && rewrite <= new_len % BS);
                model.tokens.truncate(new_len);
            }),
            Op::Release => {
                seq.release();
                model.released = true;
                Ok(())
            }
            Op::Reacquire => seq.reacquire().map(|recompute| {
                assert_eq!(recompute, seq.len() - seq.prefix_matched_tokens());
                model.released = false;
            }),
            Op::Chunk(n) => seq.prefill_chunk(*n).map(drop),
            Op::RegisterFilled => seq.register_filled().map(drop),
            Op::AllocateForPrefill => seq.allocate_for_prefill().map(drop),
            Op::Hog(n) => {
                if let Ok(blocks) = m.allocate_blocks(*n) {
                    hog.extend(blocks);
                }
                Ok(())
            }
            Op::Unhog => {
                hog.clear();
                Ok(())
            }
        };
        if let Err(e) = &result {
            // A failed call changes nothing.
            let after = (
                seq.block_ids(),
                seq.kv_position(),
                seq.num_registered_blocks(),
                seq.prefix_matched_blocks(),
            );
            assert_eq!(
                after, before,
                "{op:?} failed with {e:?} but changed the sequence"
            );
            // Refusals are explained by the state, never arbitrary.
            match e {
                SequenceError::Released => assert!(was_released),
                SequenceError::NotReleased => assert!(!was_released),
                SequenceError::RollbackTooFar { generated, .. } => {
                    assert_eq!(*generated, model.tokens.len() - prompt_len)
                }
                SequenceError::MaxOutputTokens { .. }
                | SequenceError::PrefillIncomplete { .. }
                | SequenceError::ChunkTooLarge { .. }
                | SequenceError::TooManyBlocks { .. }
                | SequenceError::Alloc { .. } => {}
                other => panic!("unexpected error {other:?} for {op:?}"),
            }
        }
        check_invariants(&m, &seq, &model);
    }
    drop(seq);
    drop(hog);
    assert_no_leak(&m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_the_sequence_consistent(
        reject in any::<bool>(),
        prompt in proptest::collection::vec(0u32..3, 0..14),
        max_out in 0usize..14,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let dup = if reject { DuplicationPolicy::Reject } else { DuplicationPolicy::Allow };
        run_model(dup, prompt, max_out, ops);
    }
}
