//! Copy counting per (block, medium), and offloaded copies announced without tokens.

use kvtier_core::Medium;
use kvtier_events::InstanceId;

use super::*;

#[test]
fn each_copy_is_counted_and_the_block_held_until_the_last_goes() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 2);
    let seq = hasher(None).sequence_hashes(&t);
    let first = apply(&mut conv, stored(&[1, 2], None, &t));
    assert_eq!(batch_of(&first[0]), create(Medium::Gpu, &seq));
    // A second request caches a second physical copy: counted, not announced again.
    assert!(apply(&mut conv, stored(&[1, 2], None, &t)).is_empty());
    assert_eq!(conv.copies(&h(1), Medium::Gpu), 2);
    assert_eq!(conv.stats().duplicate_stores, 2);
    // vLLM removes each copy: the first removal keeps the blocks indexed.
    assert!(apply(&mut conv, removed(&[2, 1], None)).is_empty());
    assert_eq!(conv.stats().released_copies, 2);
    assert_eq!(conv.lookup(&h(1)), Some(seq[0]));
    let last = apply(&mut conv, removed(&[2, 1], None));
    assert_eq!(batch_of(&last[0]), remove(Medium::Gpu, &[seq[1], seq[0]]));
    assert!(conv.is_empty());
    assert_eq!(conv.stats().removed_blocks, 2);
    assert_eq!(
        last[0].event_id, 2,
        "only the 0→1 and 1→0 transitions are messages"
    );
}

#[test]
fn offloaded_copies_are_indexed_and_outlive_the_gpu_copy() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 3);
    let seq = hasher(None).sequence_hashes(&t);
    apply(&mut conv, stored(&[1, 2, 3], None, &t));
    // The offloading connector: empty tokens, no parent, medium CPU.
    let cpu = apply(&mut conv, offloaded(&[1, 2], Medium::Cpu));
    assert_eq!(batch_of(&cpu[0]), create(Medium::Cpu, &seq[..2]));
    let gpu_gone = apply(&mut conv, removed(&[1, 2, 3], Some(Medium::Gpu)));
    assert_eq!(
        batch_of(&gpu_gone[0]),
        remove(Medium::Gpu, &[seq[2], seq[1], seq[0]])
    );
    // Still indexed on the CPU.
    assert_eq!(conv.lookup(&h(2)), Some(seq[1]));
    assert_eq!(conv.copies(&h(2), Medium::Cpu), 1);
    // A known hash is placeable from its ghost too: block 3 left the GPU, its CPU copy comes.
    let late = apply(&mut conv, offloaded(&[3], Medium::Cpu));
    assert_eq!(batch_of(&late[0]), create(Medium::Cpu, &seq[2..]));
    // An unknown hash cannot be placed without tokens.
    assert!(apply(&mut conv, offloaded(&[42], Medium::Cpu)).is_empty());
    assert_eq!(conv.stats().unplaceable_blocks, 1);
    let cpu_gone = apply(&mut conv, removed(&[3, 2, 1], Some(Medium::Cpu)));
    assert_eq!(
        batch_of(&cpu_gone[0]),
        remove(Medium::Cpu, &[seq[2], seq[1], seq[0]])
    );
    assert!(conv.is_empty());
}

#[test]
fn offloaded_copies_are_recognised_from_another_rank() {
    let t = tokens(1, 1);
    let seq = hasher(None).sequence_hashes(&t);
    let mut rank0 = VllmConverter::new(InstanceId(1), config());
    let mut rank1 = VllmConverter::new(InstanceId(2), config());
    apply(&mut rank0, stored(&[1], None, &t));
    let mut out = Vec::new();
    let batch = VllmBatch {
        ts: 0.0,
        events: vec![offloaded(&[1], Medium::Cpu)],
        dp_rank: Some(1),
    };
    rank1.apply_batch_with_peers(&batch, &[&rank0], &mut out);
    assert_eq!(batch_of(&out[0]), create(Medium::Cpu, &seq));
    assert_eq!(out[0].instance, InstanceId(2));
    assert_eq!(rank1.stats().learnt_from_peers, 1);
}

#[test]
fn a_store_that_remaps_a_hash_removes_the_old_one_first() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let (a, b) = (tokens(1, 1), tokens(2, 1));
    apply(&mut conv, stored(&[1], None, &a));
    let out = apply(&mut conv, stored(&[1], None, &b));
    let old = hasher(None).sequence_hashes(&a);
    let new = hasher(None).sequence_hashes(&b);
    assert_eq!(batch_of(&out[0]), remove(Medium::Gpu, &old));
    assert_eq!(batch_of(&out[1]), create(Medium::Gpu, &new));
    assert_eq!(conv.stats().conflicting_stores, 1);
    assert_eq!(conv.copies(&h(1), Medium::Gpu), 1);
}
