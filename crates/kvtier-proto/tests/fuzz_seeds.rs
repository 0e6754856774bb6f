//! The seed inputs of the protocol fuzz targets (`fuzz/seeds/proto_frame/` and
//! `fuzz/seeds/resp_command/`): their generator, and a check that every committed seed is
//! still a valid input.
//!
//! | target | seeds |
//! |---|---|
//! | `proto_frame` | one valid frame of every request and response kind, and a pipelined stream of several |
//! | `resp_command` | multibulk commands as redis-benchmark, redis-cli and redis-py send them, a pipeline, and inline commands with quotes |
//!
//! Regenerate after a format change with
//! `KVTIER_WRITE_FUZZ_SEEDS=1 cargo test -p kvtier-proto --test fuzz_seeds`; without the
//! variable the test only checks (it fails if a committed seed no longer decodes, or one the
//! generator makes is missing or different).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kvtier_core::SequenceHash;
use kvtier_events::{InstanceId, WireFormat};
use kvtier_proto::resp::{RespLimits, parse_command};
use kvtier_proto::{
    BlockResult, EndReason, ErrorCode, ErrorFrame, FrameReader, GetBlocks, HashList, Hello, Limits,
    PutBlocks, PutStatus, Request, Response, ServerInfo, Stat, Subscribe, SubscribeEvent, TierId,
    TierSet, WriteBuf,
};

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

fn frame_seeds() -> BTreeMap<String, Vec<u8>> {
    let limits = Limits::default();
    let chain = {
        let mut h = SequenceHash::root(0xABCD);
        let mut v = vec![h];
        for i in 1..4u64 {
            h = SequenceHash::child_of(h, i * 0x1111);
            v.push(h);
        }
        v
    };
    let (a, b) = (vec![0xAAu8; 64], vec![0x55u8; 100]);
    let blocks = [a.as_slice(), b.as_slice()];
    let found = [
        BlockResult::Found {
            tier: TierId::G2,
            bytes: &a,
        },
        BlockResult::Missing,
        BlockResult::Found {
            tier: TierId::G3,
            bytes: &b,
        },
    ];
    let g2g3 = TierSet::EMPTY.with(TierId::G2).with(TierId::G3);
    let requests: Vec<(&str, Request<'_>)> = vec![
        (
            "hello",
            Request::Hello(Hello {
                version: 1,
                namespace: "tenant-a",
                token: None,
            }),
        ),
        (
            "hello_token",
            Request::Hello(Hello {
                version: 1,
                namespace: "t",
                token: Some(b"secret"),
            }),
        ),
        (
            "put",
            Request::Put {
                durable: false,
                blocks: PutBlocks::new(&chain[..2], &blocks).unwrap(),
            },
        ),
        (
            "put_durable",
            Request::Put {
                durable: true,
                blocks: PutBlocks::new(&chain[2..], &blocks).unwrap(),
            },
        ),
        ("get", Request::Get(HashList::new(&chain))),
        ("match", Request::Match(HashList::new(&chain))),
        ("exists", Request::Exists(HashList::new(&chain[..1]))),
        ("delete", Request::Delete(HashList::new(&chain[1..]))),
        ("stats", Request::Stats),
        (
            "subscribe",
            Request::Subscribe(Subscribe {
                from_event_id: 17,
                format: WireFormat::Msgpack,
            }),
        ),
        ("unsubscribe", Request::Unsubscribe { subscription: 9 }),
        ("ping", Request::Ping(b"are you there")),
    ];
    let body = b"\x83\xa8instance".to_vec();
    let responses: Vec<(&str, Response<'_>)> = vec![
        (
            "r_hello",
            Response::Hello(ServerInfo {
                version: 1,
                block_bytes: 4096,
                max_frame_bytes: 1 << 20,
                max_blocks_per_request: 64,
                instance: InstanceId(0x1234),
                server: "kvtier 0.1.0",
            }),
        ),
        (
            "r_put",
            Response::Put(vec![
                PutStatus::Stored,
                PutStatus::AlreadyPresent,
                PutStatus::NoSpace,
                PutStatus::BadSize,
            ]),
        ),
        ("r_get", Response::Get(GetBlocks::new(&found))),
        (
            "r_match",
            Response::Match(vec![g2g3, TierSet::EMPTY.with(TierId::G4)]),
        ),
        ("r_exists", Response::Exists(vec![g2g3, TierSet::EMPTY])),
        ("r_delete", Response::Delete(vec![true, false])),
        (
            "r_stats",
            Response::Stats(vec![
                Stat {
                    name: "g2_hits",
                    value: 10,
                },
                Stat {
                    name: "g3_hits",
                    value: 2,
                },
            ]),
        ),
        (
            "r_sub_started",
            Response::Subscribe(SubscribeEvent::Started {
                instance: InstanceId(7),
                last_event_id: 41,
            }),
        ),
        (
            "r_sub_event",
            Response::Subscribe(SubscribeEvent::Event {
                format: WireFormat::Msgpack,
                body: &body,
            }),
        ),
        (
            "r_sub_dump",
            Response::Subscribe(SubscribeEvent::Dump {
                format: WireFormat::Json,
                body: b"{}",
            }),
        ),
        (
            "r_sub_ended",
            Response::Subscribe(SubscribeEvent::Ended(EndReason::Unsubscribed)),
        ),
        ("r_unsubscribe", Response::Unsubscribe { found: true }),
        ("r_pong", Response::Pong(b"are you there")),
        (
            "r_error",
            Response::Error(ErrorFrame {
                code: ErrorCode::Malformed,
                fatal: true,
                message: "truncated put index",
            }),
        ),
    ];
    let mut seeds = BTreeMap::new();
    let mut stream = WriteBuf::new();
    for (i, (name, req)) in requests.iter().enumerate() {
        let mut out = WriteBuf::new();
        req.encode(i as u64 + 1, &limits, &mut out).unwrap();
        seeds.insert(format!("{name}.bin"), out.to_vec());
        req.encode(i as u64 + 1, &limits, &mut stream).unwrap();
    }
    for (i, (name, resp)) in responses.iter().enumerate() {
        let mut out = WriteBuf::new();
        resp.encode(i as u64 + 100, &limits, &mut out).unwrap();
        seeds.insert(format!("{name}.bin"), out.to_vec());
    }
    seeds.insert("stream_all_requests.bin".into(), stream.to_vec());
    seeds
}

fn resp_seeds() -> BTreeMap<String, Vec<u8>> {
    let mb = |args: &[&[u8]]| {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    };
    let mut seeds = BTreeMap::new();
    seeds.insert(
        "set_ex_nx.resp".into(),
        mb(&[b"SET", b"key:1", b"value", b"EX", b"10", b"NX"]),
    );
    seeds.insert("get.resp".into(), mb(&[b"GET", b"key:000000001234"]));
    seeds.insert("mget.resp".into(), mb(&[b"MGET", b"a", b"b", b""]));
    seeds.insert(
        "scan.resp".into(),
        mb(&[b"SCAN", b"0", b"MATCH", b"*:kv_[a-z]?tes", b"COUNT", b"100"]),
    );
    seeds.insert("config_get.resp".into(), mb(&[b"CONFIG", b"GET", b"save"]));
    seeds.insert("hello3.resp".into(), mb(&[b"HELLO", b"3"]));
    seeds.insert(
        "client_setinfo.resp".into(),
        mb(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]),
    );
    let mut pipeline = Vec::new();
    for i in 0..4 {
        pipeline.extend(mb(&[b"SET", format!("k{i}").as_bytes(), b"v\r\n\0"]));
        pipeline.extend(mb(&[b"DEL", format!("k{i}").as_bytes()]));
    }
    seeds.insert("pipeline.resp".into(), pipeline);
    seeds.insert(
        "inline.resp".into(),
        b"SET a \"b \\x41\\n\" 'c\\'d'\r\nPING\nEXISTS a b\r\n".to_vec(),
    );
    seeds
}

#[test]
fn seeds_are_valid_and_committed() {
    let write = std::env::var_os("KVTIER_WRITE_FUZZ_SEEDS").is_some_and(|v| v != "0");
    let limits = Limits::default();
    for (target, seeds) in [
        ("proto_frame", frame_seeds()),
        ("resp_command", resp_seeds()),
    ] {
        let dir = seeds_dir().join(target);
        for (name, bytes) in &seeds {
            // Every seed is a valid input: frames decode, commands parse to the end.
            if target == "proto_frame" {
                let mut reader = FrameReader::new(limits);
                reader.extend_from_slice(bytes);
                let mut n = 0;
                while let Some(f) = reader.next_frame().unwrap() {
                    assert!(
                        f.request(&limits).is_ok() || f.response(&limits).is_ok(),
                        "{name}"
                    );
                    n += 1;
                }
                assert!(n >= 1 && reader.buffered() == 0, "{name}");
            } else {
                let mut offset = 0;
                while let Some(p) = parse_command(&bytes[offset..], &RespLimits::default()).unwrap()
                {
                    offset += p.consumed;
                }
                assert_eq!(offset, bytes.len(), "{name}");
            }
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (regenerate with KVTIER_WRITE_FUZZ_SEEDS=1)",
                        path.display()
                    )
                });
                assert_eq!(&committed, bytes, "{} is stale", path.display());
            }
        }
    }
}
