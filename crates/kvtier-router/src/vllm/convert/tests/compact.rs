//! Coalescing of a batch's events into few messages, the compact map's size, and the state a
//! converter exports and resumes from.

use kvtier_core::Medium;
use kvtier_events::InstanceId;

use super::map::Entry;
use super::*;

#[test]
fn consecutive_events_of_one_kind_and_medium_share_a_message() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let (a, b, c) = (tokens(1, 1), tokens(2, 1), tokens(3, 1));
    let ha = hasher(None).sequence_hashes(&a);
    let hb = hasher(None).sequence_hashes(&b);
    let hc = hasher(None).sequence_hashes(&c);
    let mut on_cpu = stored(&[3], None, &c);
    if let VllmEvent::BlockStored { medium, .. } = &mut on_cpu {
        *medium = Some(Medium::Cpu);
    }
    let out = apply_all(
        &mut conv,
        vec![
            stored(&[1], None, &a),
            stored(&[2], None, &b),
            VllmEvent::Skipped {
                reason: SkipReason::UnknownTag,
            },
            removed(&[1], None),
            removed(&[2], None),
            on_cpu,
            VllmEvent::AllBlocksCleared,
            stored(&[1], None, &a),
        ],
    );
    let kinds: Vec<_> = out.iter().map(|m| m.event_id).collect();
    assert_eq!(kinds, [1, 2, 3, 4, 5]);
    assert_eq!(batch_of(&out[0]), create(Medium::Gpu, &[ha[0], hb[0]]));
    assert_eq!(batch_of(&out[1]), remove(Medium::Gpu, &[ha[0], hb[0]]));
    assert_eq!(batch_of(&out[2]), create(Medium::Cpu, &hc));
    assert_eq!(out[3].payload, Payload::Cleared { medium: None });
    assert_eq!(batch_of(&out[4]), create(Medium::Gpu, &ha));
    // Separate calls never share a message.
    let again = apply(&mut conv, stored(&[2], None, &b));
    assert_eq!(again[0].event_id, 6);
}

#[test]
fn map_entries_are_small_and_own_no_heap() {
    assert_eq!(size_of::<(u64, Entry)>(), 40);
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let n = 100_000usize;
    let t = tokens(1, 1);
    let hashes: Vec<i128> = (0..n as i128).collect();
    for chunk in hashes.chunks(32) {
        let mut tokens = Vec::new();
        for _ in chunk {
            tokens.extend_from_slice(&t);
        }
        apply(&mut conv, stored(chunk, None, &tokens));
    }
    assert_eq!(conv.len(), n);
    let per_block = conv.map_bytes() as f64 / n as f64;
    eprintln!("converter map: {per_block:.1} bytes per block at {n} blocks");
    assert!(per_block <= 76.0, "{per_block} bytes per block");
}

#[test]
fn exported_state_resumes_the_same_converter() {
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let a = tokens(1, 3);
    apply(&mut conv, stored(&[1, 2, 3], None, &a));
    apply(&mut conv, stored(&[1], None, &a[..BS]));
    apply(&mut conv, removed(&[3], None));
    let state = conv.export();
    let mut resumed = VllmConverter::restore(InstanceId(1), config(), &state);
    assert_eq!(resumed.next_event_id(), conv.next_event_id());
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed.copies(&h(1), Medium::Gpu), 2);
    assert_eq!(resumed.export(), state);
    // The ghost of block 3 is still a parent.
    let c = tokens(2, 1);
    let out = apply(&mut resumed, stored(&[4], Some(3), &c));
    assert_eq!(batch_of(&out[0]).2.len(), 2);
    assert_eq!(out[0].event_id, conv.next_event_id());
}

/// Converter-only throughput (no decoding, no router): stores of `blocks`-block chains of
/// 4-token blocks and their removal, one batch per event. Run in release:
///
/// ```text
/// cargo test --release -p kvtier-router --lib converter_throughput -- --ignored --nocapture
/// ```
///
/// 2026-12-04, 2-core shared VM, three runs: 1-block events 6.1–7.7 M blocks/s, 32-block
/// events 8.3–9.0 M blocks/s (each block stored and removed).
#[test]
#[ignore = "a measurement: run in release"]
fn converter_throughput() {
    for blocks in [1usize, 32] {
        let mut conv = VllmConverter::new(InstanceId(1), config());
        let t = tokens(1, blocks);
        let rounds = 2_000_000 / blocks;
        let events: Vec<(VllmBatch, VllmBatch)> = (0..1024)
            .map(|r| {
                let hashes: Vec<i128> =
                    (0..blocks as i128).map(|i| (r as i128) << 32 | i).collect();
                let store = VllmBatch {
                    ts: 0.0,
                    events: vec![stored(&hashes, None, &t)],
                    dp_rank: None,
                };
                let mut gone = hashes.clone();
                gone.reverse();
                let drop = VllmBatch {
                    ts: 0.0,
                    events: vec![removed(&gone, None)],
                    dp_rank: None,
                };
                (store, drop)
            })
            .collect();
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        for r in 0..rounds {
            let (store, drop) = &events[r % events.len()];
            conv.apply_batch(store, &mut out);
            conv.apply_batch(drop, &mut out);
            out.clear();
        }
        let secs = start.elapsed().as_secs_f64();
        let per_s = (rounds * blocks) as f64 / secs;
        eprintln!(
            "{blocks}-block events: {:.2} M blocks/s (store + remove)",
            per_s / 1e6
        );
        assert_eq!(conv.len(), 0);
    }
}

#[test]
fn a_state_with_fingerprint_zero_restores_without_it() {
    // 0 marks an empty slot of the map's table: only a damaged state can carry it.
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let a = tokens(1, 2);
    apply(&mut conv, stored(&[1, 2], None, &a));
    let good = conv.export();
    let mut damaged = good.clone();
    let (_, entry) = damaged.entries[0];
    damaged.entries.insert(0, (0, entry));
    damaged.ghosts.extend([0, 0]);
    let resumed = VllmConverter::restore(InstanceId(1), config(), &damaged);
    assert_eq!(resumed.export(), good);
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed.copies(&h(2), Medium::Gpu), 1);
}
