//! The converter map's open-addressing table against a `HashMap` model: inserts, removals
//! (backward shifts, across the wrap-around too), growth and truncation keep every key
//! findable.

use std::collections::HashMap;

use kvtier_core::SequenceHash;
use proptest::prelude::*;

use super::map::{Entry, Table};

#[derive(Clone, Debug)]
enum Op {
    Insert(u64),
    Remove(u64),
    Truncate(usize),
}

/// Keys from a small pool, spread over the whole range and bunched at its two ends (the
/// last slots and the wrap-around to the first).
fn key() -> impl Strategy<Value = u64> {
    prop_oneof![
        (1u64..64).prop_map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1)),
        (0u64..16).prop_map(|k| u64::MAX - k),
        (1u64..16),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => key().prop_map(Op::Insert),
        4 => key().prop_map(Op::Remove),
        1 => (0usize..40).prop_map(Op::Truncate),
    ]
}

fn entry(fp: u64, n: u64) -> Entry {
    Entry::new(
        SequenceHash::from_u128(u128::from(fp) << 8 | u128::from(n)),
        n,
    )
}

proptest! {
    #[test]
    fn table_matches_a_hash_map(ops in prop::collection::vec(op(), 1..400)) {
        let mut table = Table::default();
        let mut model: HashMap<u64, Entry> = HashMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(fp) => {
                    let e = entry(fp, n as u64);
                    prop_assert_eq!(table.insert(fp, e), model.insert(fp, e));
                }
                Op::Remove(fp) => prop_assert_eq!(table.remove(fp), model.remove(&fp)),
                Op::Truncate(keep) => {
                    table.truncate(keep);
                    let kept: Vec<u64> = table.iter().map(|(fp, _)| fp).collect();
                    prop_assert_eq!(kept.len(), keep.min(model.len()));
                    model.retain(|fp, _| kept.contains(fp));
                }
            }
            prop_assert_eq!(table.len, model.len());
            for (fp, e) in &model {
                prop_assert_eq!(table.get(*fp), Some(e));
            }
            prop_assert_eq!(table.iter().count(), model.len());
        }
        for fp in 1..16 {
            prop_assert_eq!(table.get(fp), model.get(&fp));
        }
    }
}

#[test]
fn table_grows_by_half_and_stays_under_76_bytes_per_entry() {
    let mut table = Table::default();
    for i in 1..=100_000u64 {
        let fp = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1);
        table.insert(fp, entry(fp, i));
        let per_entry = table.bytes() as f64 / i as f64;
        assert!(
            i < 64 || per_entry < 76.0,
            "{per_entry} bytes per entry at {i}"
        );
    }
    assert_eq!(table.len, 100_000);
}

#[test]
fn a_table_sized_up_front_does_not_grow_and_an_absurd_size_is_refused() {
    let mut table = Table::with_capacity(10_000);
    let bytes = table.bytes();
    assert!(bytes > 0);
    for i in 1..=10_000u64 {
        let fp = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1);
        table.insert(fp, entry(fp, i));
    }
    assert_eq!(table.bytes(), bytes, "no growth below the expected size");
    assert_eq!(table.len, 10_000);
    // More memory than can be had: an empty table that grows as needed, no abort.
    let mut huge = Table::with_capacity(usize::MAX / 2);
    assert_eq!(huge.bytes(), 0);
    assert_eq!(huge.insert(7, entry(7, 1)), None);
    assert_eq!(huge.get(7), Some(&entry(7, 1)));
}
