//! [`VllmSource`] against a real ZeroMQ publisher with vLLM's wire layout.
//!
//! `tests/python/vllm_publisher.py` (pyzmq + msgspec with vLLM's struct definitions, in the venv that
//! `scripts/python-env.sh` creates on first use) binds a PUB and a ROUTER replay socket on
//! free 127.0.0.1 ports and plays a fixed scenario: chains of blocks with bytes and integer
//! hashes, in both event layouts vLLM has used, a LoRA, a filtered sliding-window group,
//! removals, one sequence number skipped on the live socket, an unknown parent, and
//! `AllBlocksCleared` (after which a store under a remembered block re-establishes it). The expected kvtier hashes are computed here from the same tokens with
//! [`BlockHasher`], so a router querying by tokens finds exactly these blocks.
//!
//! Slow joiners: the publisher waits for `go` on stdin, sent once the source is connected; a
//! batch lost anyway before the first one arrives is fetched by the source's late-join replay.
//! Phase 2 (with the skipped batch) starts only after phase 1 arrived, so its gap is real.
//!
//! Set `KVTIER_SKIP_PYTHON_TESTS=1` to skip the tests that need Python.

use std::time::{Duration, Instant};

use kvtier_core::{BlockHasher, HashScheme, Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{VllmSource, VllmSourceBuilder, VllmSourceHandle, vllm_instance_id};
use kvtier_testkit::net::free_port;
use kvtier_testkit::python::skip_python_tests;
use kvtier_testkit::vllm::{VllmPublisher, VllmPublisherBuilder};
use tokio::sync::mpsc;

#[path = "common/source.rs"]
mod source;
use source::{WAIT, wait_stats};

const BLOCK_SIZE: usize = 4;
const MODEL: &str = "test-model";
const NAME: &str = "engine-under-test";
const TOPIC: &str = "kv-events";

/// A publisher on [`TOPIC`] (killed when dropped, whatever the test's outcome).
fn publisher() -> VllmPublisherBuilder {
    VllmPublisher::builder().with_topic(TOPIC)
}

/// The tokens of the script's `tokens(seed, blocks)`.
fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BLOCK_SIZE) as u32)
        .map(|t| seed * 1000 + t)
        .collect()
}

fn hasher(lora: Option<&str>) -> BlockHasher {
    let source = VllmSource::builder(NAME, "tcp://127.0.0.1:1")
        .with_model(MODEL)
        .build()
        .unwrap();
    let config = source.convert_config();
    BlockHasher::new(BLOCK_SIZE, HashScheme::Kvtier, config.extra_keys(lora)).unwrap()
}

fn concat(parts: &[&[u32]]) -> Vec<u32> {
    parts.concat()
}

fn create(hashes: Vec<SequenceHash>) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Gpu,
        kind: EventKind::Create,
        hashes,
        policy: EmitPolicy::All,
    })
}

fn remove(hashes: Vec<SequenceHash>) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Gpu,
        kind: EventKind::Remove,
        hashes,
        policy: EmitPolicy::All,
    })
}

/// The payloads of phase 1 (seq 0, 1, 2) and of phase 2 up to the gap's repair (seq 3).
fn expected_common() -> Vec<Payload> {
    let plain = hasher(None);
    let a = plain.sequence_hashes(&tokens(1, 4));
    let b = hasher(Some("sql-adapter")).sequence_hashes(&tokens(2, 2));
    vec![
        create(a[..3].to_vec()),
        create(vec![a[3]]),
        create(b.to_vec()),
        remove(vec![a[3]]),
    ]
}

/// Every payload when seq 4 is recovered from the replay buffer.
fn expected_repaired() -> Vec<Payload> {
    let plain = hasher(None);
    // Chain C branches off chain A after its second block: a request for A[..2 blocks] + C
    // hashes to exactly what the converter produced from the engine's events.
    let ac = plain.sequence_hashes(&concat(&[&tokens(1, 2), &tokens(3, 3)]));
    assert_eq!(ac[4].position(), 4);
    let b = hasher(Some("sql-adapter")).sequence_hashes(&tokens(2, 2));
    let mut expected = expected_common();
    expected.extend([
        create(ac[2..4].to_vec()), // seq 4: only from the replay buffer
        create(vec![ac[4]]),       // seq 5: placeable only because seq 4 was repaired
        // seq 6: two removal events, one message; children first within each
        remove(vec![b[1], ac[4], ac[3]]),
        Payload::Cleared { medium: None },
    ]);
    expected.push(expected_seq8());
    expected
}

/// Seq 8, after `AllBlocksCleared`: e0's parent a0 is remembered, so e0 is placed and shows the
/// engine holds a0 again; e1 is a fresh root. One message.
fn expected_seq8() -> Payload {
    let plain = hasher(None);
    let a0_e0 = plain.sequence_hashes(&concat(&[&tokens(1, 1), &tokens(5, 1)]));
    let e1 = plain.sequence_hashes(&tokens(5, 2)[BLOCK_SIZE..]);
    create(vec![a0_e0[0], a0_e0[1], e1[0]])
}

async fn recv_n(rx: &mut mpsc::Receiver<EventMessage>, n: usize, got: &mut Vec<EventMessage>) {
    let want = got.len() + n;
    while got.len() < want {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(message)) => got.push(message),
            Ok(None) => panic!("the source stopped; got {got:#?}"),
            Err(_) => panic!(
                "timed out waiting for message {}; got {got:#?}",
                got.len() + 1
            ),
        }
    }
}

/// Spawns a source on `publisher`'s sockets (`configure` adds options to the common ones),
/// waits for its SUB connection and lets the subscription settle.
async fn connect_source(
    publisher: &VllmPublisher,
    configure: impl FnOnce(VllmSourceBuilder) -> VllmSourceBuilder,
) -> (VllmSourceHandle, mpsc::Receiver<EventMessage>) {
    let builder = VllmSource::builder(NAME, publisher.endpoint())
        .with_replay_endpoint(publisher.replay_endpoint())
        .with_topic(TOPIC)
        .with_model(MODEL);
    let source = configure(builder).build().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let handle = source.spawn(tx);
    wait_stats(&handle, "the SUB connection", |s| s.connects >= 1).await;
    // Let the publisher's I/O thread register the subscription (the slow-joiner window);
    // a batch lost anyway is recovered by the late-join replay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (handle, rx)
}

/// A source whose publisher never answers (nothing listens on its port).
fn unanswered_source() -> VllmSource {
    let port = free_port();
    VllmSource::builder(NAME, format!("tcp://127.0.0.1:{port}"))
        .build()
        .unwrap()
}

/// When the source starts relative to the publisher's phases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Before phase 1.
    First,
    /// After phase 1 was published (to nobody).
    AfterPhase1,
}

/// Starts the source, then runs the script's two phases; returns every message.
async fn run_scenario(
    publisher: &mut VllmPublisher,
    start: Start,
    messages: usize,
    applied_seqs: u64,
) -> (Vec<EventMessage>, VllmSourceHandle) {
    if start == Start::AfterPhase1 {
        publisher.send("go");
        assert!(publisher.wait_line("PHASE1_DONE", WAIT));
    }
    let (handle, mut rx) = connect_source(publisher, |builder| {
        builder
            .with_default_block_size(BLOCK_SIZE)
            .with_replay_timeout(Duration::from_secs(5))
    })
    .await;

    let mut got = Vec::new();
    if start == Start::First {
        publisher.send("go");
        recv_n(&mut rx, 3, &mut got).await;
    }
    publisher.send("continue");
    recv_n(&mut rx, messages - got.len(), &mut got).await;
    assert!(publisher.wait_line("PHASE2_DONE", WAIT));
    // Every live batch is applied live or found applied already by a replay; wait until all
    // that can be applied were (seq 4 never comes live).
    wait_stats(&handle, "every batch applied", |s| {
        s.batches + s.replayed_batches - s.duplicates == applied_seqs
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "no message beyond the expected ones"
    );
    (got, handle)
}

fn assert_stream(got: &[EventMessage], instance: InstanceId, expected: &[Payload]) {
    for (i, (message, payload)) in got.iter().zip(expected).enumerate() {
        assert_eq!(message.instance, instance, "message {i}");
        assert_eq!(
            message.event_id,
            i as u64 + 1,
            "event ids are contiguous from 1"
        );
        assert_eq!(
            &message.payload,
            payload,
            "message {i} (event id {})",
            i + 1
        );
    }
    assert_eq!(got.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_is_repaired_by_replay_and_hashes_match_tokens() {
    if skip_python_tests() {
        return;
    }
    let mut publisher = publisher().with_dp_rank(2).start();
    let (got, handle) = run_scenario(&mut publisher, Start::First, 9, 9).await;
    publisher.send("done");
    assert_stream(&got, vllm_instance_id(NAME, 2), &expected_repaired());

    let stats = handle.shutdown().await;
    assert_eq!(stats.gaps_detected, 1, "{stats:?}");
    assert_eq!(stats.unrepairable_gaps, 0, "{stats:?}");
    assert!(stats.replays_requested >= 1, "{stats:?}");
    assert_eq!(stats.replay_failures, 0, "{stats:?}");
    assert!(stats.replayed_batches >= 1, "{stats:?}");
    // Seqs 0..=8 were each applied exactly once, live or replayed.
    assert!(
        stats.batches >= 7,
        "at most seq 0 lost to the slow joiner: {stats:?}"
    );
    assert_eq!(
        (stats.decode_errors, stats.undecodable_batches),
        (1, 1),
        "the two malformed messages: {stats:?}"
    );
    assert_eq!(
        stats.convert.unplaceable_blocks, 1,
        "d0 waited for its parent until the clear: {stats:?}"
    );
    assert_eq!(stats.convert.pending_dropped, 1, "{stats:?}");
    assert_eq!(stats.convert.reestablished_blocks, 1, "a0: {stats:?}");
    assert_eq!(stats.convert.unknown_removes, 1, "{stats:?}");
    assert_eq!(
        stats.convert.filtered_events, 1,
        "the sliding-window copy: {stats:?}"
    );
    assert_eq!(stats.messages, 9, "{stats:?}");
    assert_eq!(stats.convert.clears, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_missing_from_the_replay_buffer_is_counted_and_clears_nothing() {
    if skip_python_tests() {
        return;
    }
    let mut publisher = publisher().with_drop_from_buffer().start();
    let (got, handle) = run_scenario(&mut publisher, Start::First, 7, 8).await;
    publisher.send("done");

    let b = hasher(Some("sql-adapter")).sequence_hashes(&tokens(2, 2));
    let mut expected = expected_common();
    expected.extend([
        // Seq 4 is gone for good: counted, and what the instance held stays indexed. Seq 5's
        // stores wait for parents stored in seq 4; seq 6 removes B1 (known), c1 (unknown) and
        // c2 (waiting).
        remove(vec![b[1]]),
        // Seq 7 is AllBlocksCleared: the waiting stores are dropped.
        Payload::Cleared { medium: None },
        expected_seq8(),
    ]);
    assert_stream(&got, vllm_instance_id(NAME, 0), &expected);

    let stats = handle.shutdown().await;
    assert_eq!(stats.gaps_detected, 1, "{stats:?}");
    assert_eq!(stats.unrepairable_gaps, 1, "{stats:?}");
    assert_eq!(
        (
            stats.convert.unplaceable_blocks,
            stats.convert.pending_dropped
        ),
        (2, 2),
        "c2 and d0 waited until the clear: {stats:?}"
    );
    assert_eq!(stats.convert.unknown_removes, 2, "424242, c1: {stats:?}");
    assert_eq!(
        stats.convert.pending_removes, 1,
        "c2 (12345) while it waited: {stats:?}"
    );
    assert_eq!(stats.convert.clears, 1, "{stats:?}");
    assert_eq!(
        (stats.decode_errors, stats.undecodable_batches),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_join_catches_up_from_the_replay_buffer() {
    if skip_python_tests() {
        return;
    }
    let mut publisher = publisher().start();
    let (got, handle) = run_scenario(&mut publisher, Start::AfterPhase1, 9, 9).await;
    publisher.send("done");
    // Phase 1 was published before the source existed, and seq 4 was never live: the
    // late-join replay brings all of it, so nothing is missing and no gap is seen.
    assert_stream(&got, vllm_instance_id(NAME, 0), &expected_repaired());
    let stats = handle.shutdown().await;
    assert_eq!(stats.gaps_detected, 0, "{stats:?}");
    assert_eq!(stats.unrepairable_gaps, 0, "{stats:?}");
    assert_eq!(stats.replays_requested, 1, "{stats:?}");
    assert_eq!(stats.replayed_batches, 9, "{stats:?}");
    assert_eq!(
        stats.duplicates, stats.batches,
        "every live batch came by replay first: {stats:?}"
    );
}

#[tokio::test]
async fn shutdown_is_prompt_without_a_publisher() {
    let source = unanswered_source();
    let (tx, _rx) = mpsc::channel(1);
    let handle = source.spawn(tx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!handle.is_finished());
    let stats = tokio::time::timeout(Duration::from_secs(2), handle.shutdown())
        .await
        .expect("shutdown returns promptly");
    assert_eq!(stats.connects, 0);
}

#[tokio::test]
async fn external_shutdown_future_stops_the_source() {
    let source = unanswered_source();
    let (tx, _rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = source.spawn_with_shutdown(tx, async move {
        let _ = stop_rx.await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!handle.is_finished());
    stop_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "the source did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_restart_is_detected_after_an_idle_reconnect() {
    if skip_python_tests() {
        return;
    }
    let mut first = publisher().start();
    let ports = first.ports();
    let (handle, mut rx) = connect_source(&first, |builder| {
        builder.with_idle_reconnect(Some(Duration::from_millis(500)))
    })
    .await;
    let mut got = Vec::new();
    first.send("go");
    recv_n(&mut rx, 3, &mut got).await;
    drop(first);

    // A new engine on the same ports: its sequence starts at 0 again and its cache is empty.
    let mut second = publisher().with_ports(ports).start();
    let connects = handle.stats().connects;
    wait_stats(&handle, "a reconnect", |s| s.connects > connects).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    second.send("go");
    recv_n(&mut rx, 4, &mut got).await;
    second.send("done");

    let mut expected = expected_common()[..3].to_vec();
    expected.push(Payload::Cleared { medium: None });
    expected.extend(expected_common()[..3].iter().cloned());
    assert_stream(&got, vllm_instance_id(NAME, 0), &expected);
    let stats = handle.shutdown().await;
    assert_eq!(stats.resets, 1, "{stats:?}");
    assert_eq!(stats.gaps_detected, 0, "{stats:?}");
}
