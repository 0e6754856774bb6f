//! Forgetting an instance (Cleared, Shutdown, expiry, a dump) costs in proportion to what that
//! instance holds, not to the whole index: counted in table lookups
//! ([`PrefixIndex::lookups`]), which do not depend on timing. The router-level paths are
//! checked to give the same answers as before.

use std::sync::Arc;

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{PrefixIndex, Router};

mod common;
use common::chain;

/// Lookups made by `remove_instance(0, None)` on an index where slot 0 holds 100 blocks
/// (after some churn) and slot 1 holds `others`.
fn cost_of_dropping_a_small_instance(others: usize) -> (usize, u64) {
    let mut index = PrefixIndex::new();
    for c in 0..(others / 50) as u64 {
        index
            .insert(1, Medium::Gpu, &chain(50, 10_000 + c))
            .unwrap();
    }
    // Slot 0 churns through 40 chains of 10, keeping 10 of them.
    for c in 0..40u64 {
        index.insert(0, Medium::Gpu, &chain(10, c)).unwrap();
        if c >= 10 {
            assert_eq!(index.remove(0, Medium::Gpu, &chain(10, c - 10)).removed, 10);
        }
    }
    assert_eq!(index.blocks_of(0), [100, 0, 0, 0]);
    let before = index.lookups();
    let removed = index.remove_instance(0, None);
    (removed, index.lookups() - before)
}

#[test]
fn dropping_an_instance_costs_its_own_entries_only() {
    let (removed_small, small) = cost_of_dropping_a_small_instance(0);
    let (removed_big, big) = cost_of_dropping_a_small_instance(200_000);
    assert_eq!((removed_small, removed_big), (100, 100));
    assert_eq!(small, big, "the cost depends on other instances' entries");
    // Its own list: the 100 held plus at most half as many stale copies and a small slack.
    assert!((100..=100 + 50 + 64).contains(&small), "{small} lookups");
}

#[test]
fn clearing_one_medium_walks_that_medium_only() {
    let mut index = PrefixIndex::new();
    index.insert(0, Medium::Disk, &chain(5000, 1)).unwrap();
    index.insert(0, Medium::Gpu, &chain(7, 2)).unwrap();
    let before = index.lookups();
    assert_eq!(index.remove_instance(0, Some(Medium::Gpu)), 7);
    assert_eq!(index.lookups() - before, 7);
    assert_eq!(index.blocks_of(0), [0, 0, 5000, 0]);
}

fn batch(kind: EventKind, medium: Medium, hashes: Vec<SequenceHash>) -> Payload {
    Payload::Batch(EventBatch {
        medium,
        kind,
        hashes,
        policy: EmitPolicy::All,
    })
}

#[test]
fn cleared_shutdown_and_dumps_forget_exactly_the_instance() {
    let mut r = Router::builder().build();
    let m = |instance: u128, event_id: u64, payload| {
        Arc::new(EventMessage {
            instance: InstanceId(instance),
            event_id,
            payload,
        })
    };
    let shared = chain(8, 1);
    for i in 1..=3u128 {
        r.apply(m(
            i,
            1,
            batch(EventKind::Create, Medium::Gpu, shared.clone()),
        ));
        r.apply(m(
            i,
            2,
            batch(EventKind::Create, Medium::Cpu, chain(4, 10 + i as u64)),
        ));
        r.apply(m(
            i,
            3,
            batch(EventKind::Remove, Medium::Gpu, shared[6..].to_vec()),
        ));
    }
    assert_eq!(r.stats().entries, 3 * (6 + 4));
    r.apply(m(
        1,
        4,
        Payload::Cleared {
            medium: Some(Medium::Cpu),
        },
    ));
    assert_eq!(r.stats().entries, 3 * 10 - 4);
    r.apply(m(2, 4, Payload::Shutdown));
    assert_eq!(r.stats().entries, 10 + 6);
    assert_eq!(r.stats().blocks, 6 + 4);
    assert!(r.remove_instance(InstanceId(3)));
    assert_eq!((r.stats().entries, r.stats().blocks), (6, 6));
    // Instance 1 re-announces a block it held once: it is forgotten by its next clear.
    r.apply(m(
        1,
        5,
        batch(EventKind::Create, Medium::Gpu, shared.clone()),
    ));
    assert_eq!(r.stats().entries, 8);
    r.apply(m(1, 6, Payload::Cleared { medium: None }));
    assert_eq!((r.stats().entries, r.stats().blocks), (0, 0));
}
