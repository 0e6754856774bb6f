//! SUBSCRIBE against a real node: live events of another client's PUTs, replay from an event
//! id, UNSUBSCRIBE, and other requests served on the same connection meanwhile.

mod common;

use std::collections::HashSet;

use common::*;
use kvtier_core::SequenceHash;
use kvtier_events::{EventKind, Payload, WireFormat};
use kvtier_node::Node;
use kvtier_proto::{EndReason, PutBlocks, PutStatus, Request, Response, Subscribe, SubscribeEvent};

const BLOCK: usize = 4096;

fn put(conn: &mut Conn, id: u64, hashes: &[SequenceHash]) {
    let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, BLOCK)).collect();
    let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let frame = conn.call(
        id,
        &Request::Put {
            durable: false,
            blocks: PutBlocks::new(hashes, &slices).unwrap(),
        },
    );
    assert_eq!(
        response(&frame, &conn.limits),
        Response::Put(vec![PutStatus::Stored; hashes.len()])
    );
}

/// Reads SUBSCRIBE frames of request `id` until every hash of `want` was announced created.
fn created(sub: &mut Conn, id: u64, want: &[SequenceHash]) -> u64 {
    let mut seen = HashSet::new();
    let mut last_id = 0;
    while !want.iter().all(|h| seen.contains(h)) {
        let frame = sub.recv_frame().expect("stream closed");
        let (header, r) = kvtier_proto::decode_response(&frame, &sub.limits).unwrap();
        assert_eq!(header.request_id, id);
        let Response::Subscribe(event) = r else {
            panic!("not a SUBSCRIBE frame: {r:?}")
        };
        if let Some(m) = event.decode_message() {
            let m = m.unwrap();
            assert!(m.event_id > last_id, "event ids increase");
            last_id = m.event_id;
            if let Payload::Batch(b) = m.payload
                && b.kind == EventKind::Create
            {
                seen.extend(b.hashes);
            }
        }
    }
    last_id
}

#[test]
fn subscribers_see_puts_replay_and_unsubscribe() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node): Option<Node> = start(config(dir.path(), backend, BLOCK)) else {
            continue;
        };
        let mut sub = Conn::connect(node.addr());
        let mut writer = Conn::connect(node.addr());
        sub.send(
            7,
            &Request::Subscribe(Subscribe {
                from_event_id: 0,
                format: WireFormat::Json,
            }),
        );
        let frame = sub.recv_frame().unwrap();
        let Response::Subscribe(SubscribeEvent::Started { last_event_id, .. }) =
            response(&frame, &sub.limits)
        else {
            panic!("first frame is not Started")
        };
        assert_eq!(last_event_id, 0);

        let hashes = chain(9, 5);
        put(&mut writer, 1, &hashes);
        let last = created(&mut sub, 7, &hashes);
        assert!(last >= 1);

        // Other requests on the subscribed connection are answered meanwhile (between event
        // frames: the disk tier's copies may still be announced).
        sub.send(8, &Request::Ping(b"still here"));
        let frame = loop {
            let frame = sub.recv_frame().expect("closed before the PONG");
            let (header, _) = kvtier_proto::decode_response(&frame, &sub.limits).unwrap();
            if header.request_id == 8 {
                break frame;
            }
            assert_eq!(
                header.request_id, 7,
                "only the subscription's frames come between"
            );
        };
        assert_eq!(response(&frame, &sub.limits), Response::Pong(b"still here"));

        // A second subscription replays from event 1.
        let mut late = Conn::connect(node.addr());
        late.send(
            3,
            &Request::Subscribe(Subscribe {
                from_event_id: 1,
                format: WireFormat::Msgpack,
            }),
        );
        let frame = late.recv_frame().unwrap();
        assert!(matches!(
            response(&frame, &late.limits),
            Response::Subscribe(SubscribeEvent::Started {
                last_event_id: 0,
                ..
            })
        ));
        created(&mut late, 3, &hashes);

        // UNSUBSCRIBE: acknowledged, and the stream ends with Ended(Unsubscribed).
        sub.send(9, &Request::Unsubscribe { subscription: 7 });
        let (mut acked, mut ended) = (false, false);
        while !(acked && ended) {
            let frame = sub.recv_frame().expect("closed");
            match response(&frame, &sub.limits) {
                Response::Unsubscribe { found } => {
                    assert!(found);
                    acked = true;
                }
                Response::Subscribe(SubscribeEvent::Ended(reason)) => {
                    assert_eq!(reason, EndReason::Unsubscribed);
                    ended = true;
                }
                Response::Subscribe(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let frame = sub.call(10, &Request::Unsubscribe { subscription: 7 });
        assert_eq!(
            response(&frame, &sub.limits),
            Response::Unsubscribe { found: false }
        );
        // Shutdown with a subscription still open returns.
        node.shutdown().unwrap();
    }
}

/// Reads SUBSCRIBE frames of request `id` until `done` says the (medium, kind, hash) events
/// seen so far are enough.
fn events_until(
    sub: &mut Conn,
    id: u64,
    seen: &mut HashSet<(kvtier_core::Medium, EventKind, SequenceHash)>,
    done: impl Fn(&HashSet<(kvtier_core::Medium, EventKind, SequenceHash)>) -> bool,
) {
    while !done(seen) {
        let frame = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sub.recv_frame()))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("events stopped before the expected ones: {seen:?}"));
        let (header, r) = kvtier_proto::decode_response(&frame, &sub.limits).unwrap();
        assert_eq!(header.request_id, id);
        let Response::Subscribe(event) = r else {
            panic!("not a SUBSCRIBE frame: {r:?}")
        };
        if let Some(m) = event.decode_message()
            && let Payload::Batch(b) = m.unwrap().payload
        {
            seen.extend(b.hashes.iter().map(|h| (b.medium, b.kind, *h)));
        }
        if let Some(d) = event.decode_dump() {
            for m in d.unwrap().blocks {
                seen.extend(m.hashes.iter().map(|h| (m.medium, EventKind::Create, *h)));
            }
        }
    }
}

/// A subscription replaying from the instance's first event.
fn subscribe_from_start(node: &Node, id: u64) -> Conn {
    let mut sub = Conn::connect(node.addr());
    sub.send(
        id,
        &Request::Subscribe(Subscribe {
            from_event_id: 1,
            format: WireFormat::Msgpack,
        }),
    );
    sub
}

/// What the disk tier holds is published as the `Disk` medium: blocks copied there by
/// write-through, blocks deleted from it, and after a restart what it kept, so a router
/// following the node still sees the blocks host memory evicted.
#[test]
fn disk_residency_is_published_as_the_disk_medium() {
    use kvtier_core::Medium::{Cpu, Disk};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK);
    cfg.host_bytes = kvtier_node::ByteSize(4 * BLOCK as u64);
    let node = Node::start(cfg.clone()).unwrap();
    let mut sub = subscribe_from_start(&node, 5);
    let mut writer = Conn::connect(node.addr());
    let hashes = chain(21, 8);
    // Durable PUTs: on disk before the reply, whatever host memory evicts meanwhile.
    for (i, pair) in hashes.chunks(2).enumerate() {
        let bytes: Vec<Vec<u8>> = pair.iter().map(|&h| pattern(h, BLOCK)).collect();
        let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let request = Request::Put {
            durable: true,
            blocks: PutBlocks::new(pair, &slices).unwrap(),
        };
        let frame = writer.call(i as u64 + 1, &request);
        assert_eq!(
            response(&frame, &writer.limits),
            Response::Put(vec![PutStatus::Stored; 2])
        );
    }
    let mut seen = HashSet::new();
    events_until(&mut sub, 5, &mut seen, |s| {
        hashes
            .iter()
            .all(|h| s.contains(&(Disk, EventKind::Create, *h)))
            && s.iter()
                .filter(|(m, k, _)| (*m, *k) == (Cpu, EventKind::Remove))
                .count()
                >= 4
    });

    let frame = writer.call(
        9,
        &Request::Delete(kvtier_proto::HashList::new(&hashes[7..])),
    );
    assert_eq!(
        response(&frame, &writer.limits),
        Response::Delete(vec![true])
    );
    events_until(&mut sub, 5, &mut seen, |s| {
        s.contains(&(Disk, EventKind::Remove, hashes[7]))
    });
    node.shutdown().unwrap();

    // A restart: the new instance announces what the disk kept, the deleted block excepted.
    let node = Node::start(cfg).unwrap();
    let mut sub = subscribe_from_start(&node, 6);
    let mut seen = HashSet::new();
    events_until(&mut sub, 6, &mut seen, |s| {
        hashes[..7]
            .iter()
            .all(|h| s.contains(&(Disk, EventKind::Create, *h)))
    });
    assert!(!seen.contains(&(Disk, EventKind::Create, hashes[7])));
    node.shutdown().unwrap();
}
