//! The blocking [`Client`] against the scripted peer: every operation, pipelining with
//! replies sent in reverse order, ERROR frames (fatal and not), a peer that dies in the middle
//! of a reply, timeouts, limits, replies that do not fit their request, and a subscription.

mod peer;

use std::time::{Duration, Instant};

use kvtier_client::{Client, ClientConfig, ClientError, SubscriptionEvent};
use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{Dump, EventBatch, EventKind, EventMessage, Payload, WireFormat};
use kvtier_proto::{
    EndReason, ErrorCode, Limits, PutStatus, Request, Response, ServerInfo, SubscribeEvent, TierId,
    TierSet,
};
use peer::{Peer, Store, block, chain, encode};

fn connect(peer: &Peer) -> Client {
    Client::connect(peer.addr(), ClientConfig::new()).expect("connect")
}

#[test]
fn every_operation_reaches_the_server_and_its_reply_comes_back() {
    let peer = Peer::spawn(|conn| {
        let (namespace, token) = conn.hello()?;
        assert_eq!(namespace, "tenant-a");
        assert_eq!(token.as_deref(), Some(&b"s3cret"[..]));
        Store::default().serve(conn)
    });
    let config = ClientConfig::new()
        .with_namespace("tenant-a")
        .with_token(b"s3cret".to_vec());
    let mut client = Client::connect(peer.addr(), config).unwrap();
    assert_eq!(client.server().server, peer::SERVER_NAME);
    assert_eq!(client.server().instance, peer::INSTANCE);
    assert_eq!(client.server().version, 1);

    let h = chain(4);
    let (b0, b1, b2) = (block(1, 4096), block(2, 4096), block(3, 100_000));
    let statuses = client
        .put(&[(h[0], &b0), (h[1], &b1), (h[2], &b2)], false)
        .unwrap();
    assert_eq!(statuses, [PutStatus::Stored; 3]);
    let again = client.put(&[(h[0], &b0)], true).unwrap();
    assert_eq!(again, [PutStatus::AlreadyPresent]);

    let got = client.get(&[h[2], h[3], h[0]]).unwrap();
    assert_eq!(got.len(), 3);
    let large = got[0].as_ref().expect("h2 stored");
    assert_eq!((large.tier(), large.bytes()), (TierId::G2, &b2[..]));
    assert!(got[1].is_none());
    assert_eq!(got[2].as_ref().map(|b| b.bytes()), Some(&b0[..]));

    let g2 = TierSet::EMPTY.with(TierId::G2);
    assert_eq!(client.match_prefix(&h).unwrap(), [g2; 3]);
    assert_eq!(client.match_prefix(&[h[3], h[0]]).unwrap(), []);
    assert_eq!(client.exists(&[h[3], h[1]]).unwrap(), [TierSet::EMPTY, g2]);
    assert_eq!(client.delete(&[h[1], h[3]]).unwrap(), [true, false]);
    assert_eq!(client.exists(&[h[1]]).unwrap(), [TierSet::EMPTY]);
    let stats = client.stats().unwrap();
    assert_eq!(stats, [("blocks".to_string(), 2), ("puts".to_string(), 3)]);
    client.ping().unwrap();
    assert_eq!(client.outstanding(), 0);
    drop(client);
    peer.join();
}

#[test]
fn pipelined_replies_sent_in_reverse_order_reach_their_tickets() {
    let h = chain(3);
    let big = [block(10, 70_000), block(11, 70_000), block(12, 70_000)];
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let mut store = Store::default();
        // Five requests arrive before any reply is sent; the replies go out last first.
        let mut replies = Vec::new();
        for _ in 0..5 {
            let frame = conn.expect()?;
            replies.push(store.answer(&frame));
        }
        // A reply to an id the client never used is ignored by it.
        conn.send_raw(&encode(9_999, &Response::Pong(b"stray")))?;
        for reply in replies.iter().rev() {
            conn.send_raw(reply)?;
        }
        store.serve(conn)
    });
    let mut client = connect(&peer);
    let blocks: Vec<_> = h
        .iter()
        .zip(&big)
        .map(|(h, b)| (*h, b.as_slice()))
        .collect();
    let put = client.send_put(&blocks, false).unwrap();
    let get = client.send_get(&[h[1], h[2], h[0]]).unwrap();
    let prefix = client
        .send_match(&[h[0], h[1], SequenceHash::root(7)])
        .unwrap();
    let exists = client.send_exists(&[SequenceHash::root(7), h[2]]).unwrap();
    let pong = client.send_ping(b"last").unwrap();
    assert_eq!(client.outstanding(), 5);
    assert!(put.id() < pong.id());

    // The first reply to arrive is the last request's.
    assert_eq!(client.wait_any().unwrap(), Some(pong.id()));
    // Waiting in send order buffers the others by id.
    assert_eq!(client.wait(&put).unwrap(), [PutStatus::Stored; 3]);
    let got = client.wait(&get).unwrap();
    let bytes: Vec<&[u8]> = got.iter().map(|b| b.as_ref().unwrap().bytes()).collect();
    assert_eq!(bytes, [&big[1][..], &big[2][..], &big[0][..]]);
    // The blocks are windows on the one buffer the reply was read into, not copies.
    assert_eq!(
        bytes[1].as_ptr(),
        bytes[0].as_ptr().wrapping_add(bytes[0].len())
    );
    assert_eq!(client.wait(&prefix).unwrap().len(), 2);
    let g2 = TierSet::EMPTY.with(TierId::G2);
    assert_eq!(client.wait(&exists).unwrap(), [TierSet::EMPTY, g2]);
    assert_eq!(&client.wait(&pong).unwrap()[..], b"last");
    assert_eq!(client.wait_any().unwrap(), None);
    // A spent ticket is refused.
    assert!(matches!(
        client.wait(&pong),
        Err(ClientError::UnknownRequest { .. })
    ));
    client.ping().unwrap();
    drop(client);
    peer.join();
}

#[test]
fn a_discarded_ticket_does_not_disturb_the_others() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let mut store = Store::default();
        let first = conn.expect()?;
        let second = conn.expect()?;
        let (a, b) = (store.answer(&first), store.answer(&second));
        conn.send_raw(&a)?;
        conn.send_raw(&b)?;
        store.serve(conn)
    });
    let mut client = connect(&peer);
    let dropped = client.send_ping(b"unwanted").unwrap();
    let kept = client.send_ping(b"wanted").unwrap();
    client.discard(dropped);
    assert_eq!(client.outstanding(), 1);
    assert_eq!(&client.wait(&kept).unwrap()[..], b"wanted");
    assert_eq!(client.wait_any().unwrap(), None);
    drop(client);
    peer.join();
}

#[test]
fn an_error_frame_fails_its_request_only() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let failing = conn.expect()?;
        let fine = conn.expect()?;
        conn.send_raw(&Store::default().answer(&fine))?;
        conn.send_error(failing.id(), ErrorCode::NoSpace, false, "tier full")?;
        Store::default().serve(conn)
    });
    let mut client = connect(&peer);
    let b = block(1, 512);
    let put = client
        .send_put(&[(SequenceHash::root(1), &b)], false)
        .unwrap();
    let ping = client.send_ping(b"ok").unwrap();
    match client.wait(&put) {
        Err(ClientError::Server {
            code,
            message,
            fatal,
        }) => {
            assert_eq!(code, ErrorCode::NoSpace);
            assert_eq!(message, "tier full");
            assert!(!fatal);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(&client.wait(&ping).unwrap()[..], b"ok");
    assert!(!client.is_closed());
    client.ping().unwrap();
    drop(client);
    peer.join();
}

#[test]
fn a_fatal_error_frame_closes_the_client_and_fails_the_rest() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let first = conn.expect()?;
        let _second = conn.expect()?;
        conn.send_error(first.id(), ErrorCode::Malformed, true, "bad frame")?;
        conn.close();
        Ok(())
    });
    let mut client = connect(&peer);
    let first = client.send_stats().unwrap();
    let second = client.send_ping(b"x").unwrap();
    let err = client.wait(&first).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::Malformed,
                fatal: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_fatal());
    assert!(client.is_closed());
    match client.wait(&second) {
        Err(ClientError::Closed { reason }) => assert!(reason.contains("bad frame"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(client.ping(), Err(ClientError::Closed { .. })));
    peer.join();
}

#[test]
fn a_peer_that_closes_in_the_middle_of_a_reply_is_a_clear_error_not_a_hang() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let get = conn.expect()?;
        let mut store = Store::default();
        store
            .blocks
            .insert(SequenceHash::root(1), block(5, 200_000));
        let reply = store.answer(&get);
        conn.send_raw(&reply[..reply.len() / 2])?;
        conn.close();
        Ok(())
    });
    let mut client = connect(&peer);
    let started = Instant::now();
    let err = client.get(&[SequenceHash::root(1)]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        ClientError::Closed { reason } => {
            assert!(reason.contains("middle of a frame"), "{reason}");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(client.is_closed());
    assert!(matches!(client.ping(), Err(ClientError::Closed { .. })));
    peer.join();
}

#[test]
fn a_timeout_leaves_the_request_outstanding_and_its_late_reply_is_matched() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let ping = conn.expect()?;
        std::thread::sleep(Duration::from_millis(1500));
        conn.send_raw(&Store::default().answer(&ping))?;
        Store::default().serve(conn)
    });
    let config = ClientConfig::new().with_io_timeout(Some(Duration::from_millis(400)));
    let mut client = Client::connect(peer.addr(), config).unwrap();
    let ping = client.send_ping(b"slow").unwrap();
    let err = client.wait(&ping).unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(!err.is_fatal());
    let echo = loop {
        match client.wait(&ping) {
            Err(ClientError::Timeout { .. }) => continue,
            other => break other.unwrap(),
        }
    };
    assert_eq!(&echo[..], b"slow");
    client.ping().unwrap();
    drop(client);
    peer.join();
}

#[test]
fn requests_over_the_servers_limits_are_refused_before_sending() {
    let peer = Peer::spawn(|conn| {
        let hello = conn.expect()?;
        let limits = Limits::default();
        let info = Response::Hello(ServerInfo {
            version: 1,
            block_bytes: 4096,
            max_frame_bytes: limits.max_frame_bytes,
            max_blocks_per_request: 4,
            instance: peer::INSTANCE,
            server: "small",
        });
        conn.send_raw(&encode(hello.id(), &info))?;
        // The only request that arrives is the one within the limit.
        let frame = conn.expect()?;
        assert!(matches!(frame.request(), Request::Exists(h) if h.len() == 4));
        conn.send_raw(&Store::default().answer(&frame))?;
        assert!(conn.recv()?.is_none());
        Ok(())
    });
    let mut client = connect(&peer);
    assert_eq!(client.server().max_blocks_per_request, 4);
    assert_eq!(client.server().block_bytes, 4096);
    let h = chain(5);
    let err = client.exists(&h).unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err:?}");
    assert!(!err.is_fatal());
    assert_eq!(client.exists(&h[..4]).unwrap(), [TierSet::EMPTY; 4]);
    drop(client);
    peer.join();
}

#[test]
fn replies_that_do_not_fit_their_request_are_errors_and_the_client_goes_on() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let get = conn.expect()?;
        // A GET of two hashes answered with one entry.
        conn.send_raw(&encode(get.id(), &Response::Exists(vec![TierSet::EMPTY])))?;
        let get = conn.expect()?;
        conn.send_raw(&encode(
            get.id(),
            &Response::Get(kvtier_proto::GetBlocks::new(&[
                kvtier_proto::BlockResult::Missing,
            ])),
        ))?;
        Store::default().serve(conn)
    });
    let mut client = connect(&peer);
    let h = chain(2);
    let err = client.get(&h).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::UnexpectedReply {
                expected: kvtier_proto::Opcode::Get,
                got: kvtier_proto::Opcode::Exists
            }
        ),
        "{err:?}"
    );
    let err = client.get(&h).unwrap_err();
    assert!(matches!(err, ClientError::BadReply { .. }), "{err:?}");
    client.ping().unwrap();
    drop(client);
    peer.join();
}

#[test]
fn a_refused_hello_is_the_servers_error() {
    let peer = Peer::spawn(|conn| {
        let hello = conn.expect()?;
        conn.send_error(hello.id(), ErrorCode::AuthFailed, true, "bad token")?;
        conn.close();
        Ok(())
    });
    let err = Client::connect(
        peer.addr(),
        ClientConfig::new().with_token(b"nope".to_vec()),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::AuthFailed,
                fatal: true,
                ..
            }
        ),
        "{err:?}"
    );
    peer.join();
}

fn event_message(id: u64) -> EventMessage {
    EventMessage {
        instance: peer::INSTANCE,
        event_id: id,
        payload: Payload::Batch(EventBatch {
            medium: Medium::Cpu,
            kind: EventKind::Create,
            hashes: chain(2),
            policy: Default::default(),
        }),
    }
}

fn dump(id: u64) -> Dump {
    Dump {
        instance: peer::INSTANCE,
        event_id: id,
        blocks: Vec::new(),
        shut_down: false,
        policy: Default::default(),
    }
}

#[test]
fn a_subscription_yields_its_events_then_ended_while_requests_go_on() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let sub = conn.expect()?;
        let Request::Subscribe(s) = sub.request() else {
            panic!("expected SUBSCRIBE");
        };
        assert_eq!((s.from_event_id, s.format), (5, WireFormat::Json));
        let id = sub.id();
        let body = event_message(5).encode(WireFormat::Json).unwrap();
        let dump_body = dump(6).encode(WireFormat::Json).unwrap();
        let frames = [
            SubscribeEvent::Started {
                instance: peer::INSTANCE,
                last_event_id: 4,
            },
            SubscribeEvent::Event {
                format: WireFormat::Json,
                body: &body,
            },
        ];
        for f in frames {
            conn.send_raw(&encode(id, &Response::Subscribe(f)))?;
        }
        // A PING between events; its reply comes after the dump.
        let ping = conn.expect()?;
        let dump_frame = SubscribeEvent::Dump {
            format: WireFormat::Json,
            body: &dump_body,
        };
        conn.send_raw(&encode(id, &Response::Subscribe(dump_frame)))?;
        conn.send_raw(&Store::default().answer(&ping))?;
        let unsub = conn.expect()?;
        assert_eq!(unsub.request(), Request::Unsubscribe { subscription: id });
        conn.send_raw(&encode(unsub.id(), &Response::Unsubscribe { found: true }))?;
        let end = SubscribeEvent::Ended(EndReason::Unsubscribed);
        conn.send_raw(&encode(id, &Response::Subscribe(end)))?;
        Store::default().serve(conn)
    });
    let mut client = connect(&peer);
    let sub = client.subscribe(5, WireFormat::Json).unwrap();
    client.ping().unwrap(); // events that arrive meanwhile are queued
    assert!(client.unsubscribe(sub).unwrap());
    let events: Vec<SubscriptionEvent> = client.events(sub).collect::<Result<_, _>>().unwrap();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events[0],
        SubscriptionEvent::Started {
            instance: peer::INSTANCE,
            last_event_id: 4
        }
    );
    assert_eq!(
        events[1].decode_message().unwrap().unwrap(),
        event_message(5)
    );
    assert_eq!(events[2].decode_dump().unwrap().unwrap(), dump(6));
    assert_eq!(events[3], SubscriptionEvent::Ended(EndReason::Unsubscribed));
    assert!(client.next_event(sub).unwrap().is_none());
    client.ping().unwrap();
    drop(client);
    peer.join();
}

#[test]
fn a_refused_subscription_ends_with_the_servers_error() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let sub = conn.expect()?;
        conn.send_error(sub.id(), ErrorCode::SubscribeFailed, false, "no stream")?;
        Store::default().serve(conn)
    });
    let mut client = connect(&peer);
    let sub = client.subscribe(0, WireFormat::Msgpack).unwrap();
    let items: Vec<_> = client.events(sub).collect();
    assert_eq!(items.len(), 1);
    assert!(matches!(
        items[0],
        Err(ClientError::Server {
            code: ErrorCode::SubscribeFailed,
            ..
        })
    ));
    client.ping().unwrap();
    drop(client);
    peer.join();
}
