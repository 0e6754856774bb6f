//! The real node driven through `kvtier-client`, blocking and async: every operation,
//! pipelined tickets answered out of order, many async callers on one connection,
//! namespaces and tokens through the client's config, and a subscription.

mod common;

use common::*;
use kvtier_client::{AsyncClient, Client, ClientConfig, ClientError, SubscriptionEvent};
use kvtier_core::SequenceHash;
use kvtier_events::WireFormat;
use kvtier_node::IoBackend;
use kvtier_proto::{ErrorCode, PutStatus, TierId};

const BLOCK: usize = 16 << 10;

#[test]
fn blocking_client_every_operation_and_pipelining() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = start(config(dir.path(), backend, BLOCK)) else {
            continue;
        };
        let mut c = Client::connect(node.addr(), ClientConfig::new().with_namespace("t1")).unwrap();
        assert_eq!(c.server().block_bytes as usize, BLOCK);
        let hashes = chain(11, 16);
        let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, BLOCK)).collect();
        let blocks: Vec<(SequenceHash, &[u8])> = hashes
            .iter()
            .copied()
            .zip(bytes.iter().map(Vec::as_slice))
            .collect();
        assert_eq!(c.put(&blocks, false).unwrap(), vec![PutStatus::Stored; 16]);
        let got = c.get(&hashes).unwrap();
        for (g, b) in got.iter().zip(&bytes) {
            let g = g.as_ref().unwrap();
            assert_eq!((g.tier(), g.bytes()), (TierId::G2, b.as_slice()));
        }
        assert_eq!(c.match_prefix(&hashes).unwrap().len(), 16);
        assert!(c.exists(&[SequenceHash::root(5)]).unwrap()[0].is_empty());
        assert_eq!(c.delete(&hashes[15..]).unwrap(), vec![true]);
        c.ping().unwrap();
        let stats = c.stats().unwrap();
        assert!(stats.iter().any(|(n, v)| n == "blocks_stored" && *v == 16));

        // 48 requests in flight at once; waited for in reverse order of sending.
        let mut gets = Vec::new();
        let mut matches = Vec::new();
        for k in 0..24 {
            gets.push(c.send_get(&hashes[k % 15..k % 15 + 1]).unwrap());
            matches.push(c.send_match(&hashes[..k % 15 + 1]).unwrap());
        }
        for (k, (g, m)) in gets.iter().zip(&matches).enumerate().rev() {
            assert_eq!(c.wait(m).unwrap().len(), k % 15 + 1);
            let block = c.wait(g).unwrap().pop().flatten().unwrap();
            assert_eq!(block.bytes(), bytes[k % 15].as_slice());
        }
        // Another namespace sees none of it.
        let mut other =
            Client::connect(node.addr(), ClientConfig::new().with_namespace("t2")).unwrap();
        assert!(other.get(&hashes[..1]).unwrap()[0].is_none());
        node.shutdown().unwrap();
    }
}

#[test]
fn tokens_through_the_client_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), IoBackend::Auto, BLOCK);
    cfg.auth_token = Some("letmein".into());
    let node = start(cfg).unwrap();
    match Client::connect(node.addr(), ClientConfig::new().with_token("nope")) {
        Err(ClientError::Server { code, fatal, .. }) => {
            assert_eq!((code, fatal), (ErrorCode::AuthFailed, true))
        }
        other => panic!("a bad token connected: {other:?}"),
    }
    let mut c = Client::connect(node.addr(), ClientConfig::new().with_token("letmein")).unwrap();
    c.ping().unwrap();
    node.shutdown().unwrap();
}

#[test]
fn async_callers_share_one_connection_and_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path(), IoBackend::Auto, BLOCK)).unwrap();
    let addr = node.addr();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let client = AsyncClient::connect(addr, ClientConfig::new())
            .await
            .unwrap();
        let mut sub = client.subscribe(0, WireFormat::Msgpack).await.unwrap();
        assert!(matches!(
            sub.next().await,
            Some(Ok(SubscriptionEvent::Started { .. }))
        ));
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let hashes = chain(100 + t, 4);
                let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, BLOCK)).collect();
                let blocks: Vec<(SequenceHash, &[u8])> = hashes
                    .iter()
                    .copied()
                    .zip(bytes.iter().map(Vec::as_slice))
                    .collect();
                assert_eq!(
                    c.put(&blocks, t % 2 == 0).await.unwrap(),
                    vec![PutStatus::Stored; 4]
                );
                let got = c.get(&hashes).await.unwrap();
                assert!(
                    got.iter()
                        .zip(&bytes)
                        .all(|(g, b)| g.as_ref().unwrap().bytes() == b.as_slice())
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Host-memory events for the 64 stored blocks arrive on the subscription (the disk
        // tier's copies are announced as the `Disk` medium besides).
        let mut created = 0;
        while created < 64 {
            match sub.next().await.expect("stream ended").unwrap() {
                SubscriptionEvent::Event { format, body } => {
                    let m = kvtier_events::EventMessage::decode(&body, format).unwrap();
                    if let kvtier_events::Payload::Batch(b) = m.payload
                        && b.kind == kvtier_events::EventKind::Create
                        && b.medium == kvtier_core::Medium::Cpu
                    {
                        created += b.hashes.len();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(created, 64);
        assert!(sub.unsubscribe().await.unwrap());
    });
    assert_eq!(node.stat("blocks_durable"), Some(32));
    node.shutdown().unwrap();
}
