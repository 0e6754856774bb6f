//! The seed inputs of the fuzz targets (`fuzz/seeds/<target>/`): their generator, and a check
//! that every committed seed is still a valid input of its target.
//!
//! Fuzzing from valid inputs reaches the code behind the first parse; from nothing, libFuzzer
//! spends its short CI run discovering msgpack. Each target gets:
//!
//! | target | seeds |
//! |---|---|
//! | `event_message` | kvtier event messages and dumps, every payload kind, JSON and msgpack |
//! | `vllm_batch` | vLLM/SGLang batches of each wire generation the decoder accepts (positional and tagged-map events, int and bytes hashes, LoRA, extra keys, hybrid groups, offloaded copies, rank-less SGLang, map batches) |
//! | `router_stream` | length-prefixed msgpack message streams (in order, gaps, duplicates, clears, shutdowns) |
//! | `router_snapshot` | snapshot files written by `Router::snapshot_bytes` |
//! | `router_snapshot_body` | `0x00` + the bodies of those snapshots; `0x01` + bytes for its structured mode |
//!
//! The vLLM batches here are msgpack written value by value after vLLM's msgspec field order;
//! the golden workstream's msgspec-encoded files (`tests/data/vllm/`) are added to the
//! `vllm_batch` corpus by `scripts/fuzz-smoke.sh` when present.
//!
//! Regenerate after a format change with
//! `KVTIER_WRITE_FUZZ_SEEDS=1 cargo test -p kvtier-router --test fuzz_seeds`; without the
//! variable the test only checks (it fails if a committed seed no longer parses, or one the
//! generator makes is missing).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, Medium, SequenceHash};
use kvtier_events::{
    Dump, EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, MediumBlocks, Payload,
    WireFormat,
};
use kvtier_router::{Router, VllmConvertConfig, VllmConverter, VllmSourceState, decode_vllm_batch};
use rmpv::Value;

/// Seeds per target: file name → bytes.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

/// Bytes before a snapshot body, and after it (the checksum).
const SNAPSHOT_HEADER: usize = 20;
const SNAPSHOT_TRAILER: usize = 8;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

fn hashes(tokens: u32, block_size: u32, salt: u32) -> Vec<SequenceHash> {
    let hasher = BlockHasher::new(block_size as usize, HashScheme::default(), ExtraKeys::new())
        .expect("a valid hasher");
    let tokens: Vec<u32> = (0..tokens)
        .map(|t| t.wrapping_mul(7).wrapping_add(salt))
        .collect();
    hasher.sequence_hashes(&tokens)
}

fn batch(
    id: u128,
    event_id: u64,
    medium: Medium,
    kind: EventKind,
    hashes: Vec<SequenceHash>,
    policy: EmitPolicy,
) -> EventMessage {
    EventMessage {
        instance: InstanceId(id),
        event_id,
        payload: Payload::Batch(EventBatch {
            medium,
            kind,
            hashes,
            policy,
        }),
    }
}

fn messages() -> Vec<(&'static str, EventMessage)> {
    let h = hashes(32, 4, 0);
    let mut removed: Vec<_> = h[4..].to_vec();
    removed.reverse();
    let msg = |event_id, payload| EventMessage {
        instance: InstanceId(0x1234_5678_9abc_def0_0fed_cba9_8765_4321),
        event_id,
        payload,
    };
    vec![
        (
            "created_gpu",
            batch(
                1,
                1,
                Medium::Gpu,
                EventKind::Create,
                h.clone(),
                EmitPolicy::All,
            ),
        ),
        (
            "removed_cpu",
            batch(
                1,
                2,
                Medium::Cpu,
                EventKind::Remove,
                removed,
                EmitPolicy::All,
            ),
        ),
        (
            "created_disk_pow2",
            batch(
                2,
                7,
                Medium::Disk,
                EventKind::Create,
                vec![h[0], h[1], h[3], h[7]],
                EmitPolicy::PowerOfTwo,
            ),
        ),
        (
            "cleared_external",
            msg(
                3,
                Payload::Cleared {
                    medium: Some(Medium::External),
                },
            ),
        ),
        ("cleared_all", msg(4, Payload::Cleared { medium: None })),
        ("shutdown", msg(5, Payload::Shutdown)),
        ("heartbeat", msg(u64::MAX - 1, Payload::Heartbeat)),
    ]
}

fn dumps() -> Vec<(&'static str, Dump)> {
    let h = hashes(24, 4, 9);
    vec![
        (
            "dump_two_media",
            Dump {
                instance: InstanceId(7),
                event_id: 41,
                blocks: vec![
                    MediumBlocks {
                        medium: Medium::Gpu,
                        hashes: h.clone(),
                    },
                    MediumBlocks {
                        medium: Medium::Disk,
                        hashes: h[..2].to_vec(),
                    },
                ],
                shut_down: false,
                policy: EmitPolicy::All,
            },
        ),
        (
            "dump_shut_down",
            Dump {
                instance: InstanceId(8),
                event_id: 3,
                blocks: Vec::new(),
                shut_down: true,
                policy: EmitPolicy::PowerOfTwo,
            },
        ),
        (
            "dump_empty",
            Dump {
                instance: InstanceId(9),
                event_id: 0,
                blocks: Vec::new(),
                shut_down: false,
                policy: EmitPolicy::None,
            },
        ),
    ]
}

fn event_message_seeds() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (format, ext) in [(WireFormat::Json, "json"), (WireFormat::Msgpack, "msgpack")] {
        for (name, m) in messages() {
            out.insert(format!("{name}.{ext}"), m.encode(format).expect("encodes"));
        }
        for (name, d) in dumps() {
            out.insert(format!("{name}.{ext}"), d.encode(format).expect("encodes"));
        }
    }
    out
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn arr(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn ints<T: Copy + Into<Value>>(v: &[T]) -> Value {
    Value::Array(v.iter().map(|&x| x.into()).collect())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn bin(seed: u8) -> Value {
    Value::Binary(
        (0..32u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(seed))
            .collect(),
    )
}

fn tokens(n: u32, from: u32) -> Value {
    ints(&(from..from + n).collect::<Vec<_>>())
}

fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("writing to a Vec succeeds");
    buf
}

/// `[ts, events, rank]` (msgspec `array_like` EventBatch); no rank for SGLang.
fn array_batch(events: Vec<Value>, rank: Option<i64>) -> Value {
    let mut items = vec![Value::F64(1_733_300_000.25), arr(events)];
    items.extend(rank.map(Value::from));
    arr(items)
}

/// The vLLM batches, with the number of events each holds.
fn vllm_batches() -> Vec<(&'static str, Value, usize)> {
    // vLLM before PR #42892: positional events, 64-bit int hashes (signed or not), 7 fields.
    let legacy = array_batch(
        vec![
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(u64::MAX - 3), Value::from(-42i64)]),
                Value::Nil,
                tokens(32, 100),
                Value::from(16),
                Value::Nil,
                s("GPU"),
            ]),
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(77u64)]),
                Value::from(-42i64),
                tokens(16, 132),
                Value::from(16),
                Value::Nil,
                s("GPU"),
            ]),
            arr(vec![
                s("BlockRemoved"),
                arr(vec![Value::from(77u64)]),
                s("GPU"),
            ]),
            arr(vec![s("AllBlocksCleared")]),
        ],
        Some(0),
    );
    // Later positional events: bytes hashes, LoRA, extra keys, hybrid groups, spec kind.
    let full = array_batch(
        vec![
            arr(vec![
                s("BlockStored"),
                arr(vec![bin(1), bin(2)]),
                Value::Nil,
                tokens(8, 0),
                Value::from(4),
                Value::from(3),
                s("GPU"),
                s("sql-adapter"),
                arr(vec![
                    arr(vec![s("mm-hash-0"), Value::from(0), bin(9)]),
                    Value::Nil,
                ]),
                Value::from(0),
                s("full_attention"),
            ]),
            arr(vec![
                s("BlockStored"),
                arr(vec![bin(3)]),
                bin(2),
                tokens(4, 8),
                Value::from(4),
                Value::Nil,
                s("GPU"),
                Value::Nil,
                arr(vec![arr(vec![s("salt-a")])]),
                Value::from(1),
                s("sliding_window"),
            ]),
            arr(vec![
                s("BlockRemoved"),
                arr(vec![bin(3)]),
                s("GPU"),
                Value::from(1),
            ]),
        ],
        Some(2),
    );
    // vLLM's offloading connector: CPU and STORAGE copies of known blocks, no tokens, no parent.
    let offload = array_batch(
        vec![
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(5u64), Value::from(6u64)]),
                Value::Nil,
                tokens(8, 40),
                Value::from(4),
                Value::Nil,
                s("GPU"),
            ]),
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(5u64), Value::from(6u64)]),
                Value::Nil,
                arr(vec![]),
                Value::from(4),
                Value::Nil,
                s("CPU"),
            ]),
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(5u64)]),
                Value::Nil,
                arr(vec![]),
                Value::from(4),
                Value::Nil,
                s("STORAGE"),
            ]),
            arr(vec![
                s("BlockRemoved"),
                arr(vec![Value::from(5u64), Value::from(6u64)]),
                s("GPU"),
            ]),
        ],
        Some(0),
    );
    // vLLM at and after PR #42892: events are tagged maps (omit_defaults drops nil fields).
    let tagged = array_batch(
        vec![
            map(vec![
                ("type", s("BlockStored")),
                ("block_hashes", arr(vec![bin(4), bin(5)])),
                ("parent_block_hash", Value::Nil),
                ("token_ids", tokens(32, 7)),
                ("block_size", Value::from(16)),
                ("medium", s("GPU")),
                ("lora_name", s("chat-lora")),
                (
                    "extra_keys",
                    arr(vec![Value::Nil, arr(vec![Value::from(12)])]),
                ),
                ("group_idx", Value::from(0)),
            ]),
            map(vec![
                ("type", s("BlockRemoved")),
                ("block_hashes", arr(vec![bin(5)])),
                ("medium", s("GPU")),
            ]),
            map(vec![("type", s("AllBlocksCleared"))]),
        ],
        Some(1),
    );
    // A map batch (not array_like), with a positional event and a map event mixed.
    let map_batch = map(vec![
        ("ts", Value::F64(12.5)),
        (
            "events",
            arr(vec![
                arr(vec![
                    s("BlockStored"),
                    arr(vec![Value::from(1u64)]),
                    Value::Nil,
                    tokens(4, 0),
                    Value::from(4),
                    Value::Nil,
                    s("gpu"),
                ]),
                map(vec![
                    ("type", s("BlockStored")),
                    ("block_hashes", arr(vec![Value::from(2u64)])),
                    ("parent_block_hash", Value::from(1u64)),
                    ("token_ids", tokens(4, 4)),
                    ("block_size", Value::from(4)),
                ]),
            ]),
        ),
        ("data_parallel_rank", Value::from(3)),
    ]);
    // SGLang: no rank, and a metadata map where vLLM has `lora_name`.
    let sglang = array_batch(
        vec![
            arr(vec![
                s("BlockStored"),
                arr(vec![Value::from(10u64), Value::from(11u64)]),
                Value::Nil,
                tokens(2, 0),
                Value::from(1),
                Value::Nil,
                s("GPU"),
                map(vec![("origin", s("radix"))]),
            ]),
            arr(vec![
                s("BlockRemoved"),
                arr(vec![Value::from(11u64)]),
                Value::Nil,
            ]),
        ],
        None,
    );
    vec![
        ("legacy_int_hashes", legacy, 4),
        ("bytes_lora_extra_keys_groups", full, 3),
        ("offloaded_copies", offload, 4),
        ("tagged_map_events", tagged, 3),
        ("map_batch", map_batch, 2),
        ("sglang_no_rank", sglang, 2),
        ("empty", array_batch(vec![], Some(0)), 0),
    ]
}

fn vllm_batch_seeds() -> BTreeMap<String, Vec<u8>> {
    vllm_batches()
        .into_iter()
        .map(|(name, v, _)| (format!("{name}.msgpack"), encode(&v)))
        .collect()
}

/// Streams for `router_stream`: frames of one length byte and that many bytes of msgpack.
fn stream_seeds() -> BTreeMap<String, Vec<u8>> {
    let h = hashes(16, 4, 3);
    let frames = |msgs: &[EventMessage]| {
        let mut out = Vec::new();
        for m in msgs {
            let bytes = m.encode(WireFormat::Msgpack).expect("encodes");
            out.push(u8::try_from(bytes.len()).expect("a seed frame fits a length byte"));
            out.extend_from_slice(&bytes);
        }
        out
    };
    let create = |id, ev, hs: &[SequenceHash]| {
        batch(
            id,
            ev,
            Medium::Gpu,
            EventKind::Create,
            hs.to_vec(),
            EmitPolicy::All,
        )
    };
    let remove = |id, ev, hs: &[SequenceHash]| {
        batch(
            id,
            ev,
            Medium::Gpu,
            EventKind::Remove,
            hs.to_vec(),
            EmitPolicy::All,
        )
    };
    let cleared = |id, ev| EventMessage {
        instance: InstanceId(id),
        event_id: ev,
        payload: Payload::Cleared { medium: None },
    };
    let shutdown = |id, ev| EventMessage {
        instance: InstanceId(id),
        event_id: ev,
        payload: Payload::Shutdown,
    };
    let mut out = BTreeMap::new();
    out.insert(
        "in_order.bin".to_owned(),
        frames(&[
            create(1, 1, &h[..2]),
            create(1, 2, &h[2..4]),
            create(2, 1, &h[..1]),
            remove(1, 3, &h[3..4]),
        ]),
    );
    out.insert(
        "gap_then_fill.bin".to_owned(),
        frames(&[
            create(1, 1, &h[..1]),
            create(1, 3, &h[2..3]),
            create(1, 2, &h[1..2]),
        ]),
    );
    out.insert(
        "duplicates_clear_shutdown.bin".to_owned(),
        frames(&[
            create(3, 1, &h[..2]),
            create(3, 1, &h[..2]),
            cleared(3, 2),
            create(3, 3, &h[..1]),
            shutdown(3, 4),
        ]),
    );
    // Event ids at the top of the range: the id after `u64::MAX - 1` is the last one, and a
    // stream must never make the router compute the id after `u64::MAX`.
    let heartbeat = |id, ev| EventMessage {
        instance: InstanceId(id),
        event_id: ev,
        payload: Payload::Heartbeat,
    };
    out.insert(
        "event_ids_at_u64_max.bin".to_owned(),
        frames(&[
            create(5, u64::MAX - 1, &h[..1]),
            heartbeat(5, u64::MAX),
            heartbeat(6, u64::MAX),
            heartbeat(7, 0),
        ]),
    );
    out.insert(
        "sparse_and_media.bin".to_owned(),
        frames(&[
            batch(
                4,
                1,
                Medium::Gpu,
                EventKind::Create,
                vec![h[0], h[1], h[3]],
                EmitPolicy::PowerOfTwo,
            ),
            batch(
                4,
                2,
                Medium::Disk,
                EventKind::Create,
                vec![h[0]],
                EmitPolicy::PowerOfTwo,
            ),
            batch(
                4,
                3,
                Medium::Gpu,
                EventKind::Remove,
                vec![h[3]],
                EmitPolicy::PowerOfTwo,
            ),
        ]),
    );
    out
}

/// Snapshots of routers fed real streams.
fn snapshots() -> Vec<(&'static str, Vec<u8>)> {
    let empty = Router::builder().build();
    let mut one = Router::builder().build();
    one.apply(batch(
        1,
        1,
        Medium::Gpu,
        EventKind::Create,
        hashes(16, 4, 0),
        EmitPolicy::All,
    ));
    let mut many = Router::builder().build();
    let h = hashes(32, 4, 5);
    many.apply(batch(
        1,
        1,
        Medium::Gpu,
        EventKind::Create,
        h.clone(),
        EmitPolicy::All,
    ));
    many.apply(batch(
        1,
        2,
        Medium::Cpu,
        EventKind::Create,
        h[..3].to_vec(),
        EmitPolicy::All,
    ));
    many.apply(batch(
        2,
        1,
        Medium::Disk,
        EventKind::Create,
        vec![h[0], h[1], h[3]],
        EmitPolicy::PowerOfTwo,
    ));
    many.apply(batch(
        3,
        1,
        Medium::External,
        EventKind::Create,
        h[..1].to_vec(),
        EmitPolicy::All,
    ));
    many.apply(batch(
        3,
        2,
        Medium::External,
        EventKind::Remove,
        h[..1].to_vec(),
        EmitPolicy::All,
    ));
    [
        ("empty", empty),
        ("one_instance", one),
        ("three_instances_all_media", many),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.snapshot_bytes().expect("a router snapshots")))
    .collect()
}

fn snapshot_seeds() -> BTreeMap<String, Vec<u8>> {
    snapshots()
        .into_iter()
        .map(|(n, b)| (format!("{n}.snap"), b))
        .collect()
}

fn snapshot_body_seeds() -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = snapshots()
        .into_iter()
        .map(|(n, b)| {
            let mut seed = vec![0u8];
            seed.extend_from_slice(&b[SNAPSHOT_HEADER..b.len() - SNAPSHOT_TRAILER]);
            (format!("body_{n}.bin"), seed)
        })
        .collect();
    // Structured mode: any bytes are valid; these give a few instances with blocks.
    out.insert("structured_small.bin".to_owned(), (1u8..=64).collect());
    out.insert(
        "structured_shared_hashes.bin".to_owned(),
        std::iter::once(1u8)
            .chain((0..200u32).map(|i| (i * 37 % 7) as u8))
            .collect(),
    );
    out
}

fn all_seeds() -> Seeds {
    let mut all = Seeds::new();
    all.insert("event_message", event_message_seeds());
    all.insert("vllm_batch", vllm_batch_seeds());
    all.insert("router_stream", stream_seeds());
    all.insert("router_snapshot", snapshot_seeds());
    all.insert("router_snapshot_body", snapshot_body_seeds());
    all.insert("vllm_state", state_seeds());
    all
}

/// Saved vLLM source states. Only a running source makes a state with ranks and entries, so
/// the seeds are empty states: valid framing and checksum for the fuzzer to start from.
fn state_seeds() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    out.insert(
        "empty.bin".to_owned(),
        VllmSourceState::empty("engine-a").to_bytes(),
    );
    out.insert(
        "empty_unnamed.bin".to_owned(),
        VllmSourceState::empty("").to_bytes(),
    );
    out
}

/// The snapshot file around `body`, as `router_snapshot_body` frames it.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = b"KVTRSNAP".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
    out
}

/// Panics unless `bytes` is a valid, meaningful input of `target`.
fn check_valid(target: &str, name: &str, bytes: &[u8]) {
    match target {
        "event_message" => {
            let format = if name.ends_with(".json") {
                WireFormat::Json
            } else {
                WireFormat::Msgpack
            };
            let msg = EventMessage::decode(bytes, format).map(|_| ());
            let dump = Dump::decode(bytes, format).map(|_| ());
            assert!(
                msg.is_ok() || dump.is_ok(),
                "{name}: neither a message nor a dump"
            );
        }
        "vllm_batch" => {
            let batch = decode_vllm_batch(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut conv = VllmConverter::new(InstanceId(1), VllmConvertConfig::default());
            let mut out = Vec::new();
            conv.apply_batch(&batch, &mut out);
            if batch
                .events
                .iter()
                .any(|e| format!("{e:?}").starts_with("BlockStored"))
            {
                assert!(
                    !out.is_empty(),
                    "{name}: stored blocks but no kvtier message"
                );
            }
        }
        "router_stream" => {
            // Every frame decodes; what the router makes of them is the fuzz target's check.
            let mut rest = bytes;
            let mut frames = 0;
            while let Some((&len, tail)) = rest.split_first() {
                assert!(
                    usize::from(len) <= tail.len(),
                    "{name}: a frame runs past the end"
                );
                let (frame, tail) = tail.split_at(usize::from(len));
                EventMessage::decode(frame, WireFormat::Msgpack)
                    .unwrap_or_else(|e| panic!("{name}: a frame does not decode: {e}"));
                frames += 1;
                rest = tail;
            }
            assert!(frames > 1, "{name}: a stream of one message");
        }
        "vllm_state" => {
            let state =
                VllmSourceState::from_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(state.to_bytes(), bytes, "{name}: not stable");
        }
        "router_snapshot" => {
            let router = Router::from_snapshot_bytes(Router::builder(), bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                router.snapshot_bytes().expect("snapshots"),
                bytes,
                "{name}: not stable"
            );
        }
        "router_snapshot_body" => {
            let (&mode, body) = bytes.split_first().expect("a mode byte");
            if mode % 2 == 0 {
                let file = frame(body);
                let router = Router::from_snapshot_bytes(Router::builder(), &file)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    router.snapshot_bytes().expect("snapshots"),
                    file,
                    "{name}: framing"
                );
            }
        }
        other => panic!("no check for target {other}"),
    }
}

#[test]
fn generated_seeds_are_valid_inputs() {
    for (target, seeds) in all_seeds() {
        for (name, bytes) in &seeds {
            check_valid(target, name, bytes);
        }
    }
}

#[test]
fn vllm_seeds_decode_to_every_event() {
    for (name, value, events) in vllm_batches() {
        let batch = decode_vllm_batch(&encode(&value)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(batch.events.len(), events, "{name}");
    }
}

#[test]
fn committed_seeds_are_current_and_valid() {
    let root = seeds_dir();
    let write = std::env::var_os("KVTIER_WRITE_FUZZ_SEEDS").is_some();
    for (target, seeds) in all_seeds() {
        let dir = root.join(target);
        if write {
            std::fs::create_dir_all(&dir).expect("create the seed folder");
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).expect("write a seed");
            }
        }
        for name in seeds.keys() {
            assert!(
                dir.join(name).is_file(),
                "{target}/{name} is not committed: run with KVTIER_WRITE_FUZZ_SEEDS=1"
            );
        }
        let mut committed = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed folder exists") {
            let path = entry.expect("a readable entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 name");
            check_valid(
                target,
                name,
                &std::fs::read(&path).expect("a readable seed"),
            );
            committed += 1;
        }
        assert!(committed >= seeds.len(), "{target}: {committed} seeds");
    }
}
