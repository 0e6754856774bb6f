//! The emitter on a real block manager: which registrations produce events, that every Create
//! is followed by exactly one Remove, the emission policies, flushing and shutdown.

use std::sync::Arc;
use std::time::Duration;

use kvtier_core::{BlockManager, DuplicationPolicy, G1, G3, ImmutableBlock, Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventEmitter, EventKind, EventMessage, InstanceId, Payload, Publisher, RecvError,
    ReplaySource, Subscriber,
};

fn chain(n: usize, seed: u64) -> Vec<SequenceHash> {
    let mut v = vec![SequenceHash::root(seed)];
    for i in 1..n {
        let parent = v[i - 1];
        v.push(SequenceHash::child_of(
            parent,
            seed.wrapping_mul(7919) + i as u64,
        ));
    }
    v
}

struct Rig {
    manager: BlockManager<G1>,
    emitter: EventEmitter,
    publisher: Publisher,
    sub: Subscriber,
}

fn rig(blocks: usize, policy: EmitPolicy, dup: DuplicationPolicy, evict_on_release: bool) -> Rig {
    let publisher = Publisher::with_replay_capacity(InstanceId(1), 1 << 16);
    let sub = publisher.subscribe();
    let emitter = EventEmitter::builder(publisher.clone())
        .for_tier::<G1>()
        .with_policy(policy)
        .with_max_delay(None)
        .build()
        .unwrap();
    let manager = BlockManager::<G1>::builder()
        .with_block_count(blocks)
        .with_block_size(4)
        .with_duplication_policy(dup)
        .with_evict_on_release(evict_on_release)
        .with_observer(Arc::new(emitter.clone()))
        .build()
        .unwrap();
    Rig {
        manager,
        emitter,
        publisher,
        sub,
    }
}

fn register(m: &BlockManager<G1>, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<G1>> {
    let blocks = m.allocate_blocks(hashes.len()).unwrap();
    let staged: Vec<_> = blocks
        .into_iter()
        .zip(hashes)
        .map(|(b, &h)| b.stage(h, 4).unwrap())
        .collect();
    m.register_blocks(staged)
        .map_err(|e| e.to_string())
        .unwrap()
}

/// Every message received so far, flattened to (kind, hash) in stream order.
fn drain(rig: &mut Rig) -> Vec<(EventKind, SequenceHash)> {
    rig.emitter.flush();
    let mut out = vec![];
    loop {
        match rig.sub.try_recv() {
            Ok(msg) => {
                if let Payload::Batch(b) = &msg.payload {
                    assert_eq!(b.medium, Medium::Gpu);
                    out.extend(b.hashes.iter().map(|&h| (b.kind, h)));
                }
            }
            Err(RecvError::Empty | RecvError::Closed) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn creates_for_primaries_only() {
    let mut r = rig(16, EmitPolicy::All, DuplicationPolicy::Allow, false);
    let c = chain(3, 1);
    let first = register(&r.manager, &c);
    // A second registration of the same hashes makes duplicates: no events.
    let dups = register(&r.manager, &c);
    assert_eq!(
        drain(&mut r),
        c.iter()
            .map(|&h| (EventKind::Create, h))
            .collect::<Vec<_>>()
    );
    drop(dups);
    // Releasing the duplicates and the primaries moves nothing out of the tier.
    drop(first);
    assert_eq!(drain(&mut r), []);
    // Deduplicated registration (Reject) is silent too.
    let mut r = rig(16, EmitPolicy::All, DuplicationPolicy::Reject, false);
    let _a = register(&r.manager, &c);
    let _b = register(&r.manager, &c);
    assert_eq!(drain(&mut r).len(), 3);
}

#[test]
fn removes_come_once_when_blocks_leave_the_tier() {
    // Eviction.
    let mut r = rig(4, EmitPolicy::All, DuplicationPolicy::Allow, false);
    let a = chain(4, 2);
    r.manager
        .release_blocks(register(&r.manager, &a).into_iter().rev());
    let b = chain(2, 3);
    let _held = register(&r.manager, &b);
    let events = drain(&mut r);
    let removes: Vec<_> = events
        .iter()
        .filter(|e| e.0 == EventKind::Remove)
        .map(|e| e.1)
        .collect();
    assert_eq!(removes.len(), 2);
    assert!(removes.iter().all(|h| a.contains(h)));
    // Reset removes the rest of the inactive pool.
    drop(_held);
    let reset = r.manager.reset_inactive_pool().unwrap();
    let events = drain(&mut r);
    assert_eq!(events.len(), reset.len());
    assert!(events.iter().all(|e| e.0 == EventKind::Remove));

    // Evict-on-release: the last owner's release is the removal.
    let mut r = rig(8, EmitPolicy::All, DuplicationPolicy::Allow, true);
    let c = chain(2, 4);
    let held = register(&r.manager, &c);
    let extra = r.manager.match_blocks(&c);
    drop(held);
    assert_eq!(
        drain(&mut r).len(),
        2,
        "creates only while a match still holds them"
    );
    drop(extra);
    let events = drain(&mut r);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.0 == EventKind::Remove));
}

#[test]
fn power_of_two_positions_are_one_based() {
    let mut r = rig(64, EmitPolicy::PowerOfTwo, DuplicationPolicy::Allow, false);
    let c = chain(20, 5);
    let _held = register(&r.manager, &c);
    let positions: Vec<u32> = drain(&mut r).iter().map(|e| e.1.position() + 1).collect();
    assert_eq!(positions, [1, 2, 4, 8, 16]);
    assert_eq!(r.emitter.stats().filtered, 15);
    let mut r = rig(64, EmitPolicy::None, DuplicationPolicy::Allow, false);
    let _held = register(&r.manager, &c);
    assert_eq!(drain(&mut r), []);
    assert_eq!(r.publisher.last_event_id(), 0);
}

#[test]
fn batches_state_their_policy() {
    let mut r = rig(8, EmitPolicy::PowerOfTwo, DuplicationPolicy::Allow, false);
    let _held = register(&r.manager, &chain(2, 6));
    r.emitter.flush();
    let msg = r.sub.try_recv().unwrap();
    let Payload::Batch(b) = &msg.payload else {
        panic!("{msg:?}")
    };
    assert_eq!(b.policy, EmitPolicy::PowerOfTwo);
    assert_eq!(r.publisher.dump().unwrap().policy, EmitPolicy::PowerOfTwo);
}

#[test]
fn release_handle_announces_once() {
    let publisher = Publisher::new(InstanceId(2));
    let mut sub = publisher.subscribe();
    let emitter = EventEmitter::builder(publisher.clone())
        .for_tier::<G3>()
        .with_max_delay(None)
        .build()
        .unwrap();
    let h = SequenceHash::root(77);
    let handle = emitter.track(h);
    assert_eq!(handle.hash(), h);
    drop(handle);
    emitter.flush();
    let mut seen = vec![];
    while let Ok(m) = sub.try_recv() {
        if let Payload::Batch(b) = &m.payload {
            assert_eq!(b.medium, Medium::Disk);
            seen.extend(b.hashes.iter().map(|&x| (b.kind, x)));
        }
    }
    assert_eq!(seen, [(EventKind::Create, h), (EventKind::Remove, h)]);
    assert!(publisher.dump().unwrap().blocks.is_empty());
}

#[test]
fn time_limit_flushes_without_a_call() {
    let publisher = Publisher::new(InstanceId(3));
    let mut sub = publisher.subscribe();
    let emitter = EventEmitter::builder(publisher.clone())
        .with_max_delay(Some(Duration::from_millis(2)))
        .build()
        .unwrap();
    let _h = emitter.track(SequenceHash::root(1));
    // Generous: this checks that it arrives at all, not how fast.
    let msg = sub.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(msg.event_id, 1);
    assert!(emitter.oldest_pending().is_none());
}

#[test]
fn idle_emitter_sends_heartbeats() {
    let publisher = Publisher::new(InstanceId(5));
    let mut sub = publisher.subscribe();
    let _emitter = EventEmitter::builder(publisher.clone())
        .with_max_delay(Some(Duration::from_millis(1)))
        .with_heartbeat(Some(Duration::from_millis(5)))
        .build()
        .unwrap();
    // Generous: this checks that one arrives at all, not when.
    let msg = sub.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(msg.payload, Payload::Heartbeat);
}

#[test]
fn shutdown_flushes_and_closes() {
    let publisher = Publisher::new(InstanceId(4));
    let mut sub = publisher.subscribe();
    let emitter = EventEmitter::builder(publisher.clone())
        .with_max_delay(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let _h = emitter.track(SequenceHash::root(1));
    emitter.shutdown();
    publisher.shutdown();
    publisher.shutdown(); // idempotent
    let kinds: Vec<bool> = std::iter::from_fn(|| sub.try_recv().ok())
        .map(|m| matches!(m.payload, Payload::Shutdown))
        .collect();
    assert_eq!(kinds, [false, true]);
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Closed);
    // Later events are counted as dropped, not published.
    drop(_h);
    emitter.flush();
    assert_eq!(emitter.stats().dropped, 1);
    assert_eq!(publisher.last_event_id(), 2);
}

/// Two threads register and evict on one manager; the stream must describe, per hash, an
/// alternation Create, Remove, Create, ... and end in exactly the manager's registered set.
#[test]
fn concurrent_stream_is_consistent_with_the_manager() {
    let mut r = rig(64, EmitPolicy::All, DuplicationPolicy::Reject, false);
    let r_manager = &r.manager;
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                let mut x = t + 1;
                for _ in 0..2000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let c = chain(1 + (x >> 60) as usize, (x >> 33) % 300);
                    if r_manager.available_blocks() < c.len() {
                        continue;
                    }
                    let Ok(blocks) = r_manager.allocate_blocks(c.len()) else {
                        continue;
                    };
                    let staged: Vec<_> = blocks
                        .into_iter()
                        .zip(&c)
                        .map(|(b, &h)| b.stage(h, 4).unwrap())
                        .collect();
                    let held = r_manager.register_blocks(staged).unwrap();
                    r_manager.release_blocks(held.into_iter().rev());
                }
            });
        }
    });
    let events = drain(&mut r);
    let mut live = std::collections::HashMap::<SequenceHash, bool>::new();
    for (kind, h) in events {
        let was = live.insert(h, kind == EventKind::Create).unwrap_or(false);
        assert_eq!(
            was,
            kind == EventKind::Remove,
            "{kind:?} of {h:?} out of order"
        );
    }
    let dump = r.publisher.dump().unwrap();
    let dumped: Vec<SequenceHash> = dump.blocks.iter().flat_map(|b| b.hashes.clone()).collect();
    let stream_live = live.iter().filter(|e| *e.1).count();
    assert_eq!(dumped.len(), stream_live);
    for h in &dumped {
        assert!(r.manager.contains(*h), "{h:?} announced but not held");
    }
    let held = r.manager.metrics().inactive_pool_size as usize;
    assert_eq!(held, dumped.len());
}

#[test]
fn messages_carry_instance_and_contiguous_ids() {
    let mut r = rig(32, EmitPolicy::All, DuplicationPolicy::Allow, false);
    for seed in 0..5 {
        r.manager.release_blocks(
            register(&r.manager, &chain(3, 100 + seed))
                .into_iter()
                .rev(),
        );
        r.emitter.flush();
    }
    let msgs: Vec<Arc<EventMessage>> = std::iter::from_fn(|| r.sub.try_recv().ok()).collect();
    assert_eq!(msgs.len(), 5);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.instance, InstanceId(1));
        assert_eq!(m.event_id, i as u64 + 1);
    }
}
