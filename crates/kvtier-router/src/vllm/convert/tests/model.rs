//! Copy counting against a reference model: random stores (with tokens, and offloaded without),
//! removals and clears of a few root blocks on two media; the messages, applied to a set per
//! medium as a router would, must always equal the blocks whose model count is positive.

use std::collections::{BTreeSet, HashMap};

use kvtier_core::Medium;
use kvtier_events::{InstanceId, Payload};
use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Store(u8, bool),
    Offload(u8),
    Remove(u8, bool),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<bool>()).prop_map(|(b, cpu)| Op::Store(b, cpu)),
        2 => (0u8..6).prop_map(Op::Offload),
        4 => (0u8..6, any::<bool>()).prop_map(|(b, cpu)| Op::Remove(b, cpu)),
        1 => Just(Op::Clear),
    ]
}

fn medium(cpu: bool) -> Medium {
    if cpu { Medium::Cpu } else { Medium::Gpu }
}

proptest! {
    #[test]
    fn announced_blocks_follow_the_copy_counts(ops in proptest::collection::vec(op(), 1..60)) {
        let mut conv = VllmConverter::new(InstanceId(1), config());
        let hash_of: Vec<SequenceHash> = (0..6u32)
            .map(|b| hasher(None).sequence_hashes(&tokens(b, 1))[0])
            .collect();
        let mut counts: HashMap<(u8, Medium), u32> = HashMap::new();
        let mut ever_stored: BTreeSet<u8> = BTreeSet::new();
        let mut router: BTreeSet<(SequenceHash, usize)> = BTreeSet::new();
        for op in ops {
            let event = match op {
                Op::Store(b, cpu) => {
                    *counts.entry((b, medium(cpu))).or_default() += 1;
                    ever_stored.insert(b);
                    let mut e = stored(&[i128::from(b)], None, &tokens(u32::from(b), 1));
                    if let VllmEvent::BlockStored { medium: m, .. } = &mut e {
                        *m = Some(medium(cpu));
                    }
                    e
                }
                Op::Offload(b) => {
                    if ever_stored.contains(&b) {
                        *counts.entry((b, Medium::Cpu)).or_default() += 1;
                    }
                    offloaded(&[i128::from(b)], Medium::Cpu)
                }
                Op::Remove(b, cpu) => {
                    if let Some(c) = counts.get_mut(&(b, medium(cpu))) {
                        *c = c.saturating_sub(1);
                    }
                    removed(&[i128::from(b)], Some(medium(cpu)))
                }
                Op::Clear => {
                    counts.clear();
                    VllmEvent::AllBlocksCleared
                }
            };
            for message in apply(&mut conv, event) {
                match &message.payload {
                    Payload::Batch(batch) => {
                        for h in &batch.hashes {
                            let changed = if batch.kind == EventKind::Create {
                                router.insert((*h, batch.medium.index()))
                            } else {
                                router.remove(&(*h, batch.medium.index()))
                            };
                            prop_assert!(changed, "announced twice: {message:?}");
                        }
                    }
                    Payload::Cleared { medium: None } => router.clear(),
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            let model: BTreeSet<(SequenceHash, usize)> = counts
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|((b, m), _)| (hash_of[usize::from(*b)], m.index()))
                .collect();
            prop_assert_eq!(&router, &model);
            for ((b, m), c) in &counts {
                prop_assert_eq!(u32::from(conv.copies(&h(i128::from(*b)), *m)), *c);
            }
        }
    }
}
