//! A router restarted from its snapshot resumes: what the instances published while it was
//! down, and what they publish after it is back, is indexed, and nothing is discarded as a
//! duplicate. kvtier instances are caught up from their publishers (replay, or a dump when
//! the replay buffer has moved on); a source that numbers events itself (the vLLM converter)
//! starts at [`Router::next_event_id`]; an instance with no source to replay from is joined
//! where its stream is, not after a full buffer.

use std::sync::Arc;

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload, Publisher, ReplaySource,
};
use kvtier_router::{Router, write_snapshot};

mod common;
use common::{chain, gpu_prefix};

fn batch(kind: EventKind, hashes: &[SequenceHash]) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Gpu,
        kind,
        hashes: hashes.to_vec(),
        policy: EmitPolicy::All,
    })
}

/// Every block the publisher's stream says it holds is indexed for it, and nothing else.
fn assert_in_step(router: &Router, publisher: &Publisher) {
    let dump = publisher.dump().unwrap();
    let info = router
        .instances()
        .into_iter()
        .find(|i| i.instance == publisher.instance())
        .expect("instance known");
    let held: usize = dump.blocks.iter().map(|b| b.hashes.len()).sum();
    assert_eq!(info.blocks.iter().sum::<usize>(), held);
    assert_eq!(info.next_event_id, dump.event_id + 1);
    assert_eq!(info.buffered, 0);
}

/// Restarts `router` through a snapshot file: serialise, write, restore.
fn restart(router: &Router, dir: &std::path::Path) -> Router {
    let path = dir.join("router.snap");
    write_snapshot(&path, &router.snapshot_bytes().unwrap()).unwrap();
    let (restored, err) = Router::restore_or_empty(Router::builder(), &path);
    assert!(err.is_none(), "{err:?}");
    restored
}

#[test]
fn kvtier_instances_resume_through_replay_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    // Instance 1 keeps a deep replay buffer; instance 2's moves on while the router is down.
    let (p1, p2) = (
        Publisher::new(InstanceId(1)),
        Publisher::with_replay_capacity(InstanceId(2), 2),
    );
    let (a, b) = (chain(12, 1), chain(12, 2));
    let mut router = Router::builder().build();
    let mut subs = vec![];
    for p in [&p1, &p2] {
        router.attach_source(p.instance(), Arc::new(p.clone()));
        subs.push(p.subscribe());
    }
    p1.publish(batch(EventKind::Create, &a[..4])).unwrap();
    p2.publish(batch(EventKind::Create, &b[..4])).unwrap();
    for sub in &mut subs {
        router.apply(sub.try_recv().unwrap());
    }
    let mut router = restart(&router, dir.path());
    assert_eq!(gpu_prefix(&router, &a, 1), 4);

    // While the router is down: both move on (instance 2 by more than its buffer).
    p1.publish(batch(EventKind::Create, &a[4..8])).unwrap();
    p1.publish(batch(EventKind::Remove, &a[7..8])).unwrap();
    for i in 4..8 {
        p2.publish(batch(EventKind::Create, &b[i..i + 1])).unwrap();
    }
    // Back up: sources attached, new subscriptions, more events.
    let mut subs: Vec<_> = [&p1, &p2]
        .into_iter()
        .map(|p| {
            router.attach_source(p.instance(), Arc::new(p.clone()));
            p.subscribe()
        })
        .collect();
    p1.publish(batch(EventKind::Create, &a[7..12])).unwrap();
    p2.publish(batch(EventKind::Create, &b[8..12])).unwrap();
    for sub in &mut subs {
        router.apply(sub.try_recv().unwrap());
    }
    assert_eq!(gpu_prefix(&router, &a, 1), 12);
    assert_eq!(gpu_prefix(&router, &b, 2), 12);
    assert_in_step(&router, &p1);
    assert_in_step(&router, &p2);
    let stats = router.stats();
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.gaps_skipped, 0);
    assert_eq!((stats.repaired_by_replay, stats.repaired_by_dump), (1, 1));
    // Caught up: nothing left to fetch.
    assert_eq!(router.catch_up(), 0);
}

#[test]
fn catch_up_after_restart_fetches_what_was_missed() {
    let dir = tempfile::tempdir().unwrap();
    let p = Publisher::new(InstanceId(5));
    let mut sub = p.subscribe();
    let a = chain(6, 5);
    let mut router = Router::builder().build();
    router.attach_source(InstanceId(5), Arc::new(p.clone()));
    p.publish(batch(EventKind::Create, &a[..2])).unwrap();
    router.apply(sub.try_recv().unwrap());
    let mut router = restart(&router, dir.path());
    p.publish(batch(EventKind::Create, &a[2..6])).unwrap();
    router.attach_source(InstanceId(5), Arc::new(p.clone()));
    // The service way: queue, fetch without the lock, apply.
    router.queue_catch_up();
    for job in router.take_repairs() {
        assert_eq!(job.range(), 2..=u64::MAX);
        router.apply_repair(job.fetch());
    }
    assert_eq!(gpu_prefix(&router, &a, 5), 6);
    assert_in_step(&router, &p);
    // The subscriber that was there before the restart delivers message 2 again: a duplicate
    // of what catch-up applied, counted and ignored.
    router.apply(sub.try_recv().unwrap());
    assert_eq!(router.stats().duplicates, 1);
    assert_in_step(&router, &p);
}

#[test]
fn a_self_numbering_source_starts_at_next_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let engine = InstanceId(0xE);
    let a = chain(10, 9);
    let mut router = Router::builder().build();
    let msg = |event_id, payload| EventMessage {
        instance: engine,
        event_id,
        payload,
    };
    for (id, h) in (1..).zip(a[..6].chunks(2)) {
        router.apply(msg(id, batch(EventKind::Create, h)));
    }
    let mut router = restart(&router, dir.path());
    assert_eq!(router.next_event_id(engine), Some(4));
    assert_eq!(router.next_event_id(InstanceId(0xF)), None);

    // The converter restarts numbering at the router's next id: every event is applied.
    let start = router.next_event_id(engine).unwrap();
    router.apply(msg(start, batch(EventKind::Create, &a[6..8])));
    router.apply(msg(start + 1, batch(EventKind::Create, &a[8..10])));
    assert_eq!(gpu_prefix(&router, &a, 0xE), 10);
    assert_eq!(router.stats().duplicates, 0);
    assert_eq!(router.stats().gaps_detected, 0);
}

#[test]
fn without_a_source_the_restored_router_joins_the_stream_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let a = chain(8, 3);
    let mut router = Router::builder().build();
    let msg = |event_id, payload| EventMessage {
        instance: InstanceId(3),
        event_id,
        payload,
    };
    router.apply(msg(1, batch(EventKind::Create, &a[..2])));
    let mut router = restart(&router, dir.path());
    // Messages 2..=9 were published while the router was down and are gone; message 10 is
    // the first it hears: applied at once, not buffered until the early buffer fills.
    router.apply(msg(10, batch(EventKind::Create, &a[2..8])));
    assert_eq!(gpu_prefix(&router, &a, 3), 8);
    assert_eq!(router.instances()[0].buffered, 0);
    assert_eq!(router.stats().gaps_skipped, 1);
    router.apply(msg(11, batch(EventKind::Remove, &a[7..8])));
    assert_eq!(gpu_prefix(&router, &a, 3), 7);
    assert_eq!(router.stats().duplicates, 0);
}
