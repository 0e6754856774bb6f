//! Fixtures shared by the router's test files: hash chains and Create payloads.
//!
//! Each test crate uses a different subset, hence the `dead_code` allowance.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the fixtures"
)]

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, Payload};

/// A chain of `n` sequence hashes from the root `seed` (children named from the seed, so two
/// seeds give disjoint chains).
pub fn chain(n: usize, seed: u64) -> Vec<SequenceHash> {
    let mut v = vec![SequenceHash::root(seed)];
    for i in 1..n {
        let parent = v[i - 1];
        v.push(SequenceHash::child_of(parent, seed * 131 + i as u64));
    }
    v
}

/// A Create batch of `hashes` on the GPU, announced in full.
pub fn create(hashes: &[SequenceHash]) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Gpu,
        kind: EventKind::Create,
        hashes: hashes.to_vec(),
        policy: EmitPolicy::All,
    })
}
