//! Warm restarts of a [`VllmSource`] ([`VllmSourceState`]), and batches that cannot be decoded,
//! against an engine stand-in written in Rust.
//!
//! [`Engine`] binds a PUB and a ROUTER replay socket on 127.0.0.1 with the `zeromq` crate and
//! speaks vLLM's wire: `[topic, BE64 seq, msgpack batch]` on PUB, the replay protocol of
//! `ZmqEventPublisher._service_replay` on ROUTER, batches as msgspec writes them
//! (`[ts, [events...], rank]`, events as tagged arrays). Needs no Python.

use std::sync::Arc;
use std::time::Duration;

use kvtier_core::{BlockHasher, HashScheme, Medium};
use kvtier_events::{EventMessage, InstanceId};
use kvtier_router::{QueryScratch, Router, VllmSource, VllmSourceState, vllm_instance_id};
use parking_lot::Mutex;
use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

#[path = "common/source.rs"]
mod source;
use source::wait_stats;

const BS: usize = 4;
const NAME: &str = "restarting-engine";

type Buffer = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A vLLM engine's publisher: PUB + ROUTER replay, every batch kept for replay.
struct Engine {
    publisher: PubSocket,
    endpoint: String,
    replay_endpoint: String,
    buffer: Buffer,
    seq: u64,
    replay: tokio::task::JoinHandle<()>,
}

impl Engine {
    async fn start() -> Self {
        let mut publisher = PubSocket::new();
        let endpoint = publisher
            .bind("tcp://127.0.0.1:0")
            .await
            .unwrap()
            .to_string();
        let mut router = RouterSocket::new();
        let replay_endpoint = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        let buffer: Buffer = Arc::default();
        let served = buffer.clone();
        let replay = tokio::spawn(async move {
            while let Ok(request) = router.recv().await {
                let frames: Vec<Vec<u8>> = request.iter().map(|f| f.to_vec()).collect();
                let [id, _, start] = &frames[..] else {
                    continue;
                };
                let start = u64::from_be_bytes(start[..].try_into().unwrap());
                let batches: Vec<(u64, Vec<u8>)> = served
                    .lock()
                    .iter()
                    .filter(|(seq, _)| *seq >= start)
                    .cloned()
                    .collect();
                for (seq, payload) in batches {
                    let reply = frames_of(vec![
                        id.clone(),
                        Vec::new(),
                        seq.to_be_bytes().to_vec(),
                        payload,
                    ]);
                    let _ = router.send(reply).await;
                }
                let end = frames_of(vec![
                    id.clone(),
                    Vec::new(),
                    (-1i64).to_be_bytes().to_vec(),
                    Vec::new(),
                ]);
                let _ = router.send(end).await;
            }
        });
        Self {
            publisher,
            endpoint,
            replay_endpoint,
            buffer,
            seq: 0,
            replay,
        }
    }

    /// Publishes one batch (live if `live`), keeping it for replay.
    async fn publish_payload(&mut self, payload: Vec<u8>, live: bool) {
        let seq = self.seq;
        self.seq += 1;
        self.buffer.lock().push((seq, payload.clone()));
        if live {
            let message = frames_of(vec![b"kv".to_vec(), seq.to_be_bytes().to_vec(), payload]);
            self.publisher.send(message).await.unwrap();
        }
    }

    async fn publish(&mut self, events: Vec<Value>) {
        self.publish_payload(batch(events), true).await;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.replay.abort();
    }
}

fn frames_of(frames: Vec<Vec<u8>>) -> ZmqMessage {
    let mut frames = frames.into_iter();
    let mut message = ZmqMessage::from(frames.next().unwrap_or_default());
    for frame in frames {
        message.push_back(frame.into());
    }
    message
}

/// `[ts, events, 0]` as msgspec encodes an array-like `EventBatch`.
fn batch(events: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(
        &mut out,
        &Value::Array(vec![Value::F64(1.5), Value::Array(events), Value::from(0)]),
    )
    .unwrap();
    out
}

fn ints(values: &[u64]) -> Value {
    Value::Array(values.iter().map(|&v| Value::from(v)).collect())
}

fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BS) as u32).map(|t| seed * 1000 + t).collect()
}

fn stored(hashes: &[u64], parent: Option<u64>, toks: &[u32], medium: &str) -> Value {
    Value::Array(vec![
        Value::from("BlockStored"),
        ints(hashes),
        parent.map_or(Value::Nil, Value::from),
        Value::Array(toks.iter().map(|&t| Value::from(t)).collect()),
        Value::from(BS as u64),
        Value::Nil,
        Value::from(medium),
    ])
}

fn removed(hashes: &[u64], medium: &str) -> Value {
    Value::Array(vec![
        Value::from("BlockRemoved"),
        ints(hashes),
        Value::from(medium),
    ])
}

fn hasher() -> BlockHasher {
    BlockHasher::new(BS, HashScheme::Kvtier, Default::default()).unwrap()
}

/// Applies every message that arrives within a short quiet period.
async fn drain(rx: &mut mpsc::Receiver<EventMessage>, router: &mut Router) -> usize {
    let mut n = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
    {
        router.apply(message);
        n += 1;
    }
    n
}

fn held(router: &Router, tokens: &[u32], instance: InstanceId, medium: Medium) -> u32 {
    let hashes = hasher().sequence_hashes(tokens);
    let answer = router.query(&hashes, &mut QueryScratch::default());
    answer
        .overlaps
        .iter()
        .find(|o| o.instance == instance)
        .map_or(0, |o| o.matched(medium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_source_resumes_where_the_state_was_taken() {
    let mut engine = Engine::start().await;
    let instance = vllm_instance_id(NAME, 0);
    let (endpoint, replay_endpoint) = (engine.endpoint.clone(), engine.replay_endpoint.clone());
    let builder = || {
        VllmSource::builder(NAME, endpoint.clone())
            .with_replay_endpoint(replay_endpoint.clone())
            .with_default_block_size(BS)
    };
    let mut router = Router::builder().build();
    let (a, b, c) = (tokens(1, 3), tokens(2, 1), tokens(3, 1));

    // Source A sees batches 0..=2: chain A, a second copy of A's first block, chain B.
    let (tx, mut rx) = mpsc::channel(64);
    let first = builder().build().unwrap().spawn(tx);
    wait_stats(&first, "the SUB connection", |s| s.connects >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine
        .publish(vec![stored(&[1, 2, 3], None, &a, "GPU")])
        .await;
    engine
        .publish(vec![stored(&[1], None, &a[..BS], "GPU")])
        .await;
    engine.publish(vec![stored(&[10], None, &b, "GPU")]).await;
    wait_stats(&first, "three batches", |s| {
        s.batches + s.replayed_batches - s.duplicates >= 3
    })
    .await;
    drain(&mut rx, &mut router).await;
    assert_eq!(held(&router, &a, instance, Medium::Gpu), 3);
    let state = first.state().await.expect("the source is running");
    first.shutdown().await;
    let bytes = state.to_bytes();
    assert_eq!(state.ranks(), 1);

    // While no source runs: block 3 is evicted, block 1 loses one of its two copies, chain C
    // grows under block 2 and block 2 is offloaded to the CPU.
    engine.publish(vec![removed(&[3, 1], "GPU")]).await;
    engine
        .publish(vec![stored(&[20], Some(2), &c, "GPU")])
        .await;
    engine
        .publish(vec![stored(&[2], None, &[], "CPU"), removed(&[10], "GPU")])
        .await;

    // Source B resumes from the saved bytes, its ids continuing where the router expects.
    let restored = VllmSourceState::from_bytes(&bytes).unwrap();
    let next_ids: Vec<(InstanceId, u64)> = router
        .instances()
        .iter()
        .map(|i| (i.instance, i.next_event_id))
        .collect();
    let (tx, mut rx) = mpsc::channel(64);
    let second = builder()
        .with_state(restored)
        .with_start_event_ids(Arc::new(move |instance| {
            next_ids
                .iter()
                .find(|(i, _)| *i == instance)
                .map(|(_, id)| *id)
        }))
        .build()
        .unwrap()
        .spawn(tx);
    wait_stats(&second, "the SUB connection", |s| s.connects >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next live batch opens a gap from the state's last batch: 3..=6 are replayed.
    engine.publish(vec![removed(&[20], "GPU")]).await;
    wait_stats(&second, "the gap's repair", |s| {
        s.replayed_batches >= 4 && s.batches >= 1
    })
    .await;
    drain(&mut rx, &mut router).await;

    let stats = second.shutdown().await;
    assert_eq!(stats.gaps_detected, 1, "{stats:?}");
    assert_eq!(stats.unrepairable_gaps, 0, "{stats:?}");
    assert_eq!(stats.resets, 0, "{stats:?}");
    assert_eq!(
        stats.convert.released_copies, 1,
        "block 1's second copy: {stats:?}"
    );
    let router_stats = router.stats();
    assert_eq!(router_stats.duplicates, 0, "{router_stats:?}");
    assert_eq!(router_stats.gaps_detected, 0, "{router_stats:?}");
    assert_eq!(router_stats.stale, 0, "{router_stats:?}");
    // Block 1 keeps its other copy, block 2 stays, block 3 went.
    assert_eq!(held(&router, &a, instance, Medium::Gpu), 2);
    assert_eq!(held(&router, &a[..BS], instance, Medium::Cpu), 0);
    let ac: Vec<u32> = [&a[..2 * BS], &c[..]].concat();
    assert_eq!(
        held(&router, &ac, instance, Medium::Gpu),
        2,
        "c0 stored then removed"
    );
    assert_eq!(held(&router, &b, instance, Medium::Gpu), 0);
    assert_eq!(
        stats.convert.stored_blocks, 2,
        "c0, and block 2's CPU copy: {stats:?}"
    );
    let block2 = &hasher().sequence_hashes(&a)[1..2];
    let answer = router.query(block2, &mut QueryScratch::default());
    assert_eq!(answer.overlaps[0].matched(Medium::Cpu), 1, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_is_skipped_without_clearing() {
    let mut engine = Engine::start().await;
    let (tx, mut rx) = mpsc::channel(64);
    let source = VllmSource::builder(NAME, engine.endpoint.clone())
        .with_replay_endpoint(engine.replay_endpoint.clone())
        .with_default_block_size(BS)
        .build()
        .unwrap()
        .spawn(tx);
    wait_stats(&source, "the SUB connection", |s| s.connects >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = tokens(1, 2);
    engine.publish(vec![stored(&[1, 2], None, &a, "GPU")]).await;
    // Not msgpack at all, live and in the replay buffer alike.
    engine.publish_payload(b"\xc1 garbage".to_vec(), true).await;
    // A batch with an event of an unknown type and one on an unknown medium.
    engine
        .publish(vec![
            Value::Array(vec![Value::from("BlockMoved"), ints(&[1])]),
            removed(&[2], "TAPE"),
            stored(&[3], Some(2), &tokens(2, 1), "GPU"),
        ])
        .await;
    wait_stats(&source, "three batches", |s| {
        s.replayed_batches >= 1 && s.batches >= 2
    })
    .await;
    let mut router = Router::builder().build();
    drain(&mut rx, &mut router).await;
    let stats = source.shutdown().await;
    assert_eq!(
        stats.undecodable_batches, 2,
        "live, then replayed: {stats:?}"
    );
    assert_eq!(stats.unrepairable_gaps, 0, "{stats:?}");
    assert_eq!(stats.convert.clears, 0, "{stats:?}");
    assert_eq!(
        (
            stats.convert.skipped_unknown_tag,
            stats.convert.skipped_unknown_medium
        ),
        (1, 1),
        "{stats:?}"
    );
    let instance = vllm_instance_id(NAME, 0);
    let abc: Vec<u32> = [&a[..], &tokens(2, 1)].concat();
    assert_eq!(held(&router, &abc, instance, Medium::Gpu), 3);
}
