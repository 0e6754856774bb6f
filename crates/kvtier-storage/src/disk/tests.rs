//! Unit tests of the disk tier's pieces that the public API cannot reach.

use super::index::Record;
use super::slots::SlotTable;

fn record(slot: u64, generation: u64) -> Record {
    Record {
        slot,
        len: 8,
        checksum: 0,
        generation,
    }
}

#[test]
fn rebuild_gives_a_slot_claimed_twice_to_the_newer_record() {
    let table = SlotTable::rebuild(vec![(1, record(3, 10)), (2, record(3, 11))], 8, 8, 8);
    assert_eq!(table.get(1), None);
    assert_eq!(table.get(2), Some(record(3, 11)));
    assert_eq!(table.pending_removals(), 1);
    table.check(8).unwrap();
}

#[test]
fn rebuild_drops_records_outside_the_files_or_of_another_length() {
    let mut wrong_len = record(1, 2);
    wrong_len.len = 9;
    let table = SlotTable::rebuild(
        vec![(1, record(5, 1)), (2, wrong_len), (3, record(0, 3))],
        8,
        4,
        8,
    );
    assert_eq!(table.len(), 1);
    assert_eq!(table.pending_removals(), 2);
    table.check(4).unwrap();
}

#[test]
fn grants_free_slots_then_new_ones_then_evicts_the_oldest() {
    let mut table = SlotTable::rebuild(vec![(7, record(1, 5)), (8, record(0, 9))], 3, 3, 8);
    // Slot 2 is free: first.
    let (g, victim) = table.grant(3).unwrap();
    assert_eq!((g.slot, victim), (2, None));
    assert_eq!(g.generation, 10);
    table.publish(&[(9, record(2, 10))]);
    // Full: the oldest generation (hash 7, slot 1) goes.
    let (g, victim) = table.grant(3).unwrap();
    assert_eq!((g.slot, victim), (1, Some(7)));
    assert_eq!(table.take_removals(), vec![7]);
    table.publish(&[(10, record(1, 11))]);
    table.check(3).unwrap();
    // A replaced version frees its slot at publish.
    let (g, victim) = table.grant(3).unwrap();
    assert_eq!((g.slot, victim), (0, Some(8)));
    table.release(&[g]);
    table.check(3).unwrap();
}

#[test]
fn overwrite_frees_the_old_slot_and_stale_fifo_entries_are_skipped() {
    let mut table = SlotTable::rebuild(Vec::new(), 2, 2, 8);
    let (a, _) = table.grant(2).unwrap();
    table.publish(&[(1, record(a.slot, a.generation))]);
    let (b, _) = table.grant(2).unwrap();
    table.publish(&[(1, record(b.slot, b.generation))]);
    assert_eq!(table.len(), 1);
    table.check(2).unwrap();
    // The only live block is the new version; eviction skips the stale first entry.
    let (c, victim) = table.grant(2).unwrap();
    assert_eq!((c.slot, victim), (a.slot, None));
    let (_, victim) = table.grant(2).unwrap();
    assert_eq!(victim, Some(1));
    assert!(table.grant(2).is_none(), "every slot is in flight");
}
