//! Gap repair never stalls the router: a replay source that blocks (a slow network, a stuck
//! engine) holds up only its own instance's gap, while queries and other instances' messages
//! go on, both with the router used directly (take, fetch, apply) and inside the service.
//! Also: event ids at the ends of the `u64` range are refused and counted, never wrapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kvtier_events::{
    Dump, EmitPolicy, EventMessage, InstanceId, Payload, Publisher, ReplayError, ReplaySource,
};
use kvtier_router::{Router, RouterService};
use parking_lot::RwLock;

mod common;
use common::{chain, create, gpu_prefix, msg};

/// A publisher whose replay (and dump) waits at a barrier: entered, then released by the test.
struct BlockingSource {
    inner: Publisher,
    entered: AtomicBool,
    gate: Barrier,
}

impl BlockingSource {
    fn new(inner: Publisher) -> Arc<Self> {
        Arc::new(Self {
            inner,
            entered: AtomicBool::new(false),
            gate: Barrier::new(2),
        })
    }

    fn wait_entered(&self) {
        let start = Instant::now();
        while !self.entered.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "replay never called"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl ReplaySource for BlockingSource {
    fn replay(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<Arc<EventMessage>>, ReplayError> {
        self.entered.store(true, Ordering::SeqCst);
        self.gate.wait();
        self.inner.replay(range)
    }

    fn dump(&self) -> Result<Dump, ReplayError> {
        self.inner.dump()
    }
}

/// Releases a blocked source even when an assertion fails first, so no thread hangs.
struct Release(Arc<BlockingSource>);

impl Drop for Release {
    fn drop(&mut self) {
        if self.0.entered.load(Ordering::SeqCst) {
            self.0.gate.wait();
        }
    }
}

#[test]
fn a_blocked_replay_holds_no_lock() {
    let (a, b) = (chain(6, 1), chain(4, 2));
    let publisher = Publisher::new(InstanceId(1));
    let mut sub = publisher.subscribe();
    for h in a.chunks(2) {
        publisher.publish(create(h)).unwrap();
    }
    let source = BlockingSource::new(publisher.clone());
    let router = Arc::new(RwLock::new(Router::builder().build()));
    router.write().attach_source(InstanceId(1), source.clone());

    // Message 1 is lost: message 2 opens a gap, and the router queues a job instead of
    // calling the source.
    let _lost = sub.try_recv().unwrap();
    let jobs = {
        let mut r = router.write();
        r.apply_at(sub.try_recv().unwrap(), Instant::now());
        r.take_repairs()
    };
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].instance(), InstanceId(1));
    assert_eq!(jobs[0].range(), 1..=1);
    assert!(!source.entered.load(Ordering::SeqCst));
    // One job per gap: a further early message queues no second one.
    router
        .write()
        .apply_at(sub.try_recv().unwrap(), Instant::now());
    assert!(router.write().take_repairs().is_empty());

    let fetcher =
        std::thread::spawn(move || jobs.into_iter().map(|j| j.fetch()).collect::<Vec<_>>());
    source.wait_entered();
    let release = Release(source.clone());

    // The replay is stuck; the router still takes other instances' messages and answers.
    {
        let mut r = router
            .try_write_for(Duration::from_secs(5))
            .expect("the write lock is free during a replay");
        r.apply_at(msg(2, 1, create(&b)).into(), Instant::now());
    }
    {
        let r = router
            .try_read_for(Duration::from_secs(5))
            .expect("the read lock is free during a replay");
        assert_eq!(gpu_prefix(&r, &b, 2), 4);
        assert_eq!(gpu_prefix(&r, &a, 1), 0);
        assert_eq!(r.instances()[0].buffered, 2);
    }

    drop(release);
    let results = fetcher.join().unwrap();
    let mut r = router.write();
    for result in results {
        assert!(result.error().is_none(), "{result:?}");
        r.apply_repair(result);
    }
    assert_eq!(gpu_prefix(&r, &a, 1), 6);
    assert_eq!(r.stats().repaired_by_replay, 1);
    assert_eq!(r.instances()[0].buffered, 0);
    assert_eq!(r.next_event_id(InstanceId(1)), Some(4));
}

#[test]
fn a_result_is_checked_against_the_stream_as_it_is_when_applied() {
    let a = chain(6, 3);
    let publisher = Publisher::new(InstanceId(1));
    let mut sub = publisher.subscribe();
    for h in a.chunks(2) {
        publisher.publish(create(h)).unwrap();
    }
    let mut router = Router::builder().build();
    router.attach_source(InstanceId(1), Arc::new(publisher.clone()));
    let (m1, m2, m3) = (
        sub.try_recv().unwrap(),
        sub.try_recv().unwrap(),
        sub.try_recv().unwrap(),
    );
    router.apply_at(m3, Instant::now());
    let jobs = router.take_repairs();
    assert_eq!(jobs[0].range(), 1..=2);
    let result = jobs.into_iter().next().unwrap().fetch();
    // Meanwhile the lost messages arrive after all.
    router.apply_at(m1, Instant::now());
    router.apply_at(m2, Instant::now());
    assert_eq!(router.next_event_id(InstanceId(1)), Some(4));
    router.apply_repair(result);
    assert_eq!(router.stats().duplicates, 0);
    assert_eq!(router.stats().repaired_by_replay, 0);
    assert_eq!(router.stats().entries, 6);
    assert_eq!(router.next_event_id(InstanceId(1)), Some(4));
}

#[test]
fn a_failed_repair_is_counted_and_the_next_early_message_tries_again() {
    struct Down;
    impl ReplaySource for Down {
        fn replay(
            &self,
            _: std::ops::RangeInclusive<u64>,
        ) -> Result<Vec<Arc<EventMessage>>, ReplayError> {
            Err(ReplayError::Unavailable("down".into()))
        }
        fn dump(&self) -> Result<Dump, ReplayError> {
            Err(ReplayError::Unavailable("down".into()))
        }
    }
    let mut router = Router::builder().with_max_early(3).build();
    router.attach_source(InstanceId(1), Arc::new(Down));
    router.apply(msg(1, 2, create(&chain(1, 4))));
    assert_eq!(router.stats().repairs_failed, 1);
    router.apply(msg(1, 3, Payload::Heartbeat));
    assert_eq!(router.stats().repairs_failed, 2);
    // The buffer fills: the gap is skipped.
    router.apply(msg(1, 4, Payload::Heartbeat));
    assert_eq!(router.stats().gaps_skipped, 1);
    assert_eq!(router.next_event_id(InstanceId(1)), Some(5));
    assert_eq!(router.stats().entries, 1);
}

#[test]
fn the_service_ingests_and_answers_while_a_replay_blocks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (chain(4, 5), chain(3, 6));
    let publisher = Publisher::new(InstanceId(1));
    let mut sub = publisher.subscribe();
    for h in a.chunks(2) {
        publisher.publish(create(h)).unwrap();
    }
    let source = BlockingSource::new(publisher.clone());
    let service = rt
        .block_on(RouterService::builder(Router::builder().build()).start())
        .unwrap();
    service
        .router()
        .write()
        .attach_source(InstanceId(1), source.clone());
    let events = service.events();
    let _lost = sub.try_recv().unwrap();
    events.blocking_send(sub.try_recv().unwrap()).unwrap();
    source.wait_entered();
    let release = Release(source.clone());

    events.blocking_send(msg(2, 1, create(&b)).into()).unwrap();
    let start = Instant::now();
    loop {
        let r = service
            .router()
            .try_read_for(Duration::from_secs(5))
            .expect("queries are answered while a replay blocks");
        if gpu_prefix(&r, &b, 2) == 3 {
            break;
        }
        drop(r);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "instance 2 not ingested"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(gpu_prefix(&service.router().read(), &a, 1), 0);

    drop(release);
    let start = Instant::now();
    while gpu_prefix(&service.router().read(), &a, 1) != 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gap not repaired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(service.router().read().stats().repaired_by_replay, 1);
    rt.block_on(service.stop()).unwrap();
}

#[test]
fn event_ids_at_the_ends_of_the_range_are_refused_not_wrapped() {
    let mut router = Router::builder().build();
    router.apply(msg(1, 0, create(&chain(1, 7))));
    router.apply(msg(1, u64::MAX, create(&chain(1, 7))));
    assert_eq!(router.stats().bad_event_ids, 2);
    assert_eq!(router.stats().entries, 0);
    assert_eq!(router.next_event_id(InstanceId(1)), None);

    // A stream that starts late, just below the top: the last usable id is u64::MAX - 1.
    let top = u64::MAX - 1;
    router.apply(msg(2, top - 1, create(&chain(2, 8))));
    router.apply(msg(2, top, Payload::Heartbeat));
    assert_eq!(router.next_event_id(InstanceId(2)), Some(u64::MAX));
    router.apply(msg(2, u64::MAX, Payload::Cleared { medium: None }));
    assert_eq!(router.stats().bad_event_ids, 3);
    assert_eq!(router.stats().entries, 2);

    // A dump at u64::MAX is refused too; one just below is applied.
    let dump = |event_id| Dump {
        instance: InstanceId(3),
        event_id,
        blocks: vec![],
        shut_down: false,
        policy: EmitPolicy::All,
    };
    assert!(!router.apply_dump(&dump(u64::MAX)));
    assert_eq!(router.stats().bad_event_ids, 4);
    assert!(router.apply_dump(&dump(top)));
    assert_eq!(router.next_event_id(InstanceId(3)), Some(u64::MAX));

    // Removing or expiring an instance that never applied anything does not underflow.
    router.attach_source(InstanceId(4), Arc::new(Publisher::new(InstanceId(4))));
    assert!(router.remove_instance(InstanceId(4)));
    assert_eq!(router.next_event_id(InstanceId(4)), Some(1));
    // A shut-down instance answers the id after its last one.
    router.apply(msg(5, 1, create(&chain(1, 9))));
    router.apply(msg(5, 2, Payload::Shutdown));
    assert_eq!(router.next_event_id(InstanceId(5)), Some(3));
}
