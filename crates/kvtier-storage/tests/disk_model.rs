//! The G3 disk tier against a trivial reference model: random sequences of batched puts
//! (with overwrites and repeats), gets, deletes and reopens; the tier must hold exactly what
//! the model holds, byte for byte, with FIFO eviction by write order.

mod disk_support;

use std::collections::BTreeMap;

use disk_support::{block, hash};
use kvtier_storage::disk::{DiskConfig, DiskTier};
use proptest::prelude::*;

const BLOCK: usize = 512;
const CAPACITY: u64 = 6;
const KEYS: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    /// `(key, version)` pairs, written as one batch.
    Put(Vec<(u64, u64)>),
    Get(u64),
    Delete(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..KEYS, 0..4u64), 1..5).prop_map(Op::Put),
        3 => (0..KEYS).prop_map(Op::Get),
        1 => (0..KEYS).prop_map(Op::Delete),
        1 => Just(Op::Reopen),
    ]
}

/// What the tier should hold: key -> (version, write generation).
#[derive(Default)]
struct Model {
    blocks: BTreeMap<u64, (u64, u64)>,
    next_generation: u64,
}

impl Model {
    fn put(&mut self, batch: &[(u64, u64)]) {
        // Last bytes of a repeated key win, at the position of its last occurrence.
        let mut unique: Vec<(u64, u64)> = Vec::new();
        for (i, &(key, version)) in batch.iter().enumerate() {
            if !batch[i + 1..].iter().any(|&(k, _)| k == key) {
                unique.push((key, version));
            }
        }
        // Each new block takes a slot; when none is free the oldest live block goes. A replaced
        // version keeps its slot until the batch is published.
        for granted in 0..unique.len() as u64 {
            if self.blocks.len() as u64 + granted >= CAPACITY {
                let oldest = *self
                    .blocks
                    .iter()
                    .min_by_key(|(_, (_, generation))| *generation)
                    .unwrap()
                    .0;
                self.blocks.remove(&oldest);
            }
        }
        for (key, version) in unique {
            self.blocks.insert(key, (version, self.next_generation));
            self.next_generation += 1;
        }
    }
}

fn config() -> DiskConfig {
    DiskConfig::new("model-test", BLOCK, CAPACITY).with_slots_per_file(4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn the_tier_holds_what_the_model_holds(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let mut tier = DiskTier::open(dir.path(), config()).unwrap();
        let mut model = Model::default();
        let mut buf = vec![0u8; BLOCK];
        for op in ops {
            match op {
                Op::Put(batch) => {
                    let bytes: Vec<Vec<u8>> = batch.iter().map(|&(k, v)| block(k, v, BLOCK)).collect();
                    let blocks: Vec<_> = batch
                        .iter()
                        .zip(&bytes)
                        .map(|(&(k, _), b)| (hash(k), b.as_slice()))
                        .collect();
                    tier.put_batch(&blocks).unwrap();
                    model.put(&batch);
                }
                Op::Get(key) => {
                    let found = tier.get(hash(key), &mut buf).unwrap();
                    match model.blocks.get(&key) {
                        Some(&(version, _)) => {
                            prop_assert!(found, "key {} missing", key);
                            prop_assert_eq!(&buf, &block(key, version, BLOCK));
                        }
                        None => prop_assert!(!found, "key {} should be gone", key),
                    }
                }
                Op::Delete(key) => {
                    prop_assert_eq!(tier.delete(hash(key)).unwrap(), model.blocks.remove(&key).is_some());
                }
                Op::Reopen => {
                    drop(tier);
                    tier = DiskTier::open(dir.path(), config()).unwrap();
                }
            }
            prop_assert_eq!(tier.len(), model.blocks.len());
            for key in 0..KEYS {
                prop_assert_eq!(tier.contains(hash(key)), model.blocks.contains_key(&key), "key {}", key);
            }
        }
        prop_assert_eq!(tier.stats().corrupt, 0);
    }
}
