//! [`VllmSource`] delivery: every message converted from every batch reaches the consumer,
//! in order and with contiguous event ids, also through a channel that is full most of the
//! time (the source's `try_send` fast path falls back to waiting), into an owned channel or
//! a router service's shared one; and a source blocked on a full channel still stops at once.
//!
//! The publisher is the `zeromq` crate's PUB socket on a free 127.0.0.1 port; batches are
//! small, so none is dropped for want of buffer space.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_events::EventMessage;
use kvtier_router::{VllmSource, VllmSourceHandle};
use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

const WAIT: Duration = Duration::from_secs(20);
const EVENTS: u64 = 100;

/// Batch `seq`: `EVENTS` one-block root stores, alternately on GPU and CPU, so that no two
/// neighbours share a medium and the source sends one message per event (it coalesces runs of
/// same-kind, same-medium events).
fn batch(seq: u64) -> Vec<u8> {
    let events = (0..EVENTS)
        .map(|i| {
            let block = seq * EVENTS + i;
            Value::Array(vec![
                Value::from("BlockStored"),
                Value::Array(vec![Value::from(block)]),
                Value::Nil,
                Value::Array((0..4).map(|t| Value::from(block * 4 + t)).collect()),
                Value::from(4),
                Value::Nil,
                Value::from(if i % 2 == 0 { "GPU" } else { "CPU" }),
            ])
        })
        .collect();
    let value = Value::Array(vec![Value::F64(1.0), Value::Array(events), Value::from(0)]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).expect("encode");
    out
}

async fn publish(publisher: &mut PubSocket, seq: u64) {
    let mut m = ZmqMessage::from(Vec::<u8>::new());
    m.push_back(seq.to_be_bytes().to_vec().into());
    m.push_back(batch(seq).into());
    publisher.send(m).await.expect("send");
}

async fn bound_publisher() -> (PubSocket, String) {
    let mut publisher = PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.expect("bind");
    (publisher, endpoint.to_string())
}

async fn wait_connected(handle: &VllmSourceHandle) {
    let deadline = Instant::now() + WAIT;
    while handle.stats().connects == 0 {
        assert!(Instant::now() < deadline, "the source never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The consumer's end of either kind of channel.
enum Rx {
    Owned(mpsc::Receiver<EventMessage>),
    Shared(mpsc::Receiver<Arc<EventMessage>>),
}

impl Rx {
    async fn recv(&mut self) -> Option<EventMessage> {
        match self {
            Self::Owned(rx) => rx.recv().await,
            Self::Shared(rx) => rx
                .recv()
                .await
                .map(|m| Arc::try_unwrap(m).expect("not shared")),
        }
    }
}

/// Publishes batch 0 until its first message arrives (the slow-joiner window; repeats are
/// duplicates the source drops), then batch 1; receives every message, slowly.
async fn receive_all(publisher: &mut PubSocket, rx: &mut Rx) -> Vec<EventMessage> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.is_empty() {
        assert!(Instant::now() < deadline, "batch 0 never arrived");
        publish(publisher, 0).await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            got.push(m);
        }
    }
    publish(publisher, 1).await;
    while got.len() < 2 * EVENTS as usize {
        let m = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a message in time")
            .expect("the source runs");
        got.push(m);
        if got.len() % 32 == 0 {
            // A slow consumer: the source finds the channel full and waits.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    got
}

fn assert_in_order(got: &[EventMessage], source: &VllmSource) {
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.event_id,
            i as u64 + 1,
            "event ids are contiguous and in order"
        );
        assert_eq!(m.instance, source.instance_id(0));
    }
}

#[tokio::test]
async fn a_full_channel_loses_and_reorders_nothing() {
    let (mut publisher, endpoint) = bound_publisher().await;
    let source = VllmSource::builder("delivery", endpoint)
        .with_default_block_size(4)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    let handle = source.clone().spawn(tx);
    wait_connected(&handle).await;
    let got = receive_all(&mut publisher, &mut Rx::Owned(rx)).await;
    assert_in_order(&got, &source);
    let stats = handle.shutdown().await;
    assert_eq!(stats.messages, 2 * EVENTS);
    assert_eq!(stats.convert.stored_blocks, 2 * EVENTS);
    assert_eq!(stats.convert.unplaceable_blocks, 0);
}

#[tokio::test]
async fn a_shared_channel_gets_every_message_whole() {
    let (mut publisher, endpoint) = bound_publisher().await;
    let source = VllmSource::builder("delivery", endpoint)
        .with_default_block_size(4)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    let handle = source.clone().spawn_shared(tx);
    wait_connected(&handle).await;
    let got = receive_all(&mut publisher, &mut Rx::Shared(rx)).await;
    assert_in_order(&got, &source);
    assert_eq!(handle.shutdown().await.messages, 2 * EVENTS);
}

#[tokio::test]
async fn a_source_blocked_on_a_full_channel_stops_at_once() {
    let (mut publisher, endpoint) = bound_publisher().await;
    let source = VllmSource::builder("delivery", endpoint)
        .with_default_block_size(4)
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let handle = source.spawn(tx);
    wait_connected(&handle).await;
    let deadline = Instant::now() + WAIT;
    // Nobody reads after the first message: the source waits on the full channel.
    loop {
        assert!(Instant::now() < deadline, "batch 0 never arrived");
        publish(&mut publisher, 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if handle.stats().batches > 0 {
            break;
        }
    }
    let stopping = Instant::now();
    let stats = tokio::time::timeout(Duration::from_secs(2), handle.shutdown())
        .await
        .expect("shutdown while blocked on a full channel is prompt");
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert!(stats.messages < EVENTS, "it was blocked: {stats:?}");
    assert!(rx.recv().await.is_some());
}
