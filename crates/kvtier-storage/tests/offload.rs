//! Offload: the write policies' decisions, the bounded queue (a full queue skips and counts,
//! never blocks the caller), and the observer installed on a real block manager.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::offload::{
    MAX_SELECTIVE_HITS, OffloadObserver, OffloadQueue, OffloadQueueError, OffloadSink, WriteGate,
    WritePolicy, WritePolicyError,
};

type SinkResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Guards against a deadlock turning into a hung test; not a timing assertion.
const DEADLOCK_GUARD: Duration = Duration::from_secs(60);

/// Records every batch.
#[derive(Default)]
struct Collect(Mutex<Vec<SequenceHash>>);

impl OffloadSink for Collect {
    fn offload(&self, batch: &[SequenceHash]) -> SinkResult {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

/// Announces each batch, then waits until the test lets it finish.
struct Blocking {
    started: Mutex<Sender<usize>>,
    release: Mutex<Receiver<()>>,
}

impl OffloadSink for Blocking {
    fn offload(&self, batch: &[SequenceHash]) -> SinkResult {
        let _ = self.started.lock().unwrap().send(batch.len());
        let _ = self.release.lock().unwrap().recv();
        Ok(())
    }
}

/// Fails every batch.
struct Failing;

impl OffloadSink for Failing {
    fn offload(&self, _: &[SequenceHash]) -> SinkResult {
        Err("disk full".into())
    }
}

fn h(i: u64) -> SequenceHash {
    SequenceHash::root(i)
}

#[test]
fn full_queue_skips_and_counts_without_blocking_the_caller() {
    let (started_tx, started_rx) = channel();
    let (release_tx, release_rx) = channel();
    let sink = Arc::new(Blocking {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    });
    let queue = Arc::new(OffloadQueue::new(4, sink).unwrap());
    assert!(queue.try_submit(h(0)));
    // The worker now holds block 0 in the sink, which waits for `release`.
    assert_eq!(started_rx.recv_timeout(DEADLOCK_GUARD).unwrap(), 1);

    // Ten more from another thread: if a submission blocked, `done` would never arrive.
    let (done_tx, done_rx) = channel();
    let q = queue.clone();
    let submitter = std::thread::spawn(move || {
        let accepted: Vec<bool> = (1..=10).map(|i| q.try_submit(h(i))).collect();
        let _ = done_tx.send(accepted);
    });
    let accepted = done_rx
        .recv_timeout(DEADLOCK_GUARD)
        .expect("try_submit blocked on a full queue");
    assert_eq!(accepted, [[true; 4].as_slice(), &[false; 6]].concat());
    let stats = queue.stats();
    assert_eq!((stats.submitted, stats.skipped_full), (5, 6));
    assert_eq!(stats.pending(), 5);

    // Let the sink go: the four queued blocks come as one batch.
    for _ in 0..2 {
        release_tx.send(()).unwrap();
    }
    assert_eq!(started_rx.recv_timeout(DEADLOCK_GUARD).unwrap(), 4);
    submitter.join().unwrap();
    let queue = Arc::into_inner(queue).expect("the submitting thread is done");
    let deadline = std::time::Instant::now() + DEADLOCK_GUARD;
    while queue.stats().pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "worker never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = queue.stats();
    assert_eq!(
        (
            stats.submitted,
            stats.skipped_full,
            stats.offloaded,
            stats.failed
        ),
        (5, 6, 5, 0)
    );
}

#[test]
fn dropping_the_queue_drains_it_and_every_block_is_accounted_for() {
    let sink = Arc::new(Collect::default());
    let queue = OffloadQueue::new(1024, sink.clone()).unwrap();
    for i in 0..500 {
        assert!(queue.try_submit(h(i)));
    }
    drop(queue);
    let got = sink.0.lock().unwrap().clone();
    assert_eq!(got, (0..500).map(h).collect::<Vec<_>>(), "submission order");
}

#[test]
fn sink_errors_are_counted_as_failed() {
    let queue = OffloadQueue::new(8, Arc::new(Failing)).unwrap();
    for i in 0..3 {
        queue.try_submit(h(i));
    }
    let deadline = std::time::Instant::now() + DEADLOCK_GUARD;
    while queue.stats().pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "worker never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = queue.stats();
    assert_eq!((s.submitted, s.offloaded, s.failed), (3, 0, 3));
}

#[test]
fn zero_capacity_is_refused() {
    let err = OffloadQueue::new(0, Arc::new(Collect::default())).unwrap_err();
    assert!(matches!(err, OffloadQueueError::ZeroCapacity));
}

#[test]
fn selective_gate_fires_at_the_kth_hit() {
    for k in 1..=MAX_SELECTIVE_HITS {
        let gate = WriteGate::new(WritePolicy::WriteThroughSelective { hits: k }, 4096).unwrap();
        for key in 0..50u64 {
            let hash = h(key * 7919 + u64::from(k));
            assert!(!gate.on_registered(hash) && !gate.on_evicted(hash));
            let answers: Vec<bool> = (0..k).map(|_| gate.on_hit(hash)).collect();
            // Conservative update never under-counts before aging: the k-th hit always fires.
            assert!(answers[k as usize - 1], "k={k}: {answers:?}");
            assert!(gate.hits(hash) >= k);
        }
    }
}

#[test]
fn policy_names_round_trip_and_bad_thresholds_are_refused() {
    for p in WritePolicy::ALL {
        assert_eq!(p.to_string().parse::<WritePolicy>().unwrap(), p);
    }
    assert_eq!(
        "write_through_selective".parse::<WritePolicy>().unwrap(),
        WritePolicy::WriteThroughSelective { hits: 2 }
    );
    for bad in ["write_through_selective:0", "write_through_selective:16"] {
        assert!(matches!(
            bad.parse::<WritePolicy>(),
            Err(WritePolicyError::Threshold { .. })
        ));
    }
    for bad in ["", "write", "write_back:2", "write_through_selective:x"] {
        assert!(bad.parse::<WritePolicy>().is_err(), "{bad:?} parsed");
    }
    let err = WriteGate::new(WritePolicy::WriteThroughSelective { hits: 0 }, 8).unwrap_err();
    assert!(matches!(err, WritePolicyError::Threshold { hits: 0 }));
    assert!(WriteGate::new(WritePolicy::WriteThroughSelective { hits: 2 }, 0).is_err());
    assert!(
        WriteGate::new(WritePolicy::WriteBack, 0).is_ok(),
        "no sketch needed"
    );
}

/// A manager of `slots` blocks whose observer offloads under `policy` into `sink`.
fn manager_with(
    policy: WritePolicy,
    slots: usize,
    sink: Arc<Collect>,
) -> (BlockManager<G2>, Arc<OffloadObserver>) {
    let observer = Arc::new(OffloadObserver::new(
        WriteGate::new(policy, 1024).unwrap(),
        OffloadQueue::new(1024, sink).unwrap(),
    ));
    let manager = BlockManager::<G2>::builder()
        .with_block_count(slots)
        .with_observer(observer.clone())
        .build()
        .unwrap();
    (manager, observer)
}

/// Registers `hash` in its own block and releases it (cached, evictable).
fn cache(manager: &BlockManager<G2>, hash: SequenceHash) {
    let block = manager.allocate_blocks(1).unwrap().pop().unwrap();
    let staged = block.stage(hash, manager.block_size()).unwrap();
    drop(manager.register_block(staged).unwrap());
}

fn wait_drained(observer: &OffloadObserver) {
    let deadline = std::time::Instant::now() + DEADLOCK_GUARD;
    while observer.stats().pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "worker never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn observer_routes_each_policy_to_its_event() {
    // Write-through: every registration, nothing else.
    let sink = Arc::new(Collect::default());
    let (m, obs) = manager_with(WritePolicy::WriteThrough, 2, sink.clone());
    for i in 0..4 {
        cache(&m, h(i));
    }
    wait_drained(&obs);
    assert_eq!(*sink.0.lock().unwrap(), (0..4).map(h).collect::<Vec<_>>());

    // Write-back: exactly the evicted blocks (two slots, four blocks: two evictions).
    let sink = Arc::new(Collect::default());
    let (m, obs) = manager_with(WritePolicy::WriteBack, 2, sink.clone());
    for i in 0..4 {
        cache(&m, h(i));
    }
    wait_drained(&obs);
    let mut written = sink.0.lock().unwrap().clone();
    written.sort();
    let mut expected: Vec<SequenceHash> = (0..4).map(h).filter(|&x| !m.contains(x)).collect();
    expected.sort();
    assert_eq!(written.len(), 2);
    assert_eq!(written, expected, "written = evicted");
    assert_eq!(m.metrics().evictions, 2);

    // Selective (k = 2): only the block hit twice.
    let sink = Arc::new(Collect::default());
    let (m, obs) = manager_with(
        WritePolicy::WriteThroughSelective { hits: 2 },
        4,
        sink.clone(),
    );
    for i in 0..3 {
        cache(&m, h(i));
    }
    for _ in 0..2 {
        let hit = m.match_blocks(&[h(1)]);
        obs.record_hits(&[h(1)]);
        drop(hit);
    }
    let hit = m.match_blocks(&[h(2)]);
    obs.record_hits(&[h(2)]);
    drop(hit);
    wait_drained(&obs);
    assert_eq!(*sink.0.lock().unwrap(), [h(1)]);
}
