//! What a client can do wrong, against a real node on both IO backends: truncated frames,
//! oversized lengths, unknown opcodes, wrong versions, random bytes, too many blocks, slow
//! readers. Each bad connection gets an error frame (where the frame can be read) and is
//! closed; another client, connected throughout, is served correctly after each.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use kvtier_core::SequenceHash;
use kvtier_node::{ByteSize, Node};
use kvtier_proto::{BlockResult, ErrorCode, HashList, PutBlocks, PutStatus, Request, Response};

const BLOCK: usize = 4096;

/// The well-behaved client: PUT one new block and read it back.
fn still_serves(good: &mut Conn, seed: u64) {
    let h = [SequenceHash::root(seed)];
    let bytes = pattern(h[0], BLOCK);
    let frame = good.call(
        seed,
        &Request::Put {
            durable: false,
            blocks: PutBlocks::new(&h, &[&bytes]).unwrap(),
        },
    );
    assert_eq!(
        response(&frame, &good.limits),
        Response::Put(vec![PutStatus::Stored])
    );
    let frame = good.call(seed + 1, &Request::Get(HashList::new(&h)));
    let Response::Get(got) = response(&frame, &good.limits) else {
        panic!("not a GET reply")
    };
    assert_eq!(
        got.iter().next(),
        Some(BlockResult::Found {
            tier: kvtier_proto::TierId::G2,
            bytes: &bytes
        })
    );
}

fn header(len: u32, version: u8, opcode: u8, id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&len.to_le_bytes());
    h.push(version);
    h.push(opcode);
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h
}

/// The error frame the server sent before closing, if any.
fn error_then_close(bad: &mut Conn) -> Option<ErrorCode> {
    let code = bad.recv_frame().map(|f| match response(&f, &bad.limits) {
        Response::Error(e) => {
            assert!(e.fatal, "a malformed frame is fatal");
            e.code
        }
        other => panic!("malformed frame answered {other:?}"),
    });
    assert!(bad.closed_by_server(), "the connection closes");
    code
}

#[test]
fn malformed_frames_close_only_their_connection() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = start(config(dir.path(), backend, BLOCK)) else {
            continue;
        };
        let mut good = Conn::connect(node.addr());
        still_serves(&mut good, 100);

        // Unknown opcode.
        let mut bad = Conn::connect(node.addr());
        bad.send_raw(&header(16, kvtier_proto::VERSION, 0x55, 7));
        assert_eq!(error_then_close(&mut bad), Some(ErrorCode::UnknownOpcode));
        still_serves(&mut good, 200);

        // Wrong version.
        let mut bad = Conn::connect(node.addr());
        bad.send_raw(&header(16, 99, 0x0A, 8));
        assert!(matches!(
            error_then_close(&mut bad),
            Some(ErrorCode::UnsupportedVersion | ErrorCode::Malformed)
        ));
        still_serves(&mut good, 300);

        // A length far over the limit: refused from the header, nothing buffered.
        let mut bad = Conn::connect(node.addr());
        bad.send_raw(&header(u32::MAX, kvtier_proto::VERSION, 0x02, 9));
        assert!(matches!(
            error_then_close(&mut bad),
            Some(ErrorCode::Malformed | ErrorCode::FrameTooLarge)
        ));
        still_serves(&mut good, 400);

        // A length below the header size.
        let mut bad = Conn::connect(node.addr());
        bad.send_raw(&header(3, kvtier_proto::VERSION, 0x02, 10));
        assert!(error_then_close(&mut bad).is_some());
        still_serves(&mut good, 500);

        // A PUT whose payload lies about its counts (framed fine, undecodable).
        let mut bad = Conn::connect(node.addr());
        let mut frame = header(16 + 8, kvtier_proto::VERSION, 0x02, 11);
        frame.extend_from_slice(&[0xFF; 8]);
        bad.send_raw(&frame);
        assert!(error_then_close(&mut bad).is_some());
        still_serves(&mut good, 600);

        // Random bytes.
        let mut bad = Conn::connect(node.addr());
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        bad.send_raw(&noise);
        let _ = error_then_close(&mut bad);
        still_serves(&mut good, 700);

        // Truncated: half a frame, then the client goes away; the server drops it quietly.
        let mut bad = Conn::connect(node.addr());
        let h = [SequenceHash::root(5)];
        let bytes = pattern(h[0], BLOCK);
        let one: [&[u8]; 1] = [&bytes];
        let mut out = kvtier_proto::WriteBuf::new();
        Request::Put {
            durable: false,
            blocks: PutBlocks::new(&h, &one).unwrap(),
        }
        .encode(12, &bad.limits, &mut out)
        .unwrap();
        let wire = out.to_vec();
        bad.send_raw(&wire[..wire.len() / 2]);
        drop(bad);
        still_serves(&mut good, 800);
        assert_eq!(
            node.stat("blocks_stored"),
            Some(8),
            "nothing of the bad clients was stored"
        );
        // The bad connections close on the IO threads' own time (the last one when its EOF is
        // read), not before the good connection's round trip: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while node.stat("connections_open").unwrap() > 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "bad connections left open: {:?}",
                node.stat("connections_open")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        node.shutdown().unwrap();
    }
}

#[test]
fn too_many_blocks_in_one_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK);
    cfg.max_blocks_per_request = 8;
    let node = Node::start(cfg).unwrap();
    let mut good = Conn::connect(node.addr());
    let mut bad = Conn::connect(node.addr());
    let hashes: Vec<SequenceHash> = (0..9).map(SequenceHash::root).collect();
    bad.send(1, &Request::Exists(HashList::new(&hashes)));
    assert_eq!(error_then_close(&mut bad), Some(ErrorCode::LimitExceeded));
    let frame = good.call(2, &Request::Exists(HashList::new(&hashes[..8])));
    assert!(matches!(response(&frame, &good.limits), Response::Exists(t) if t.len() == 8));
    node.shutdown().unwrap();
}

#[test]
fn a_slow_reader_is_paused_not_buffered() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let block = 256 << 10;
        let mut cfg = config(dir.path(), backend, block);
        cfg.host_bytes = ByteSize(8 * block as u64);
        let Some(node) = start(cfg) else { continue };
        let mut slow = Conn::connect(node.addr());
        let h = [SequenceHash::root(1)];
        let bytes = pattern(h[0], block);
        slow.call(
            1,
            &Request::Put {
                durable: false,
                blocks: PutBlocks::new(&h, &[&bytes]).unwrap(),
            },
        );
        // 400 GETs of 256 KiB (100 MiB of replies) sent without reading any.
        let writer = {
            let mut stream = slow.stream.try_clone().unwrap();
            let limits = slow.limits;
            std::thread::spawn(move || {
                for id in 0..400u64 {
                    let mut out = kvtier_proto::WriteBuf::new();
                    Request::Get(HashList::new(&h))
                        .encode(100 + id, &limits, &mut out)
                        .unwrap();
                    if stream.write_all(&out.to_vec()).is_err() {
                        return;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        let queued = node.stat("response_bytes_queued").unwrap();
        assert!(
            queued <= 64 << 20,
            "replies queued for a reader that does not read: {queued}"
        );
        // Another client is served meanwhile.
        let mut good = Conn::connect(node.addr());
        let frame = good.call(5, &Request::Ping(b"x"));
        assert_eq!(response(&frame, &good.limits), Response::Pong(b"x"));
        // The slow reader then reads everything, intact.
        let mut n = 0;
        while n < 400 {
            let frame = slow.recv_frame().expect("closed");
            let Response::Get(got) = response(&frame, &slow.limits) else {
                panic!()
            };
            assert_eq!(
                got.iter().next(),
                Some(BlockResult::Found {
                    tier: kvtier_proto::TierId::G2,
                    bytes: &bytes
                })
            );
            n += 1;
        }
        writer.join().unwrap();
        let mut rest = [0u8; 1];
        slow.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(slow.stream.read(&mut rest).is_err(), "no extra bytes");
        node.shutdown().unwrap();
    }
}

#[test]
fn metrics_and_health_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), kvtier_node::IoBackend::Auto, BLOCK);
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(cfg).unwrap();
    let mut c = Conn::connect(node.addr());
    still_serves(&mut c, 10);
    let addr = node.metrics_addr().unwrap();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(
        metrics.contains("\nkvtier_blocks_stored_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nkvtier_get_hits_g2_total 1\n"));
    assert!(metrics.contains("# TYPE kvtier_g2_blocks gauge\nkvtier_g2_blocks 1\n"));
    assert!(metrics.contains("kvtier_connections_open "));
    let body_len: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(metrics.split_once("\r\n\r\n").unwrap().1.len(), body_len);
    assert!(get("/health").ends_with("\r\n\r\nok\n"));
    assert!(get("/nothing").starts_with("HTTP/1.1 404"));
    node.shutdown().unwrap();
}
