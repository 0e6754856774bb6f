//! The publisher's stream: fan-out, lagging subscribers, replay ranges and dumps; and the wire
//! encodings (round trips, the documented JSON layout, malformed input).

use std::ops::RangeInclusive;

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    Dump, EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, MediumBlocks, Payload,
    Publisher, RecvError, ReplayError, ReplaySource, WireFormat,
};
use proptest::prelude::*;

fn batch(kind: EventKind, seeds: RangeInclusive<u64>) -> Payload {
    Payload::Batch(EventBatch {
        medium: Medium::Cpu,
        kind,
        hashes: seeds.map(SequenceHash::root).collect(),
        policy: EmitPolicy::All,
    })
}

#[test]
fn every_subscriber_gets_every_message() {
    let p = Publisher::new(InstanceId(1));
    let mut subs: Vec<_> = (0..3).map(|_| p.subscribe()).collect();
    for i in 0..10 {
        p.publish(batch(EventKind::Create, i..=i)).unwrap();
    }
    for s in &mut subs {
        let ids: Vec<u64> = std::iter::from_fn(|| s.try_recv().ok())
            .map(|m| m.event_id)
            .collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        assert_eq!(s.try_recv().unwrap_err(), RecvError::Empty);
    }
    // A late subscriber sees only what comes next; one from the oldest sees the buffer.
    let mut late = p.subscribe();
    assert_eq!(late.next_event_id(), 11);
    assert_eq!(late.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(p.subscribe_from_oldest().try_recv().unwrap().event_id, 1);
}

#[test]
fn slow_subscriber_lags_and_is_told() {
    let p = Publisher::with_replay_capacity(InstanceId(2), 4);
    let mut slow = p.subscribe();
    for i in 0..10 {
        // Publishing never waits for the slow subscriber.
        assert_eq!(p.publish(batch(EventKind::Create, i..=i)).unwrap(), i + 1);
    }
    assert_eq!(
        slow.try_recv().unwrap_err(),
        RecvError::Lagged { missed: 1..=6 }
    );
    let mut got = vec![];
    assert_eq!(slow.try_recv_many(&mut got, 100).unwrap(), 4);
    assert_eq!(
        got.iter().map(|m| m.event_id).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    // The lost ids cannot be replayed; the dump still describes all ten creates.
    assert_eq!(
        p.replay(1..=6).unwrap_err(),
        ReplayError::Gone {
            requested: 1,
            oldest_held: 7
        }
    );
    let dump = p.dump().unwrap();
    assert_eq!(dump.event_id, 10);
    assert_eq!(dump.blocks[0].hashes.len(), 10);
}

#[test]
fn replay_serves_held_ranges() {
    let p = Publisher::with_replay_capacity(InstanceId(3), 8);
    for i in 0..5 {
        p.publish(batch(EventKind::Create, i..=i)).unwrap();
    }
    let ids = |r: RangeInclusive<u64>| -> Vec<u64> {
        p.replay(r).unwrap().iter().map(|m| m.event_id).collect()
    };
    assert_eq!(ids(2..=4), [2, 3, 4]);
    assert_eq!(ids(5..=5), [5]);
    #[expect(
        clippy::reversed_empty_ranges,
        reason = "an empty range is valid input"
    )]
    let empty = 4..=3;
    assert!(p.replay(empty).unwrap().is_empty());
    assert_eq!(ids(4..=9), [4, 5]);
    assert_eq!(ids(6..=u64::MAX), Vec::<u64>::new());
}

#[test]
fn dump_follows_removes_clears_and_shutdown() {
    let p = Publisher::new(InstanceId(4));
    p.publish(batch(EventKind::Create, 1..=5)).unwrap();
    p.publish(batch(EventKind::Remove, 2..=3)).unwrap();
    p.publish(Payload::Batch(EventBatch {
        medium: Medium::Disk,
        kind: EventKind::Create,
        hashes: vec![SequenceHash::root(9)],
        policy: EmitPolicy::All,
    }))
    .unwrap();
    let dump = p.dump().unwrap();
    assert_eq!(dump.blocks.len(), 2);
    assert_eq!(dump.blocks[0].medium, Medium::Cpu);
    assert_eq!(dump.blocks[0].hashes.len(), 3);
    p.publish(Payload::Cleared {
        medium: Some(Medium::Cpu),
    })
    .unwrap();
    let dump = p.dump().unwrap();
    assert_eq!(dump.blocks.len(), 1);
    assert_eq!(dump.blocks[0].medium, Medium::Disk);
    p.shutdown();
    let dump = p.dump().unwrap();
    assert!(dump.shut_down && dump.blocks.is_empty());
    assert_eq!(dump.event_id, 5);
    assert!(p.publish(Payload::Shutdown).is_err());
}

#[test]
fn heartbeats_only_when_idle() {
    let p = Publisher::new(InstanceId(6));
    p.publish(batch(EventKind::Create, 1..=1)).unwrap();
    assert_eq!(
        p.heartbeat_if_idle(std::time::Duration::from_secs(3600)),
        None
    );
    assert_eq!(p.heartbeat_if_idle(std::time::Duration::ZERO), Some(2));
    // A heartbeat changes nothing the dump describes.
    assert_eq!(p.dump().unwrap().blocks[0].hashes.len(), 1);
    p.shutdown();
    assert_eq!(p.heartbeat_if_idle(std::time::Duration::ZERO), None);
}

#[test]
fn subscriber_sees_closed_after_shutdown() {
    let p = Publisher::new(InstanceId(5));
    let mut s = p.subscribe();
    p.shutdown();
    assert!(matches!(s.try_recv().unwrap().payload, Payload::Shutdown));
    assert_eq!(s.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(
        s.recv_timeout(std::time::Duration::from_millis(1))
            .unwrap_err(),
        RecvError::Closed
    );
}

/// The JSON layout documented in docs/events.md.
#[test]
fn json_layout_is_as_documented() {
    let msg = EventMessage {
        instance: InstanceId(0x2a),
        event_id: 7,
        payload: Payload::Batch(EventBatch {
            medium: Medium::Gpu,
            kind: EventKind::Create,
            hashes: vec![SequenceHash::from_u128(
                0x0000_0100_0000_0000_dead_beef_0000_0001,
            )],
            policy: EmitPolicy::PowerOfTwo,
        }),
    };
    let json = String::from_utf8(msg.encode(WireFormat::Json).unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"instance":"0000000000000000000000000000002a","event_id":7,"payload":{"batch":{"medium":"GPU","kind":"create","hashes":["0000010000000000deadbeef00000001"],"policy":"power_of_two"}}}"#
    );
    let shutdown = EventMessage {
        instance: InstanceId(1),
        event_id: 8,
        payload: Payload::Shutdown,
    };
    assert_eq!(
        String::from_utf8(shutdown.encode(WireFormat::Json).unwrap()).unwrap(),
        r#"{"instance":"00000000000000000000000000000001","event_id":8,"payload":"shutdown"}"#
    );
    // Hex with a 0x prefix and fewer digits is accepted on input.
    let relaxed = r#"{"instance":"0x1","event_id":8,"payload":"shutdown"}"#;
    assert_eq!(
        EventMessage::decode(relaxed.as_bytes(), WireFormat::Json).unwrap(),
        shutdown
    );
}

#[test]
fn msgpack_hashes_are_one_binary() {
    let msg = EventMessage {
        instance: InstanceId(u128::MAX),
        event_id: 1,
        payload: batch(EventKind::Remove, 1..=3),
    };
    let bytes = msg.encode(WireFormat::Msgpack).unwrap();
    // 3 hashes = one bin8 of 48 bytes: marker 0xc4, length 48.
    let pos = bytes
        .windows(2)
        .position(|w| w == [0xc4, 48])
        .expect("hashes as one bin");
    assert!(bytes.len() - pos > 48);
    // A truncated or corrupted hash blob is an error, not a panic.
    let mut bad = bytes.clone();
    bad[pos + 1] = 47;
    assert!(EventMessage::decode(&bad, WireFormat::Msgpack).is_err());
    for cut in 0..bytes.len() {
        assert!(EventMessage::decode(&bytes[..cut], WireFormat::Msgpack).is_err());
    }
}

#[test]
fn malformed_json_is_an_error() {
    for bad in [
        &b""[..],
        b"{}",
        br#"{"instance":"zz","event_id":1,"payload":"shutdown"}"#,
        br#"{"instance":"1","event_id":-1,"payload":"shutdown"}"#,
        br#"{"instance":"1","event_id":1,"payload":{"batch":{"medium":"TAPE","kind":"create","hashes":[]}}}"#,
        br#"{"instance":"123456789012345678901234567890123","event_id":1,"payload":"shutdown"}"#,
    ] {
        let err = EventMessage::decode(bad, WireFormat::Json).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}

fn arb_medium() -> impl Strategy<Value = Medium> {
    prop::sample::select(Medium::ALL.to_vec())
}

fn arb_hashes() -> impl Strategy<Value = Vec<SequenceHash>> {
    prop::collection::vec(any::<u128>().prop_map(SequenceHash::from_u128), 0..40)
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (
            arb_medium(),
            any::<bool>(),
            arb_hashes(),
            prop::sample::select(vec![
                EmitPolicy::All,
                EmitPolicy::PowerOfTwo,
                EmitPolicy::None
            ])
        )
            .prop_map(
                |(medium, create, hashes, policy)| Payload::Batch(EventBatch {
                    medium,
                    kind: if create {
                        EventKind::Create
                    } else {
                        EventKind::Remove
                    },
                    hashes,
                    policy,
                })
            ),
        prop::option::of(arb_medium()).prop_map(|medium| Payload::Cleared { medium }),
        Just(Payload::Shutdown),
        Just(Payload::Heartbeat),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(instance in any::<u128>(), event_id in any::<u64>(), payload in arb_payload()) {
        let msg = EventMessage { instance: InstanceId(instance), event_id, payload };
        for format in [WireFormat::Json, WireFormat::Msgpack] {
            let bytes = msg.encode(format).unwrap();
            prop_assert_eq!(&EventMessage::decode(&bytes, format).unwrap(), &msg);
        }
    }

    #[test]
    fn dumps_round_trip(instance in any::<u128>(), event_id in any::<u64>(),
                        blocks in prop::collection::vec((arb_medium(), arb_hashes()), 0..4),
                        shut_down in any::<bool>()) {
        let dump = Dump {
            instance: InstanceId(instance),
            event_id,
            blocks: blocks.into_iter().map(|(medium, hashes)| MediumBlocks { medium, hashes }).collect(),
            shut_down,
            policy: EmitPolicy::All,
        };
        for format in [WireFormat::Json, WireFormat::Msgpack] {
            let bytes = dump.encode(format).unwrap();
            prop_assert_eq!(&Dump::decode(&bytes, format).unwrap(), &dump);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = EventMessage::decode(&bytes, WireFormat::Msgpack);
        let _ = EventMessage::decode(&bytes, WireFormat::Json);
        let _ = Dump::decode(&bytes, WireFormat::Msgpack);
    }
}
