//! The router over real publishers: duplicates, reordering, gaps repaired by replay or dump,
//! shutdown, expiry, retired instances, unknown removes, power-of-two bounds, tie-breaking by
//! load, and snapshots with warm restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventBatch, EventKind, InstanceId, Payload, Publisher, ReplaySource,
};
use kvtier_router::{LoadTable, QueryScratch, Router, SnapshotError};

mod common;
use common::{chain, create, gpu_prefix, msg};

fn remove(hashes: &[SequenceHash]) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Gpu,
        kind: EventKind::Remove,
        hashes: hashes.iter().rev().copied().collect(),
        policy: EmitPolicy::All,
    })
}

#[test]
fn duplicates_and_reordering_do_not_corrupt() {
    let c = chain(6, 1);
    let mut r = Router::builder().build();
    let m1 = msg(1, 1, create(&c[..4]));
    let m2 = msg(1, 2, remove(&c[2..4]));
    let m3 = msg(1, 3, create(&c[2..6]));
    // Reordered: 3 and 2 before 1 (no source: they wait), plus duplicates of everything.
    r.apply(m1.clone());
    r.apply(m3.clone());
    r.apply(m2.clone());
    r.apply(m1);
    r.apply(m2);
    r.apply(m3);
    assert_eq!(gpu_prefix(&r, &c, 1), 6);
    let s = r.stats();
    assert_eq!(s.duplicates, 3);
    assert_eq!(s.gaps_detected, 1);
    assert_eq!(r.instances()[0].next_event_id, 4);
}

#[test]
fn create_is_idempotent_and_unknown_removes_are_counted() {
    let c = chain(3, 2);
    let mut r = Router::builder().build();
    r.apply(msg(1, 1, create(&c)));
    r.apply(msg(1, 2, create(&c)));
    r.apply(msg(1, 3, remove(&chain(2, 99))));
    assert_eq!(gpu_prefix(&r, &c, 1), 3);
    let s = r.stats();
    assert_eq!((s.unknown_removes, s.entries, s.blocks), (2, 3, 3));
}

#[test]
fn gap_is_repaired_by_replay() {
    let p = Publisher::new(InstanceId(5));
    let mut sub = p.subscribe();
    let mut r = Router::builder().build();
    r.attach_source(InstanceId(5), Arc::new(p.clone()));
    for seed in 0..5 {
        p.publish(create(&chain(2, 10 + seed))).unwrap();
    }
    // Deliver 1, lose 2..=4, deliver 5: the router replays 2..=4 from the publisher.
    let all: Vec<_> = std::iter::from_fn(|| sub.try_recv().ok()).collect();
    r.apply(all[0].clone());
    r.apply(all[4].clone());
    let s = r.stats();
    assert_eq!((s.gaps_detected, s.repaired_by_replay), (1, 1));
    for seed in 0..5 {
        assert_eq!(gpu_prefix(&r, &chain(2, 10 + seed), 5), 2);
    }
    // The lost messages arriving late are duplicates.
    r.apply(all[2].clone());
    assert_eq!(r.stats().duplicates, 1);
}

#[test]
fn gap_beyond_the_replay_buffer_is_repaired_by_dump() {
    let p = Publisher::with_replay_capacity(InstanceId(6), 2);
    let mut r = Router::builder().build();
    r.attach_source(InstanceId(6), Arc::new(p.clone()));
    let a = chain(4, 20);
    let b = chain(3, 21);
    p.publish(create(&a)).unwrap();
    r.apply(p.replay(1..=1).unwrap()[0].clone());
    p.publish(remove(&a[2..])).unwrap();
    p.publish(create(&b)).unwrap();
    p.publish(create(&chain(1, 22))).unwrap();
    // Only id 4 reaches the router; 2 is gone from the buffer.
    r.apply(p.replay(4..=4).unwrap()[0].clone());
    let s = r.stats();
    assert_eq!((s.repaired_by_replay, s.repaired_by_dump), (0, 1));
    assert_eq!(gpu_prefix(&r, &a, 6), 2);
    assert_eq!(gpu_prefix(&r, &b, 6), 3);
    assert_eq!(r.instances()[0].next_event_id, 5);
}

#[test]
fn without_a_source_a_gap_waits_then_is_skipped() {
    let mut r = Router::builder().with_max_early(2).build();
    r.apply(msg(1, 1, create(&chain(1, 1))));
    r.apply(msg(1, 3, create(&chain(1, 3))));
    assert_eq!(r.instances()[0].buffered, 1);
    r.apply(msg(1, 4, create(&chain(1, 4))));
    let s = r.stats();
    assert_eq!((s.gaps_detected, s.gaps_skipped), (1, 1));
    assert_eq!(r.instances()[0].next_event_id, 5);
    assert_eq!(gpu_prefix(&r, &chain(1, 4), 1), 1);
    // A router that joins a stream late starts where the stream is.
    r.apply(msg(2, 40, create(&chain(1, 5))));
    assert_eq!(gpu_prefix(&r, &chain(1, 5), 2), 1);
}

#[test]
fn shutdown_removes_everything_and_late_messages_stay_dead() {
    let c = chain(3, 7);
    let mut r = Router::builder().build();
    r.apply(msg(1, 1, create(&c)));
    r.apply(msg(2, 1, create(&c)));
    r.apply(msg(1, 2, Payload::Shutdown));
    let answer = r.query(&c, &mut QueryScratch::default());
    assert_eq!(answer.overlaps.len(), 1);
    assert_eq!(answer.best, Some(InstanceId(2)));
    // A duplicate of instance 1's create arriving after its shutdown is ignored.
    r.apply(msg(1, 1, create(&c)));
    assert_eq!(r.stats().stale, 1);
    assert_eq!(r.stats().instances, 1);
    assert_eq!(r.stats().shutdowns, 1);
}

#[test]
fn cleared_forgets_one_medium_or_all() {
    let c = chain(2, 8);
    let mut r = Router::builder().build();
    r.apply(msg(1, 1, create(&c)));
    r.apply(msg(
        1,
        2,
        Payload::Batch(EventBatch {
            medium: Medium::Cpu,
            kind: EventKind::Create,
            hashes: c.clone(),
            policy: EmitPolicy::All,
        }),
    ));
    r.apply(msg(
        1,
        3,
        Payload::Cleared {
            medium: Some(Medium::Gpu),
        },
    ));
    assert_eq!(r.instances()[0].blocks, [0, 2, 0, 0]);
    r.apply(msg(1, 4, Payload::Cleared { medium: None }));
    assert_eq!(r.instances()[0].blocks, [0, 0, 0, 0]);
}

#[test]
fn silent_instances_expire() {
    let mut r = Router::builder()
        .with_expiry(Some(Duration::from_secs(30)))
        .build();
    let t0 = Instant::now();
    r.apply_at(Arc::new(msg(1, 1, create(&chain(2, 1)))), t0);
    r.apply_at(
        Arc::new(msg(2, 1, create(&chain(2, 1)))),
        t0 + Duration::from_secs(20),
    );
    assert!(r.expire(t0 + Duration::from_secs(25)).is_empty());
    assert_eq!(r.expire(t0 + Duration::from_secs(40)), [InstanceId(1)]);
    assert_eq!(r.stats().expired, 1);
    assert_eq!(r.stats().entries, 2);
    // A heartbeat keeps an idle instance.
    r.apply_at(
        Arc::new(msg(2, 2, Payload::Heartbeat)),
        t0 + Duration::from_secs(50),
    );
    assert!(r.expire(t0 + Duration::from_secs(70)).is_empty());
    assert_eq!(r.instances()[0].next_event_id, 3);
    let never = Router::builder()
        .build()
        .expire(t0 + Duration::from_secs(1 << 20));
    assert!(never.is_empty());
}

#[test]
fn power_of_two_answers_are_bounds() {
    let c = chain(40, 9);
    let mut r = Router::builder().build();
    // The instance holds the first 11 blocks and announced positions 1, 2, 4, 8.
    let announced: Vec<_> = c[..11]
        .iter()
        .copied()
        .filter(|&h| EmitPolicy::PowerOfTwo.emits(h))
        .collect();
    assert_eq!(announced.len(), 4);
    r.apply(msg(
        1,
        1,
        Payload::Batch(EventBatch {
            medium: Medium::Gpu,
            kind: EventKind::Create,
            hashes: announced,
            policy: EmitPolicy::PowerOfTwo,
        }),
    ));
    let answer = r.query(&c, &mut QueryScratch::default());
    let o = &answer.overlaps[0];
    assert_eq!((o.matched(Medium::Gpu), o.upper(Medium::Gpu)), (8, 15));
    assert!((8..=15).contains(&11), "the truth lies in the bound");
    assert_eq!(o.policy, EmitPolicy::PowerOfTwo);
    // A request of 10 blocks caps the upper bound.
    let answer = r.query(&c[..10], &mut QueryScratch::default());
    assert_eq!(answer.overlaps[0].upper(Medium::Gpu), 10);
}

#[test]
fn ties_go_to_the_less_loaded_instance() {
    let c = chain(4, 3);
    let loads = LoadTable::default();
    let mut r = Router::builder()
        .with_load_signal(Arc::new(loads.clone()))
        .build();
    for id in 1..=3 {
        r.apply(msg(id, 1, create(&c[..3])));
    }
    r.apply(msg(4, 1, create(&chain(2, 50))));
    loads.set(InstanceId(1), 5.0);
    loads.set(InstanceId(2), 1.0);
    loads.set(InstanceId(3), 2.0);
    assert_eq!(
        r.query(&c, &mut QueryScratch::default()).best,
        Some(InstanceId(2))
    );
    // A longer overlap beats a lower load.
    r.apply(msg(1, 2, create(&c)));
    assert_eq!(
        r.query(&c, &mut QueryScratch::default()).best,
        Some(InstanceId(1))
    );
    // Nobody holds it: the least loaded instance (4 has load 0).
    let answer = r.query(&chain(3, 77), &mut QueryScratch::default());
    assert!(answer.overlaps.is_empty());
    assert_eq!(answer.best, Some(InstanceId(4)));
}

#[test]
fn gpu_blocks_outweigh_disk_blocks() {
    let c = chain(8, 4);
    let mut r = Router::builder().build();
    r.apply(msg(1, 1, create(&c[..4])));
    r.apply(msg(
        2,
        1,
        Payload::Batch(EventBatch {
            medium: Medium::Disk,
            kind: EventKind::Create,
            hashes: c[..6].to_vec(),
            policy: EmitPolicy::All,
        }),
    ));
    // 4 GPU blocks (score 4) beat 6 disk blocks (score 3).
    assert_eq!(
        r.query(&c, &mut QueryScratch::default()).best,
        Some(InstanceId(1))
    );
}

#[test]
fn snapshot_restores_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.snap");
    let p = Publisher::new(InstanceId(11));
    let mut sub = p.subscribe();
    let a = chain(5, 30);
    let b = chain(4, 31);
    p.publish(create(&a)).unwrap();
    let mut r = Router::builder().build();
    r.attach_source(InstanceId(11), Arc::new(p.clone()));
    r.apply(sub.try_recv().unwrap());
    r.apply(msg(12, 1, create(&b)));
    r.save_snapshot(&path).unwrap();

    // While the router is down the instance moves on.
    p.publish(remove(&a[3..])).unwrap();
    p.publish(create(&b)).unwrap();

    let mut restarted = Router::load_snapshot(Router::builder(), &path).unwrap();
    // It answers at once from the snapshot...
    assert_eq!(gpu_prefix(&restarted, &a, 11), 5);
    assert_eq!(gpu_prefix(&restarted, &b, 12), 4);
    // ...and catches up from the next event id.
    restarted.attach_source(InstanceId(11), Arc::new(p.clone()));
    assert_eq!(restarted.catch_up(), 2);
    assert_eq!(gpu_prefix(&restarted, &a, 11), 3);
    assert_eq!(gpu_prefix(&restarted, &b, 11), 4);
    assert_eq!(restarted.instances()[0].next_event_id, 4);
    assert_eq!(
        restarted.snapshot_bytes().unwrap().len() > 20,
        r.snapshot_bytes().unwrap().len() > 20
    );
}

#[test]
fn damaged_snapshots_are_errors() {
    let mut r = Router::builder().build();
    r.apply(msg(1, 1, create(&chain(3, 1))));
    let good = r.snapshot_bytes().unwrap();
    let load = |b: &[u8]| Router::from_snapshot_bytes(Router::builder(), b).map(|_| ());
    assert!(load(&good).is_ok());
    assert!(matches!(load(b"nope"), Err(SnapshotError::BadMagic)));
    assert!(matches!(
        load(&good[..good.len() - 1]),
        Err(SnapshotError::Truncated { .. })
    ));
    let mut flipped = good.clone();
    flipped[25] ^= 0x40;
    assert!(matches!(load(&flipped), Err(SnapshotError::Checksum)));
    let mut version = good.clone();
    version[8] = 9;
    assert!(matches!(load(&version), Err(SnapshotError::Version(9))));
    let mut huge = good.clone();
    huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(load(&huge), Err(SnapshotError::Truncated { .. })));
    assert!(matches!(
        Router::load_snapshot(Router::builder(), std::path::Path::new("/nonexistent/x")),
        Err(SnapshotError::Io(_))
    ));
    for cut in 0..good.len() {
        assert!(load(&good[..cut]).is_err());
    }
}

#[test]
fn dump_of_a_shut_down_instance_removes_it() {
    let p = Publisher::with_replay_capacity(InstanceId(3), 1);
    let mut r = Router::builder().build();
    r.attach_source(InstanceId(3), Arc::new(p.clone()));
    p.publish(create(&chain(2, 1))).unwrap();
    r.apply(p.replay(1..=1).unwrap()[0].clone());
    p.publish(create(&chain(2, 2))).unwrap();
    p.shutdown();
    assert!(r.apply_dump(&p.dump().unwrap()));
    assert_eq!(r.stats().instances, 0);
    assert_eq!(r.stats().entries, 0);
}
