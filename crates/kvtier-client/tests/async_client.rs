//! The [`AsyncClient`] against the scripted peer: every operation, concurrent callers whose
//! requests pipeline on one connection and are answered in reverse order, ERROR frames, a
//! peer that dies in the middle of a reply (every waiter fails, none hangs), timeouts, a
//! subscription, and the connection closing when the last handle goes.

mod peer;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvtier_client::{AsyncClient, ClientConfig, ClientError, SubscriptionEvent};
use kvtier_core::SequenceHash;
use kvtier_events::WireFormat;
use kvtier_proto::{
    EndReason, ErrorCode, PutStatus, Request, Response, SubscribeEvent, TierId, TierSet,
};
use peer::{Peer, Store, block, chain, encode};

/// Fails the test instead of hanging when a future never completes.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the client hung")
}

async fn connect(peer: &Peer) -> AsyncClient {
    bounded(AsyncClient::connect(peer.addr(), ClientConfig::new()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn every_operation_reaches_the_server_and_its_reply_comes_back() {
    let peer = Peer::spawn(|conn| {
        let (namespace, _) = conn.hello()?;
        assert_eq!(namespace, "ns");
        Store::default().serve(conn)
    });
    let client = bounded(AsyncClient::connect(
        peer.addr(),
        ClientConfig::new().with_namespace("ns"),
    ))
    .await
    .unwrap();
    assert_eq!(client.server().server, peer::SERVER_NAME);
    let h = chain(3);
    let (b0, b1) = (block(1, 50_000), block(2, 10));
    let put = client
        .put(&[(h[0], &b0), (h[1], &b1)], false)
        .await
        .unwrap();
    assert_eq!(put, [PutStatus::Stored; 2]);
    let got = client.get(&[h[1], h[2], h[0]]).await.unwrap();
    assert_eq!(got[0].as_ref().map(|b| b.bytes()), Some(&b1[..]));
    assert!(got[1].is_none());
    // The blocks are windows on the one buffer the reply was read into, not copies.
    let (first, third) = (got[0].as_ref().unwrap(), got[2].as_ref().unwrap());
    assert_eq!(
        third.bytes().as_ptr(),
        first.bytes().as_ptr().wrapping_add(b1.len())
    );
    assert_eq!(
        got[2].as_ref().map(|b| (b.tier(), b.bytes())),
        Some((TierId::G2, &b0[..]))
    );
    let g2 = TierSet::EMPTY.with(TierId::G2);
    assert_eq!(client.match_prefix(&h).await.unwrap(), [g2; 2]);
    assert_eq!(
        client.exists(&[h[2], h[0]]).await.unwrap(),
        [TierSet::EMPTY, g2]
    );
    assert_eq!(client.delete(&[h[0], h[2]]).await.unwrap(), [true, false]);
    let stats = client.stats().await.unwrap();
    assert_eq!(stats[0], ("blocks".to_string(), 1));
    client.ping().await.unwrap();
    drop(client);
    peer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_pipeline_on_one_connection_and_get_their_own_replies() {
    const CALLERS: usize = 8;
    const ROUNDS: usize = 25;
    let bursts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&bursts);
    let peer = Peer::spawn(move |conn| {
        conn.hello()?;
        let mut store = Store::default();
        // First, no reply until all CALLERS requests are here: each caller can only get its
        // reply if every other caller's request went out on the connection meanwhile. The
        // replies then go out in reverse order.
        let mut replies = Vec::new();
        for _ in 0..CALLERS {
            replies.push(store.answer(&conn.expect()?));
        }
        for r in replies.iter().rev() {
            conn.send_raw(r)?;
        }
        // Then: answer each batch of requests that arrived together in reverse order.
        let mut batch = Vec::new();
        while let Some(frame) = conn.recv()? {
            batch.push(store.answer(&frame));
            if !conn.has_buffered() {
                if batch.len() > 1 {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                for r in batch.drain(..).rev() {
                    conn.send_raw(&r)?;
                }
            }
        }
        Ok(())
    });
    let client = connect(&peer).await;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let hash = SequenceHash::root((caller * 1000 + round) as u64 + 1);
                let data = block((caller * 31 + round) as u8, 1000 + caller * 5000);
                let stored = client.put(&[(hash, &data)], false).await?;
                assert_eq!(stored, [PutStatus::Stored]);
                let got = client.get(&[hash]).await?;
                assert_eq!(got[0].as_ref().map(|b| b.bytes()), Some(&data[..]));
                assert_eq!(client.match_prefix(&[hash]).await?.len(), 1);
            }
            Ok::<_, ClientError>(())
        }));
    }
    for task in tasks {
        bounded(task).await.unwrap().unwrap();
    }
    assert!(
        bursts.load(Ordering::Relaxed) > 0 || CALLERS == 1,
        "the peer never saw two requests arrive together"
    );
    drop(client);
    peer.join();
}

#[tokio::test]
async fn an_error_frame_fails_its_call_only() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let a = conn.expect()?;
        let b = conn.expect()?;
        conn.send_error(a.id(), ErrorCode::Busy, false, "retry later")?;
        conn.send_raw(&Store::default().answer(&b))?;
        Store::default().serve(conn)
    });
    let client = connect(&peer).await;
    let h = [SequenceHash::root(1)];
    let (failed, fine) = bounded(async {
        tokio::join!(client.delete(&h), async {
            // Make sure the DELETE is written first.
            tokio::task::yield_now().await;
            client.exists(&h).await
        })
    })
    .await;
    match failed {
        Err(ClientError::Server {
            code,
            message,
            fatal,
        }) => {
            assert_eq!(
                (code, message.as_str(), fatal),
                (ErrorCode::Busy, "retry later", false)
            );
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(fine.unwrap(), [TierSet::EMPTY]);
    assert!(!client.is_closed());
    bounded(client.ping()).await.unwrap();
    drop(client);
    peer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dies_mid_reply_fails_every_waiter_and_nothing_hangs() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let first = conn.expect()?;
        let _second = conn.expect()?;
        let mut store = Store::default();
        store
            .blocks
            .insert(SequenceHash::root(1), block(9, 300_000));
        let reply = store.answer(&first);
        conn.send_raw(&reply[..reply.len() / 2])?;
        conn.close();
        Ok(())
    });
    let client = connect(&peer).await;
    let other = client.clone();
    let get = tokio::spawn(async move { other.get(&[SequenceHash::root(1)]).await });
    // Wait until the GET is on the wire, then send the second request.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = client.stats();
    let (get, stats) = bounded(async { tokio::join!(get, stats) }).await;
    for result in [get.unwrap().map(|_| ()), stats.map(|_| ())] {
        match result {
            Err(ClientError::Closed { reason }) => {
                assert!(reason.contains("middle of a frame"), "{reason}");
            }
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    assert!(client.is_closed());
    assert!(matches!(
        bounded(client.ping()).await,
        Err(ClientError::Closed { .. })
    ));
    peer.join();
}

#[tokio::test]
async fn a_fatal_error_frame_closes_the_connection_for_every_clone() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let first = conn.expect()?;
        conn.send_error(first.id(), ErrorCode::UnknownFlags, true, "flags")?;
        conn.close();
        Ok(())
    });
    let client = connect(&peer).await;
    let clone = client.clone();
    let err = bounded(client.stats()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::UnknownFlags,
                fatal: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(clone.is_closed());
    match bounded(clone.ping()).await {
        Err(ClientError::Closed { reason }) => assert!(reason.contains("flags"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    peer.join();
}

#[tokio::test]
async fn a_timed_out_call_leaves_the_connection_usable() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let slow = conn.expect()?;
        std::thread::sleep(Duration::from_millis(1500));
        // The late reply is dropped by the client; the next request is served normally.
        conn.send_raw(&Store::default().answer(&slow))?;
        Store::default().serve(conn)
    });
    let config = ClientConfig::new().with_io_timeout(Some(Duration::from_millis(400)));
    let client = bounded(AsyncClient::connect(peer.addr(), config))
        .await
        .unwrap();
    let err = bounded(client.stats()).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(!client.is_closed());
    // The late STATS reply arrives meanwhile and must not be taken for this PING's.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    bounded(client.ping()).await.unwrap();
    drop(client);
    peer.join();
}

#[tokio::test]
async fn a_subscription_streams_its_events_then_ended() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let sub = conn.expect()?;
        let Request::Subscribe(s) = sub.request() else {
            panic!("expected SUBSCRIBE");
        };
        assert_eq!((s.from_event_id, s.format), (0, WireFormat::Msgpack));
        let id = sub.id();
        let started = SubscribeEvent::Started {
            instance: peer::INSTANCE,
            last_event_id: 41,
        };
        conn.send_raw(&encode(id, &Response::Subscribe(started)))?;
        let event = SubscribeEvent::Event {
            format: WireFormat::Msgpack,
            body: b"not decoded by the client",
        };
        conn.send_raw(&encode(id, &Response::Subscribe(event)))?;
        let unsub = conn.expect()?;
        assert_eq!(unsub.request(), Request::Unsubscribe { subscription: id });
        conn.send_raw(&encode(unsub.id(), &Response::Unsubscribe { found: true }))?;
        let end = SubscribeEvent::Ended(EndReason::Unsubscribed);
        conn.send_raw(&encode(id, &Response::Subscribe(end)))?;
        Store::default().serve(conn)
    });
    let client = connect(&peer).await;
    let mut sub = bounded(client.subscribe(0, WireFormat::Msgpack))
        .await
        .unwrap();
    let first = bounded(sub.next()).await.unwrap().unwrap();
    assert_eq!(
        first,
        SubscriptionEvent::Started {
            instance: peer::INSTANCE,
            last_event_id: 41
        }
    );
    match bounded(sub.next()).await.unwrap().unwrap() {
        SubscriptionEvent::Event { format, body } => {
            assert_eq!(format, WireFormat::Msgpack);
            assert_eq!(&body[..], b"not decoded by the client");
        }
        other => panic!("expected an event, got {other:?}"),
    }
    assert!(bounded(sub.unsubscribe()).await.unwrap());
    let last = bounded(sub.next()).await.unwrap().unwrap();
    assert_eq!(last, SubscriptionEvent::Ended(EndReason::Unsubscribed));
    assert!(bounded(sub.next()).await.is_none());
    bounded(client.ping()).await.unwrap();
    drop(sub);
    drop(client);
    peer.join();
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        let ping = conn.expect()?;
        conn.send_raw(&Store::default().answer(&ping))?;
        // The client's handles are gone: the connection must end (the peer's read timeout
        // would fail this script otherwise).
        assert!(conn.recv()?.is_none());
        Ok(())
    });
    let client = connect(&peer).await;
    let clone = client.clone();
    bounded(clone.ping()).await.unwrap();
    drop(client);
    drop(clone);
    tokio::task::spawn_blocking(move || peer.join())
        .await
        .unwrap();
}

#[test]
fn client_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = Peer::spawn(|conn| {
        conn.hello()?;
        Store::default().serve(conn)
    });
    runtime.block_on(async {
        let client = connect(&peer).await;
        let data = block(0, 10);
        let hashes = [SequenceHash::root(1)];
        let blocks = [(hashes[0], &data[..])];
        let put = client.put(&blocks, false);
        assert_send(&put);
        assert_eq!(put.await.unwrap(), [PutStatus::Stored]);
        let get = client.get(&hashes);
        assert_send(&get);
        assert!(get.await.unwrap()[0].is_some());
        let sub = client.subscribe(0, WireFormat::Json);
        assert_send(&sub);
    });
    // The reader task, aborted with the client, is dropped with the runtime.
    drop(runtime);
    peer.join();
}
