//! Model-based test of [`PrefixIndex`]: random interleavings of `insert`, `remove` and
//! `remove_instance` from a few instances, checked after every step against a brute-force
//! model (one `HashSet` of hashes per `(slot, medium)`).
//!
//! The chains form a small tree (each one shares a random prefix with an earlier one), so
//! holders overlap and diverge the way real prefixes do. Some slots are sparse: their writes
//! only carry the power positions (0-based `2^j - 1`), as an instance announcing with
//! `EmitPolicy::PowerOfTwo` would, and queries read them with bounds. After each step the test
//! compares every return value, `blocks_of`, `len`, `entries`, `iter` and the answers to
//! several requests (whole chains, prefixes, and chains that diverge into unknown blocks).

use std::collections::{BTreeMap, HashSet};

use kvtier_core::{Medium, SequenceHash};
use kvtier_router::{Overlap, PrefixIndex, QueryScratch, RemoveOutcome};
use proptest::prelude::*;

const CHAIN_LEN: usize = 24;
const MEDIA: [Medium; 2] = [Medium::Gpu, Medium::Disk];

/// One write, as drawn (indices are reduced modulo the setup's sizes).
#[derive(Clone, Debug)]
enum Op {
    Insert {
        slot: usize,
        medium: usize,
        chain: usize,
        start: usize,
        len: usize,
    },
    Remove {
        slot: usize,
        medium: usize,
        chain: usize,
        start: usize,
        len: usize,
    },
    RemoveInstance {
        slot: usize,
        medium: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let range = (
        0..8usize,
        0..2usize,
        0..16usize,
        0..CHAIN_LEN,
        1..=CHAIN_LEN,
    );
    prop_oneof![
        6 => range.clone().prop_map(|(slot, medium, chain, start, len)| Op::Insert {
            slot, medium, chain, start, len,
        }),
        4 => range.clone().prop_map(|(slot, medium, chain, start, len)| Op::Remove {
            slot, medium, chain, start, len,
        }),
        1 => (0..8usize, proptest::option::of(0..2usize))
            .prop_map(|(slot, medium)| Op::RemoveInstance { slot, medium }),
    ]
}

/// The chains: chain `j > 0` copies the first `split` blocks of chain `parent < j` and goes
/// on with its own blocks.
fn build_chains(tree: &[(usize, usize)]) -> Vec<Vec<SequenceHash>> {
    let mut chains: Vec<Vec<SequenceHash>> = Vec::new();
    for (j, &(parent, split)) in tree.iter().enumerate() {
        let mut c: Vec<SequenceHash> = if j == 0 {
            Vec::new()
        } else {
            chains[parent % j][..split].to_vec()
        };
        while c.len() < CHAIN_LEN {
            // Small, structured chained values: the table must not rely on them being random.
            let v = (j as u64) << 8 | c.len() as u64;
            c.push(match c.last() {
                None => SequenceHash::root(v),
                Some(&p) => SequenceHash::child_of(p, v),
            });
        }
        chains.push(c);
    }
    chains
}

/// The reference: what each `(slot, medium index)` holds.
#[derive(Default)]
struct Model {
    sets: BTreeMap<(u32, usize), HashSet<SequenceHash>>,
}

impl Model {
    fn insert(&mut self, slot: u32, medium: usize, hashes: &[SequenceHash]) -> usize {
        let set = self.sets.entry((slot, medium)).or_default();
        hashes.iter().filter(|&&h| set.insert(h)).count()
    }

    fn remove(&mut self, slot: u32, medium: usize, hashes: &[SequenceHash]) -> RemoveOutcome {
        let set = self.sets.entry((slot, medium)).or_default();
        let removed = hashes.iter().filter(|h| set.remove(h)).count();
        RemoveOutcome {
            removed,
            unknown: hashes.len() - removed,
        }
    }

    fn remove_instance(&mut self, slot: u32, medium: Option<usize>) -> usize {
        let mut removed = 0;
        for (&(s, m), set) in &mut self.sets {
            if s == slot && medium.is_none_or(|x| x == m) {
                removed += set.len();
                set.clear();
            }
        }
        removed
    }

    fn blocks_of(&self, slot: u32) -> [usize; 4] {
        let mut out = [0; 4];
        for (&(s, m), set) in &self.sets {
            if s == slot {
                out[m] += set.len();
            }
        }
        out
    }

    fn len(&self) -> usize {
        let all: HashSet<_> = self.sets.values().flatten().collect();
        all.len()
    }

    fn entries(&self) -> usize {
        self.sets.values().map(HashSet::len).sum()
    }

    /// The answer by definition: dense holders count leading blocks; sparse holders the
    /// largest 1-based power `p` with every power `<= p` held, bounded by `min(2p - 1, n)`.
    fn query(&self, hashes: &[SequenceHash], sparse: &[bool]) -> Vec<Overlap> {
        let n = hashes.len();
        let mut out = Vec::new();
        for (&(slot, m), set) in &self.sets {
            let (matched, upper) = if sparse[slot as usize] {
                let mut p = 0;
                let mut next = 1;
                while next <= n && set.contains(&hashes[next - 1]) {
                    p = next;
                    next *= 2;
                }
                (p, if p == 0 { 0 } else { (2 * p - 1).min(n) })
            } else {
                let d = hashes.iter().take_while(|h| set.contains(h)).count();
                (d, d)
            };
            if matched > 0 {
                out.push(Overlap {
                    slot,
                    medium: Medium::ALL[m],
                    matched: matched as u32,
                    upper: upper as u32,
                });
            }
        }
        // BTreeMap order is (slot, medium index): the order the index promises.
        out
    }
}

/// Keeps only the power positions (what a sparse instance announces).
fn announced(hashes: &[SequenceHash], sparse: bool) -> Vec<SequenceHash> {
    hashes
        .iter()
        .copied()
        .filter(|h| !sparse || (h.position() + 1).is_power_of_two())
        .collect()
}

/// The requests asked after each step: whole chains, short prefixes, and chains that leave
/// the tree after `cut` blocks.
fn requests(chains: &[Vec<SequenceHash>], cuts: &[usize]) -> Vec<Vec<SequenceHash>> {
    let mut out = Vec::new();
    for (j, c) in chains.iter().enumerate() {
        out.push(c.clone());
        let cut = cuts[j % cuts.len()];
        out.push(c[..cut].to_vec());
        let mut off = c[..cut].to_vec();
        let mut last = *off.last().unwrap();
        for k in 0..5u64 {
            last = SequenceHash::child_of(last, 0xFFFF_0000 + k);
            off.push(last);
        }
        out.push(off);
    }
    out
}

fn check(
    index: &PrefixIndex,
    model: &Model,
    slots: usize,
    sparse: &[bool],
    requests: &[Vec<SequenceHash>],
    scratch: &mut QueryScratch,
) -> Result<(), TestCaseError> {
    for slot in 0..slots as u32 {
        prop_assert_eq!(
            index.blocks_of(slot),
            model.blocks_of(slot),
            "slot {}",
            slot
        );
    }
    prop_assert_eq!(index.len(), model.len());
    prop_assert_eq!(index.entries(), model.entries());
    prop_assert_eq!(index.is_empty(), model.len() == 0);
    let mut listed: Vec<_> = index.iter().map(|(h, s, m)| (s, m.index(), h)).collect();
    listed.sort();
    let mut expected: Vec<_> = model
        .sets
        .iter()
        .flat_map(|(&(s, m), set)| set.iter().map(move |&h| (s, m, h)))
        .collect();
    expected.sort();
    prop_assert_eq!(listed, expected);
    for request in requests {
        let got = index.query(request, |slot| sparse[slot as usize], scratch);
        let want = model.query(request, sparse);
        prop_assert_eq!(got, want.as_slice(), "request {:?}", request);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_matches_model(
        slots in 3usize..=6,
        sparse in proptest::collection::vec(any::<bool>(), 6),
        tree in proptest::collection::vec((0..16usize, 0..CHAIN_LEN), 3..=6),
        cuts in proptest::collection::vec(1..=CHAIN_LEN, 3),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let chains = build_chains(&tree);
        let requests = requests(&chains, &cuts);
        let mut index = PrefixIndex::new();
        let mut model = Model::default();
        let mut scratch = QueryScratch::new();
        for op in ops {
            match op {
                Op::Insert { slot, medium, chain, start, len } => {
                    let slot = slot % slots;
                    let c = &chains[chain % chains.len()];
                    let end = (start + len).min(CHAIN_LEN);
                    let hashes = announced(&c[start..end], sparse[slot]);
                    let slot = slot as u32;
                    let got = index.insert(slot, MEDIA[medium], &hashes).unwrap();
                    let want = model.insert(slot, MEDIA[medium].index(), &hashes);
                    prop_assert_eq!(got, want);
                }
                Op::Remove { slot, medium, chain, start, len } => {
                    let slot = slot % slots;
                    let c = &chains[chain % chains.len()];
                    let end = (start + len).min(CHAIN_LEN);
                    // Children first, as a Remove batch lists them.
                    let mut hashes = announced(&c[start..end], sparse[slot]);
                    hashes.reverse();
                    let slot = slot as u32;
                    let got = index.remove(slot, MEDIA[medium], &hashes);
                    let want = model.remove(slot, MEDIA[medium].index(), &hashes);
                    prop_assert_eq!(got, want);
                }
                Op::RemoveInstance { slot, medium } => {
                    let slot = (slot % slots) as u32;
                    let got = index.remove_instance(slot, medium.map(|m| MEDIA[m]));
                    let want = model.remove_instance(slot, medium.map(|m| MEDIA[m].index()));
                    prop_assert_eq!(got, want);
                }
            }
            check(&index, &model, slots, &sparse, &requests, &mut scratch)?;
        }
    }
}

/// Many holders per block (spilled lists), a larger table, then instances leaving one by one.
#[test]
fn many_holders_against_the_model() {
    let tree: Vec<(usize, usize)> = (0..12).map(|j| (j * 5 + 1, (j * 7) % CHAIN_LEN)).collect();
    let chains = build_chains(&tree);
    let cuts = [3, 9, 17];
    let requests = requests(&chains, &cuts);
    let slots = 40;
    let sparse: Vec<bool> = (0..slots).map(|s| s % 4 == 3).collect();
    let mut index = PrefixIndex::new();
    let mut model = Model::default();
    let mut scratch = QueryScratch::new();
    for (slot, &is_sparse) in sparse.iter().enumerate() {
        for (j, c) in chains.iter().enumerate() {
            if (slot + j) % 3 == 0 {
                continue;
            }
            let len = 1 + (slot * 7 + j * 3) % CHAIN_LEN;
            let hashes = announced(&c[..len], is_sparse);
            let m = (slot + j) % 2;
            let got = index.insert(slot as u32, MEDIA[m], &hashes).unwrap();
            assert_eq!(got, model.insert(slot as u32, MEDIA[m].index(), &hashes));
        }
    }
    check(&index, &model, slots, &sparse, &requests, &mut scratch).unwrap();
    for slot in (0..slots as u32).rev().step_by(3) {
        assert_eq!(
            index.remove_instance(slot, None),
            model.remove_instance(slot, None)
        );
        check(&index, &model, slots, &sparse, &requests, &mut scratch).unwrap();
    }
}
