//! Chains, LoRA, block sizes, removes, media, clears, groups, schemes, skipped events.

use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, Medium};
use kvtier_events::{EventKind, InstanceId, Payload};

use super::*;

#[test]
fn chains_across_events_match_hashing_the_whole_prefix() {
    let mut conv = VllmConverter::new(InstanceId(9), config());
    let a = tokens(1, 5);
    let out1 = apply(&mut conv, stored(&[1, 2, 3], None, &a[..3 * BS]));
    let out2 = apply(&mut conv, stored(&[4, 5], Some(3), &a[3 * BS..]));
    let expected = hasher(None).sequence_hashes(&a);
    assert_eq!(
        batch_of(&out1[0]),
        (EventKind::Create, Medium::Gpu, expected[..3].to_vec())
    );
    assert_eq!(batch_of(&out2[0]).2, expected[3..]);
    assert_eq!(conv.lookup(&h(5)), Some(expected[4]));
    assert_eq!(expected[4].position(), 4);
    // A branch off block 2 (position 1) continues at position 2.
    let b = tokens(2, 1);
    let out3 = apply(&mut conv, stored(&[6], Some(2), &b));
    let mut prefix = a[..2 * BS].to_vec();
    prefix.extend(&b);
    assert_eq!(
        batch_of(&out3[0]).2,
        [hasher(None).sequence_hashes(&prefix)[2]]
    );
    assert_eq!(
        [&out1, &out2, &out3].map(|o| o[0].event_id),
        [1, 2, 3],
        "event ids are contiguous"
    );
    assert!(out1.iter().all(|m| m.instance == InstanceId(9)));
    assert_eq!(conv.stats().stored_blocks, 6);
}

#[test]
fn lora_and_model_change_the_hashes() {
    let t = tokens(3, 1);
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let mut with_lora = stored(&[1], None, &t);
    if let VllmEvent::BlockStored { lora_name, .. } = &mut with_lora {
        *lora_name = Some("sql".into());
    }
    let lora_hash = batch_of(&apply(&mut conv, with_lora)[0]).2[0];
    let plain_hash = batch_of(&apply(&mut conv, stored(&[2], None, &t))[0]).2[0];
    assert_eq!(lora_hash, hasher(Some("sql")).sequence_hashes(&t)[0]);
    assert_eq!(plain_hash, hasher(None).sequence_hashes(&t)[0]);
    assert_ne!(lora_hash, plain_hash);
    let no_model = BlockHasher::new(BS, HashScheme::Kvtier, ExtraKeys::new()).unwrap();
    assert_ne!(plain_hash, no_model.sequence_hashes(&t)[0]);

    // Only a numeric id: a stable stand-in name.
    let mut by_id = stored(&[3], None, &t);
    if let VllmEvent::BlockStored { lora_id, .. } = &mut by_id {
        *lora_id = Some(5);
    }
    let id_hash = batch_of(&apply(&mut conv, by_id)[0]).2[0];
    assert_eq!(id_hash, hasher(Some("lora-id:5")).sequence_hashes(&t)[0]);
}

#[test]
fn unknown_parent_waits_and_emits_nothing() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let out = apply(&mut conv, stored(&[7, 8], Some(99), &tokens(1, 2)));
    assert!(out.is_empty());
    assert_eq!(conv.stats().unplaceable_blocks, 0);
    assert_eq!(conv.stats().pending_blocks, 2);
    assert!(conv.is_empty());
    // Nothing was emitted, so the next message is still event 1.
    assert_eq!(conv.next_event_id(), 1);
}

#[test]
fn missing_tokens_cut_the_chain() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 3);
    let out = apply(&mut conv, stored(&[1, 2, 3], None, &t[..2 * BS + 1]));
    assert_eq!(batch_of(&out[0]).2, hasher(None).sequence_hashes(&t)[..2]);
    assert_eq!(conv.stats().unplaceable_blocks, 1);
    assert_eq!(conv.lookup(&h(3)), None);
}

#[test]
fn zero_block_size_uses_the_default() {
    let mut conv = VllmConverter::new(InstanceId(1), config().with_default_block_size(BS));
    let t = tokens(1, 1);
    let mut e = stored(&[1], None, &t);
    if let VllmEvent::BlockStored { block_size, .. } = &mut e {
        *block_size = 0;
    }
    assert_eq!(
        batch_of(&apply(&mut conv, e)[0]).2,
        hasher(None).sequence_hashes(&t)
    );
}

#[test]
fn removes_are_mapped_sorted_and_forgotten() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 3);
    let seq = hasher(None).sequence_hashes(&t);
    apply(&mut conv, stored(&[1, 2, 3], None, &t));
    let out = apply(&mut conv, removed(&[1, 3, 42, 2], None));
    assert_eq!(
        batch_of(&out[0]),
        (EventKind::Remove, Medium::Gpu, vec![seq[2], seq[1], seq[0]])
    );
    assert_eq!(conv.stats().unknown_removes, 1);
    assert!(conv.is_empty());
    // Removing again: all unknown, no message.
    assert!(apply(&mut conv, removed(&[1], None)).is_empty());
    assert_eq!(conv.stats().unknown_removes, 2);
}

#[test]
fn media_are_tracked_separately() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 1);
    apply(&mut conv, stored(&[1], None, &t));
    let mut on_cpu = stored(&[1], None, &t);
    if let VllmEvent::BlockStored { medium, .. } = &mut on_cpu {
        *medium = Some(Medium::Cpu);
    }
    let cpu = apply(&mut conv, on_cpu);
    assert_eq!(batch_of(&cpu[0]).1, Medium::Cpu);
    assert_eq!(conv.stats().duplicate_stores, 0);
    // Evicted from the GPU: still on the CPU, still a parent.
    let gpu_gone = apply(&mut conv, removed(&[1], Some(Medium::Gpu)));
    assert_eq!(batch_of(&gpu_gone[0]).1, Medium::Gpu);
    assert_eq!(conv.len(), 1);
    assert!(!apply(&mut conv, stored(&[2], Some(1), &tokens(2, 1))).is_empty());
    // Not on the disk: unknown there.
    assert!(apply(&mut conv, removed(&[1], Some(Medium::Disk))).is_empty());
    let cpu_gone = apply(&mut conv, removed(&[1], Some(Medium::Cpu)));
    assert_eq!(batch_of(&cpu_gone[0]).1, Medium::Cpu);
    // The GPU store of its child showed the engine holds block 1 on the GPU again.
    assert_eq!(conv.copies(&h(1), Medium::Cpu), 0);
    assert_eq!(conv.copies(&h(1), Medium::Gpu), 1);
}

#[test]
fn clear_empties_the_map_and_keeps_ids_contiguous() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    apply(&mut conv, stored(&[1], None, &tokens(1, 1)));
    let out = apply(&mut conv, VllmEvent::AllBlocksCleared);
    assert_eq!(out[0].payload, Payload::Cleared { medium: None });
    assert_eq!(out[0].event_id, 2);
    assert!(conv.is_empty());
    let mut more = Vec::new();
    conv.clear(&mut more);
    assert_eq!(more[0].event_id, 3);
    assert_eq!(conv.stats().clears, 2);
}

#[test]
fn group_filter_keeps_full_attention_only() {
    let grouped = |hashes: &[i128], group: i64, kind: Option<&str>| {
        let mut e = stored(hashes, None, &tokens(hashes[0] as u32, hashes.len()));
        if let VllmEvent::BlockStored {
            group_idx,
            cache_kind,
            ..
        } = &mut e
        {
            *group_idx = Some(group);
            *cache_kind = kind.map(str::to_owned);
        }
        e
    };
    let removed_in = |hashes: &[i128], group: i64| VllmEvent::BlockRemoved {
        block_hashes: hashes.iter().map(|&v| h(v)).collect(),
        medium: None,
        group_idx: Some(group),
    };
    let mut conv = VllmConverter::new(InstanceId(1), config());
    assert_eq!(
        apply(&mut conv, grouped(&[1], 1, Some("full_attention"))).len(),
        1
    );
    assert!(apply(&mut conv, grouped(&[1], 0, Some("sliding_window"))).is_empty());
    assert_eq!(
        apply(&mut conv, grouped(&[2], 2, Some("mla_attention"))).len(),
        1
    );
    // The sliding-window group's eviction of block 1 must not remove it.
    assert!(apply(&mut conv, removed_in(&[1], 0)).is_empty());
    assert_eq!(conv.len(), 2);
    assert_eq!(apply(&mut conv, removed_in(&[1], 1)).len(), 1);
    // No kind announced: group 0 only.
    assert_eq!(apply(&mut conv, grouped(&[3], 0, None)).len(), 1);
    assert!(apply(&mut conv, grouped(&[4], 5, None)).is_empty());
    assert_eq!(conv.stats().filtered_events, 3);

    let mut all = VllmConverter::new(InstanceId(1), config().with_groups(VllmGroupFilter::All));
    assert_eq!(
        apply(&mut all, grouped(&[1], 0, Some("sliding_window"))).len(),
        1
    );
    let mut only = VllmConverter::new(
        InstanceId(1),
        config().with_groups(VllmGroupFilter::Index(3)),
    );
    assert!(apply(&mut only, grouped(&[1], 0, Some("full_attention"))).is_empty());
    assert_eq!(
        apply(&mut only, grouped(&[1], 3, Some("sliding_window"))).len(),
        1
    );
}

#[test]
fn xxh3_compat_scheme_is_honoured() {
    let cfg = VllmConvertConfig::default().with_scheme(HashScheme::dynamo());
    let mut conv = VllmConverter::new(InstanceId(1), cfg.clone());
    let t = tokens(4, 2);
    let out = apply(&mut conv, stored(&[1, 2], None, &t));
    let expected = BlockHasher::new(BS, cfg.scheme, cfg.extra_keys(None))
        .unwrap()
        .sequence_hashes(&t);
    assert_eq!(batch_of(&out[0]).2, expected);
}

#[test]
fn skipped_events_are_counted_per_reason_and_the_rest_applied() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let t = tokens(1, 1);
    let skipped = |reason| VllmEvent::Skipped { reason };
    let out = apply_all(
        &mut conv,
        vec![
            skipped(SkipReason::UnknownTag),
            stored(&[1], None, &t),
            skipped(SkipReason::UnknownMedium),
            skipped(SkipReason::Malformed),
            skipped(SkipReason::UnknownTag),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(batch_of(&out[0]).2, hasher(None).sequence_hashes(&t));
    let stats = conv.stats();
    assert_eq!(
        (
            stats.skipped_unknown_tag,
            stats.skipped_unknown_medium,
            stats.skipped_malformed
        ),
        (2, 1, 1)
    );
    assert_eq!(stats.clears, 0, "a bad event clears nothing");
}
