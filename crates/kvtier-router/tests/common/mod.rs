//! Fixtures shared by the router's test files: hash chains, Create payloads, messages and the
//! GPU prefix a router sees for an instance.
//!
//! Each test crate uses a different subset, hence the `dead_code` allowance.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the fixtures"
)]

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{QueryScratch, Router};

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

/// Message `event_id` of instance `instance`.
pub fn msg(instance: u128, event_id: u64, payload: Payload) -> EventMessage {
    EventMessage {
        instance: InstanceId(instance),
        event_id,
        payload,
    }
}

/// How many leading blocks of `hashes` the router believes `instance` holds on the GPU.
pub fn gpu_prefix(router: &Router, hashes: &[SequenceHash], instance: u128) -> u32 {
    router
        .query(hashes, &mut QueryScratch::default())
        .overlaps
        .iter()
        .find(|o| o.instance == InstanceId(instance))
        .map_or(0, |o| o.matched(Medium::Gpu))
}
