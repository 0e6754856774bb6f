//! Blocks whose parent the converter forgot or never saw: ghosts, re-established prefixes,
//! pending stores, mappings shared between ranks, and the bounds on all of them.

use kvtier_core::Medium;
use kvtier_events::{InstanceId, Payload};

use super::*;

/// Hashes of `prefix ++ more`, from block `from` on.
fn chained(prefix: &[u32], more: &[u32], from: usize) -> Vec<SequenceHash> {
    let all: Vec<u32> = [prefix, more].concat();
    hasher(None).sequence_hashes(&all)[from..].to_vec()
}

#[test]
fn a_store_under_a_removed_parent_re_establishes_the_prefix() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let a = tokens(1, 3);
    let seq = hasher(None).sequence_hashes(&a);
    apply(&mut conv, stored(&[1, 2, 3], None, &a));
    apply(&mut conv, removed(&[3, 2], None));
    // Events about blocks 2 and 3 re-storing were lost; a child of 2 arrives.
    let c = tokens(2, 1);
    let out = apply(&mut conv, stored(&[4], Some(2), &c));
    let expected = [&[seq[1]][..], &chained(&a[..2 * BS], &c, 2)].concat();
    assert_eq!(out.len(), 1, "ancestors and the block share one message");
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected));
    assert_eq!(conv.stats().reestablished_blocks, 1);
    assert_eq!(conv.stats().unplaceable_blocks, 0);
    assert_eq!(
        conv.copies(&h(1), Medium::Gpu),
        1,
        "held already: untouched"
    );
    assert_eq!(conv.copies(&h(2), Medium::Gpu), 1);
    assert_eq!(conv.copies(&h(3), Medium::Gpu), 0, "not an ancestor");
}

#[test]
fn after_a_clear_a_child_of_a_forgotten_block_is_placed() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let a = tokens(1, 2);
    let seq = hasher(None).sequence_hashes(&a);
    apply(&mut conv, stored(&[1, 2], None, &a));
    let cleared = apply(&mut conv, VllmEvent::AllBlocksCleared);
    assert_eq!(cleared[0].payload, Payload::Cleared { medium: None });
    assert!(conv.is_empty());
    // The hot system prompt is computed again, but its store was lost; its child comes.
    let c = tokens(3, 1);
    let out = apply(&mut conv, stored(&[5], Some(2), &c));
    let expected = [&seq[..], &chained(&a, &c, 2)].concat();
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected));
    assert_eq!(conv.stats().reestablished_blocks, 2);
}

#[test]
fn pending_stores_are_placed_when_their_parent_arrives() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let root = tokens(1, 1);
    let kids = tokens(2, 2);
    let grandkid = tokens(3, 1);
    assert!(apply(&mut conv, stored(&[7, 8], Some(99), &kids)).is_empty());
    assert!(apply(&mut conv, stored(&[9], Some(8), &grandkid)).is_empty());
    assert_eq!(conv.pending_blocks(), 3);
    let out = apply(&mut conv, stored(&[99], None, &root));
    let all: Vec<u32> = [&root[..], &kids, &grandkid].concat();
    let expected = hasher(None).sequence_hashes(&all);
    assert_eq!(out.len(), 1);
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected));
    let stats = conv.stats();
    assert_eq!((stats.pending_blocks, stats.placed_late), (0, 3));
    assert_eq!(stats.unplaceable_blocks, 0);
    assert_eq!(conv.lookup(&h(9)), Some(expected[3]));
}

#[test]
fn ranks_of_one_source_share_what_they_learn() {
    let root = tokens(1, 2);
    let kid = tokens(2, 1);
    let expected = hasher(None).sequence_hashes(&[&root[..], &kid].concat());
    // Rank 1 stores a child of a prefix only rank 0 has seen.
    let mut rank0 = VllmConverter::new(InstanceId(1), config());
    let mut rank1 = VllmConverter::new(InstanceId(2), config());
    apply(&mut rank0, stored(&[1, 2], None, &root));
    let batch = VllmBatch {
        ts: 0.0,
        events: vec![stored(&[3], Some(2), &kid)],
        dp_rank: Some(1),
    };
    let mut out = Vec::new();
    rank1.apply_batch_with_peers(&batch, &[&rank0], &mut out);
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected));
    assert_eq!(rank1.stats().learnt_from_peers, 2);

    // The other way round: rank 1's child waits, then rank 0 learns its parent.
    let mut rank0 = VllmConverter::new(InstanceId(1), config());
    let mut rank1 = VllmConverter::new(InstanceId(2), config());
    assert!(apply(&mut rank1, stored(&[3], Some(2), &kid)).is_empty());
    apply(&mut rank0, stored(&[1, 2], None, &root));
    let mut out = Vec::new();
    rank1.resolve_from_peer(&rank0, &mut out);
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected));
    assert_eq!(rank1.pending_blocks(), 0);
    assert_eq!(out[0].event_id, 1);
}

#[test]
fn pending_stores_are_bounded_and_dropped_ones_counted() {
    let mut conv = VllmConverter::new(InstanceId(1), config().with_max_pending_blocks(3));
    apply(&mut conv, stored(&[1, 2], Some(100), &tokens(1, 2)));
    apply(&mut conv, stored(&[3, 4], Some(200), &tokens(2, 2)));
    let stats = conv.stats();
    assert_eq!((stats.pending_blocks, stats.pending_dropped), (2, 2));
    assert_eq!(stats.unplaceable_blocks, 2);
    // Too big to ever wait.
    apply(&mut conv, stored(&[5, 6, 7, 8], Some(300), &tokens(3, 4)));
    assert_eq!(conv.stats().unplaceable_blocks, 6);
    assert_eq!(conv.stats().pending_dropped, 6);
    // The dropped store does not come back when its parent does.
    assert_eq!(
        apply(&mut conv, stored(&[100], None, &tokens(4, 1))).len(),
        1
    );
    assert_eq!(conv.len(), 1);
    // A clear drops what waits.
    apply(&mut conv, VllmEvent::AllBlocksCleared);
    let stats = conv.stats();
    assert_eq!((stats.pending_blocks, stats.pending_dropped), (0, 8));
}

#[test]
fn ghosts_are_bounded() {
    let mut conv = VllmConverter::new(InstanceId(1), config().with_max_ghosts(2));
    for i in 0..10 {
        apply(&mut conv, stored(&[i], None, &tokens(i as u32, 1)));
        apply(&mut conv, removed(&[i], None));
    }
    assert_eq!(conv.map_entries(), 2);
    // The newest ghosts are the ones remembered.
    let out = apply(&mut conv, stored(&[50], Some(9), &tokens(50, 1)));
    assert_eq!(batch_of(&out[0]).2.len(), 2);
    assert!(apply(&mut conv, stored(&[51], Some(0), &tokens(51, 1))).is_empty());
    assert_eq!(conv.pending_blocks(), 1);
}

#[test]
fn a_block_removed_while_waiting_is_placed_as_not_held() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let root = tokens(1, 1);
    let kids = tokens(2, 2);
    apply(&mut conv, stored(&[7, 8], Some(99), &kids));
    // The engine evicts block 8 before the router learns where 7 and 8 go.
    assert!(apply(&mut conv, removed(&[8], None)).is_empty());
    let stats = conv.stats();
    assert_eq!((stats.pending_removes, stats.unknown_removes), (1, 0));
    // A second removal of it is unknown.
    apply(&mut conv, removed(&[8], None));
    assert_eq!(conv.stats().unknown_removes, 1);
    let out = apply(&mut conv, stored(&[99], None, &root));
    let all: Vec<u32> = [&root[..], &kids].concat();
    let expected = hasher(None).sequence_hashes(&all);
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &expected[..2]));
    assert_eq!(conv.copies(&h(8), Medium::Gpu), 0);
    // Its mapping stays for its children: a store under it shows it is held again.
    let more = tokens(3, 1);
    let out = apply(&mut conv, stored(&[9], Some(8), &more));
    let chain = hasher(None).sequence_hashes(&[&all[..], &more].concat());
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &chain[2..]));
}
