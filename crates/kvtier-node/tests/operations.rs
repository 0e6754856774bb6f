//! Every binary-protocol operation against a real node on 127.0.0.1, on both IO backends:
//! byte-for-byte round trips, pipelining with out-of-order completion, large and many-block
//! frames, namespaces, authentication, and the disk tier behind host memory.

mod common;

use std::collections::HashMap;

use common::*;
use kvtier_core::SequenceHash;
use kvtier_node::{ByteSize, Node};
use kvtier_proto::{
    BlockResult, ErrorCode, HashList, PutBlocks, PutStatus, Request, Response, TierId, TierSet,
};

const BLOCK: usize = 4096;

fn put(conn: &mut Conn, id: u64, hashes: &[SequenceHash], durable: bool) -> Vec<PutStatus> {
    let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, BLOCK)).collect();
    let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let blocks = PutBlocks::new(hashes, &slices).unwrap();
    let frame = conn.call(id, &Request::Put { durable, blocks });
    match response(&frame, &conn.limits) {
        Response::Put(status) => status,
        other => panic!("PUT answered {other:?}"),
    }
}

/// GET: per hash, the tier and bytes (None for a miss).
fn get(conn: &mut Conn, id: u64, hashes: &[SequenceHash]) -> Vec<Option<(TierId, Vec<u8>)>> {
    let frame = conn.call(id, &Request::Get(HashList::new(hashes)));
    match response(&frame, &conn.limits) {
        Response::Get(blocks) => blocks
            .iter()
            .map(|r| match r {
                BlockResult::Found { tier, bytes } => Some((tier, bytes.to_vec())),
                BlockResult::Missing => None,
            })
            .collect(),
        other => panic!("GET answered {other:?}"),
    }
}

fn tiers(conn: &mut Conn, id: u64, request: &Request<'_>) -> Vec<TierSet> {
    let frame = conn.call(id, request);
    match response(&frame, &conn.limits) {
        Response::Match(t) | Response::Exists(t) => t,
        other => panic!("answered {other:?}"),
    }
}

fn g2() -> TierSet {
    TierSet::EMPTY.with(TierId::G2)
}

#[test]
fn every_operation_round_trips_on_both_backends() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = start(config(dir.path(), backend, BLOCK)) else {
            continue;
        };
        let mut c = Conn::connect(node.addr());
        let frame = c.hello("", None);
        match response(&frame, &c.limits) {
            Response::Hello(info) => {
                assert_eq!(info.block_bytes as usize, BLOCK);
                assert!(info.server.starts_with("kvtier/"));
            }
            other => panic!("HELLO answered {other:?}"),
        }
        let hashes = chain(1, 8);
        assert_eq!(put(&mut c, 1, &hashes, false), vec![PutStatus::Stored; 8]);
        assert_eq!(
            put(&mut c, 2, &hashes[..2], false),
            vec![PutStatus::AlreadyPresent; 2]
        );

        let unknown = SequenceHash::root(999);
        let mut asked = hashes.clone();
        asked.insert(3, unknown);
        let got = get(&mut c, 3, &asked);
        for (h, r) in asked.iter().zip(&got) {
            if *h == unknown {
                assert!(r.is_none(), "unknown hash is a miss");
            } else {
                assert_eq!(
                    r.as_ref().unwrap(),
                    &(TierId::G2, pattern(*h, BLOCK)),
                    "{backend:?}"
                );
            }
        }

        let mut query = hashes[..5].to_vec();
        query.push(unknown);
        query.extend_from_slice(&hashes[5..]);
        assert_eq!(
            tiers(&mut c, 4, &Request::Match(HashList::new(&query))),
            vec![g2(); 5]
        );
        let exists = tiers(
            &mut c,
            5,
            &Request::Exists(HashList::new(&[hashes[7], unknown])),
        );
        assert!(exists[0].contains(TierId::G2));
        assert!(exists[1].is_empty());

        let frame = c.call(6, &Request::Delete(HashList::new(&[hashes[7], unknown])));
        assert_eq!(
            response(&frame, &c.limits),
            Response::Delete(vec![true, false])
        );
        assert_eq!(get(&mut c, 7, &hashes[7..]), vec![None]);
        let exists = tiers(&mut c, 8, &Request::Exists(HashList::new(&hashes[7..])));
        assert!(exists[0].is_empty(), "deleted from every tier");

        let frame = c.call(9, &Request::Ping(b"are you there"));
        assert_eq!(
            response(&frame, &c.limits),
            Response::Pong(b"are you there")
        );
        let frame = c.call(10, &Request::Stats);
        let Response::Stats(stats) = response(&frame, &c.limits) else {
            panic!("not stats")
        };
        let stat = |name: &str| stats.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(stat("blocks_stored"), Some(8));
        assert_eq!(stat("blocks_already_present"), Some(2));
        assert_eq!(stat("get_hits_g2"), Some(8));
        assert_eq!(stat("get_misses"), Some(2));
        assert_eq!(stat("blocks_deleted"), Some(1));
        assert!(stat("frames_in").unwrap() >= 10);
        node.shutdown().unwrap();
    }
}

#[test]
fn pipelined_requests_are_all_answered_by_id() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = start(config(dir.path(), backend, BLOCK)) else {
            continue;
        };
        let mut c = Conn::connect(node.addr());
        let hashes = chain(2, 32);
        // 32 PUTs, 32 GETs and 32 PINGs written before any reply is read.
        let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, BLOCK)).collect();
        for (k, h) in hashes.iter().enumerate() {
            let one = [bytes[k].as_slice()];
            let blocks = PutBlocks::new(std::slice::from_ref(h), &one).unwrap();
            c.send(
                1000 + k as u64,
                &Request::Put {
                    durable: false,
                    blocks,
                },
            );
        }
        for (k, h) in hashes.iter().enumerate() {
            c.send(
                2000 + k as u64,
                &Request::Get(HashList::new(std::slice::from_ref(h))),
            );
            c.send(3000 + k as u64, &Request::Ping(&[k as u8; 3]));
        }
        let mut replies = HashMap::new();
        for _ in 0..96 {
            let frame = c.recv_frame().expect("closed");
            let (header, _) = kvtier_proto::decode_response(&frame, &c.limits).unwrap();
            assert!(
                replies.insert(header.request_id, frame).is_none(),
                "one reply per id"
            );
        }
        for (k, h) in hashes.iter().enumerate() {
            let put = &replies[&(1000 + k as u64)];
            assert_eq!(
                response(put, &c.limits),
                Response::Put(vec![PutStatus::Stored])
            );
            let ping = &replies[&(3000 + k as u64)];
            assert_eq!(response(ping, &c.limits), Response::Pong(&[k as u8; 3]));
            // A GET may overtake its PUT (they run concurrently): a hit is the right bytes.
            if let Response::Get(blocks) = response(&replies[&(2000 + k as u64)], &c.limits) {
                if let Some(BlockResult::Found { bytes, .. }) = blocks.iter().next() {
                    assert_eq!(bytes, pattern(*h, BLOCK).as_slice());
                }
            } else {
                panic!("GET reply is not a GET");
            }
        }
        let all = get(&mut c, 9, &hashes);
        assert!(
            all.iter()
                .zip(&hashes)
                .all(|(r, h)| r.as_ref().unwrap().1 == pattern(*h, BLOCK))
        );
        node.shutdown().unwrap();
    }
}

#[test]
fn large_blocks_and_many_block_frames() {
    let dir = tempfile::tempdir().unwrap();
    let block = 1 << 20;
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, block);
    cfg.host_bytes = ByteSize(40 << 20);
    cfg.disk_bytes = ByteSize(0);
    let node = Node::start(cfg).unwrap();
    let mut c = Conn::connect(node.addr());
    let hashes = chain(3, 16);
    let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h, block)).collect();
    let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    // 16 MiB in one frame.
    let frame = c.call(
        1,
        &Request::Put {
            durable: false,
            blocks: PutBlocks::new(&hashes, &slices).unwrap(),
        },
    );
    assert_eq!(
        response(&frame, &c.limits),
        Response::Put(vec![PutStatus::Stored; 16])
    );
    let frame = c.call(2, &Request::Get(HashList::new(&hashes)));
    let Response::Get(got) = response(&frame, &c.limits) else {
        panic!()
    };
    for (r, want) in got.iter().zip(&bytes) {
        assert_eq!(
            r,
            BlockResult::Found {
                tier: TierId::G2,
                bytes: want
            }
        );
    }
    // Many small entries in one frame: 4,000 hashes, none stored.
    let many: Vec<SequenceHash> = (0..4000).map(|i| SequenceHash::root(10_000 + i)).collect();
    let frame = c.call(3, &Request::Exists(HashList::new(&many)));
    let Response::Exists(t) = response(&frame, &c.limits) else {
        panic!()
    };
    assert_eq!(t.len(), 4000);
    assert!(t.iter().all(|s| s.is_empty()));
    // A PUT with a wrongly sized block: that block is refused, the others stored.
    let odd = vec![1u8; 100];
    let mixed: [&[u8]; 2] = [&odd, &bytes[0]];
    let two = [SequenceHash::root(77), SequenceHash::root(78)];
    let frame = c.call(
        4,
        &Request::Put {
            durable: false,
            blocks: PutBlocks::new(&two, &mixed).unwrap(),
        },
    );
    assert_eq!(
        response(&frame, &c.limits),
        Response::Put(vec![PutStatus::BadSize, PutStatus::Stored])
    );
    node.shutdown().unwrap();
}

#[test]
fn namespaces_isolate_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK)).unwrap();
    let mut a = Conn::connect(node.addr());
    let mut b = Conn::connect(node.addr());
    let mut default = Conn::connect(node.addr());
    a.hello("tenant-a", None);
    b.hello("tenant-b", None);
    let hashes = chain(4, 4);
    assert_eq!(put(&mut a, 1, &hashes, false), vec![PutStatus::Stored; 4]);
    assert_eq!(
        get(&mut b, 2, &hashes),
        vec![None; 4],
        "another namespace sees nothing"
    );
    assert_eq!(get(&mut default, 3, &hashes), vec![None; 4]);
    assert!(tiers(&mut b, 4, &Request::Match(HashList::new(&hashes))).is_empty());
    let frame = b.call(5, &Request::Delete(HashList::new(&hashes)));
    assert_eq!(
        response(&frame, &b.limits),
        Response::Delete(vec![false; 4]),
        "nor deletes it"
    );
    // B stores the same hashes with its own bytes; A still reads its own.
    assert_eq!(put(&mut b, 6, &hashes, false), vec![PutStatus::Stored; 4]);
    let mine = get(&mut a, 7, &hashes);
    assert!(
        mine.iter()
            .zip(&hashes)
            .all(|(r, h)| r.as_ref().unwrap().1 == pattern(*h, BLOCK))
    );
    assert_eq!(
        tiers(&mut a, 8, &Request::Match(HashList::new(&hashes))).len(),
        4
    );
    node.shutdown().unwrap();
}

#[test]
fn with_a_token_only_hello_works_before_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK);
    cfg.auth_token = Some("s3cret".into());
    let node = Node::start(cfg).unwrap();

    let mut anon = Conn::connect(node.addr());
    let frame = anon.call(1, &Request::Get(HashList::new(&[SequenceHash::root(1)])));
    match response(&frame, &anon.limits) {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::HelloRequired);
            assert!(!e.fatal);
        }
        other => panic!("unauthenticated GET answered {other:?}"),
    }
    let hashes = chain(5, 1);
    let frame = anon.call(
        2,
        &Request::Put {
            durable: false,
            blocks: PutBlocks::new(&hashes, &[&pattern(hashes[0], BLOCK)]).unwrap(),
        },
    );
    assert!(matches!(response(&frame, &anon.limits), Response::Error(_)));

    let mut wrong = Conn::connect(node.addr());
    let frame = wrong.hello("", Some(b"guess"));
    match response(&frame, &wrong.limits) {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::AuthFailed);
            assert!(e.fatal);
        }
        other => panic!("bad token answered {other:?}"),
    }
    assert!(wrong.closed_by_server());

    let mut good = Conn::connect(node.addr());
    assert!(matches!(
        response(&good.hello("", Some(b"s3cret")), &good.limits),
        Response::Hello(_)
    ));
    assert_eq!(put(&mut good, 3, &hashes, false), vec![PutStatus::Stored]);
    assert_eq!(
        node.stat("blocks_stored"),
        Some(1),
        "the unauthenticated PUT stored nothing"
    );
    assert_eq!(node.stat("auth_failures"), Some(1));
    node.shutdown().unwrap();
}

/// PUTs back to back into a host memory of 96 blocks through an offload queue of one block:
/// most background copies are skipped (queue full), and G2 evicts those blocks before any copy
/// was made. They are copied on their way out, so every block is served afterwards
/// (write-through loses none to its backlog).
#[test]
fn write_through_keeps_blocks_evicted_before_their_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK);
    // More than one batch of the background copy, which holds its blocks while it writes.
    cfg.host_bytes = ByteSize(96 * BLOCK as u64);
    cfg.offload_queue = 1;
    let node = Node::start(cfg).unwrap();
    let mut c = Conn::connect(node.addr());
    let hashes = chain(16, 1024);
    for (k, chunk) in hashes.chunks(8).enumerate() {
        assert_eq!(
            put(&mut c, k as u64, chunk, false),
            vec![PutStatus::Stored; 8]
        );
    }
    wait_for(|| {
        node.stat("offload_pending") == Some(0) && node.stat("offload_rescue_pending") == Some(0)
    });
    let rescued = node.stat("offload_rescued").unwrap();
    let written = node.stat("offload_written").unwrap();
    assert!(
        rescued >= 1024 - 96 - written,
        "{written} copied in the background, {rescued} on eviction; skipped {:?} failed {:?} g3 {:?} evictions {:?}",
        node.stat("offload_rescue_skipped"),
        node.stat("offload_rescue_failed"),
        node.stat("g3_blocks"),
        node.stat("g2_evictions")
    );
    assert_eq!(node.stat("offload_rescue_skipped"), Some(0));
    let got = get(&mut c, 1000, &hashes);
    for (r, h) in got.iter().zip(&hashes) {
        let (_, bytes) = r.as_ref().expect("every block is in some tier");
        assert_eq!(bytes, &pattern(*h, BLOCK));
    }
    node.shutdown().unwrap();
}

#[test]
fn blocks_evicted_from_host_memory_are_served_from_disk() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), backend, BLOCK);
        cfg.host_bytes = ByteSize(8 * BLOCK as u64);
        let Some(node) = start(cfg) else { continue };
        let mut c = Conn::connect(node.addr());
        let hashes = chain(6, 40);
        for (k, chunk) in hashes.chunks(4).enumerate() {
            assert_eq!(
                put(&mut c, k as u64, chunk, false),
                vec![PutStatus::Stored; 4]
            );
            // Let write-through copy each batch before the next PUT evicts it.
            wait_for(|| node.stat("offload_pending") == Some(0));
        }
        wait_for(|| {
            node.stat("offload_written").unwrap_or(0)
                + node.stat("offload_skipped_present").unwrap_or(0)
                >= 40
        });
        let got = get(&mut c, 100, &hashes);
        let mut from_disk = 0;
        for (r, h) in got.iter().zip(&hashes) {
            let (tier, bytes) = r.as_ref().expect("every block is in some tier");
            assert_eq!(bytes, &pattern(*h, BLOCK));
            from_disk += usize::from(*tier == TierId::G3);
        }
        assert!(
            from_disk >= 30,
            "host memory holds 8 blocks: {from_disk} came from disk"
        );
        let m = tiers(&mut c, 101, &Request::Match(HashList::new(&hashes)));
        assert_eq!(m.len(), 40, "MATCH spans both tiers");
        node.shutdown().unwrap();
    }
}
