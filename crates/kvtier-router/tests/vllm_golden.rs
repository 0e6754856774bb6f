//! Golden vLLM / SGLang KV-event batches, encoded by msgspec itself, decoded field by field.
//!
//! `tests/data/vllm/NAME.msgpack` are payloads written by `scripts/vllm_golden.py` with the
//! msgspec structs of each wire generation (`tests/python/vllm_structs.py`, from vLLM's
//! documented field order) and `msgspec.msgpack.Encoder`, as vLLM's publisher encodes them;
//! `NAME.json` says what each holds. This file decodes every one with [`decode_vllm_batch`]
//! and asserts every field of every event, so a decoder change that misreads any generation
//! fails here, without Python. To regenerate the files (byte for byte):
//! `scripts/python-env.sh && target/py-venv/bin/python scripts/vllm_golden.py`.
//!
//! The last two tests check that the committed files are what the script writes today (with
//! Python; `KVTIER_SKIP_PYTHON_TESTS=1` skips that one) and that every golden file is tested.

use std::path::PathBuf;
use std::process::Command;

use kvtier_core::Medium;
use kvtier_router::{ExternalHash, ExtraKey, SkipReason, VllmBatch, VllmEvent, decode_vllm_batch};
use kvtier_testkit::python::{python, skip_python_tests};
use kvtier_testkit::workspace_root;

const BLOCK_SIZE: usize = 4;

fn data_dir() -> PathBuf {
    workspace_root().join("crates/kvtier-router/tests/data/vllm")
}

fn decode(name: &str) -> VllmBatch {
    let path = data_dir().join(format!("{name}.msgpack"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    decode_vllm_batch(&bytes).unwrap_or_else(|e| panic!("decode {name}: {e}"))
}

/// The script's `tokens(seed, blocks)`.
fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BLOCK_SIZE) as u32)
        .map(|t| seed * 1000 + t)
        .collect()
}

/// The script's `h(name)`: the name padded with zeros to 32 bytes.
fn h(name: &str) -> ExternalHash {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(32, 0);
    ExternalHash::from(bytes)
}

fn int(v: i128) -> ExternalHash {
    ExternalHash::Int(v)
}

fn s(v: &str) -> ExtraKey {
    ExtraKey::Str(v.to_owned())
}

/// A `BlockStored` with the script's defaults: no LoRA, no group, no extra keys.
struct Stored {
    block_hashes: Vec<ExternalHash>,
    parent: Option<ExternalHash>,
    token_ids: Vec<u32>,
    lora_id: Option<i64>,
    lora_name: Option<&'static str>,
    medium: Option<Medium>,
    group: Option<(i64, &'static str)>,
    extra_keys: Option<Vec<Option<Vec<ExtraKey>>>>,
}

impl Stored {
    fn new(
        block_hashes: Vec<ExternalHash>,
        parent: Option<ExternalHash>,
        token_ids: Vec<u32>,
        medium: Option<Medium>,
    ) -> Self {
        Stored {
            block_hashes,
            parent,
            token_ids,
            lora_id: None,
            lora_name: None,
            medium,
            group: None,
            extra_keys: None,
        }
    }

    fn event(self) -> VllmEvent {
        VllmEvent::BlockStored {
            block_hashes: self.block_hashes,
            parent: self.parent,
            token_ids: self.token_ids,
            block_size: BLOCK_SIZE,
            lora_id: self.lora_id,
            lora_name: self.lora_name.map(str::to_owned),
            medium: self.medium,
            group_idx: self.group.map(|g| g.0),
            cache_kind: self.group.map(|g| g.1.to_owned()),
            extra_keys: self.extra_keys,
        }
    }
}

fn removed(hashes: Vec<ExternalHash>, medium: Option<Medium>, group: Option<i64>) -> VllmEvent {
    VllmEvent::BlockRemoved {
        block_hashes: hashes,
        medium,
        group_idx: group,
    }
}

/// Asserts the whole batch, event by event (so a failure names the event).
fn assert_batch(name: &str, batch: &VllmBatch, ts: f64, rank: Option<i64>, events: &[VllmEvent]) {
    assert_eq!(batch.ts, ts, "{name}: ts");
    assert_eq!(batch.dp_rank, rank, "{name}: rank");
    for (i, (got, want)) in batch.events.iter().zip(events).enumerate() {
        assert_eq!(got, want, "{name}: event {i}");
    }
    assert_eq!(batch.events.len(), events.len(), "{name}: event count");
}

#[test]
fn v0_int_first_generation() {
    let batch = decode("v0_int");
    let max = i128::from(u64::MAX);
    let mut child = Stored::new(vec![int(-5)], Some(int(max)), tokens(2, 1), None);
    child.lora_id = Some(7);
    assert_batch(
        "v0_int",
        &batch,
        1764892800.0,
        None,
        &[
            Stored::new(vec![int(11), int(max)], None, tokens(1, 2), None).event(),
            child.event(),
            removed(vec![int(-5)], None, None),
            VllmEvent::AllBlocksCleared,
        ],
    );
}

#[test]
fn v1_medium_and_cpu_offload() {
    let batch = decode("v1_medium");
    let gpu = Some(Medium::Gpu);
    let cpu = Some(Medium::Cpu);
    assert_batch(
        "v1_medium",
        &batch,
        1764892801.25,
        Some(1),
        &[
            Stored::new(vec![int(101), int(102)], None, tokens(3, 2), gpu).event(),
            // The offloading connector's CPU copies: no tokens, no parent.
            Stored::new(vec![int(101), int(102)], None, vec![], cpu).event(),
            removed(vec![int(101), int(102)], gpu, None),
            removed(vec![int(102)], cpu, None),
            Stored::new(vec![int(103)], None, tokens(4, 1), None).event(),
        ],
    );
}

#[test]
fn v2_lora_name_and_bytes_hashes() {
    let batch = decode("v2_lora_name");
    let gpu = Some(Medium::Gpu);
    let mut lora = Stored::new(vec![h("a0"), h("a1")], None, tokens(5, 2), gpu);
    lora.lora_id = Some(3);
    lora.lora_name = Some("sql-adapter");
    assert_batch(
        "v2_lora_name",
        &batch,
        1764892802.5,
        Some(0),
        &[
            lora.event(),
            Stored::new(
                vec![h("a2")],
                Some(h("a1")),
                tokens(5, 3)[8..].to_vec(),
                gpu,
            )
            .event(),
            Stored::new(vec![int(9001)], Some(h("a2")), tokens(6, 1), gpu).event(),
            removed(vec![h("a2"), int(9001)], gpu, None),
        ],
    );
}

/// The events of `v3_array` and `v4_map`: the same structs, positional and as maps.
fn full_events() -> Vec<VllmEvent> {
    let gpu = Some(Medium::Gpu);
    let full = Some((0, "full_attention"));

    let mut lora = Stored::new(vec![h("l0"), h("l1")], None, tokens(7, 2), gpu);
    lora.lora_id = Some(1);
    lora.lora_name = Some("sql-adapter");
    lora.group = full;
    lora.extra_keys = Some(vec![
        Some(vec![s("sql-adapter")]),
        Some(vec![s("sql-adapter")]),
    ]);

    // (identifier, offset - block start) as msgspec wrote it: [fixstr, fixint].
    let image =
        |rel: u8| ExtraKey::Other([&[0x92, 0xaa][..], b"img-hash-1", &[rel]].concat().into());
    let salted_keys = Some(vec![
        Some(vec![image(0x02), s("tenant-a")]),
        Some(vec![image(0xfe)]), // -2
        None,
    ]);
    let mut salted = Stored::new(vec![h("s0"), h("s1"), h("s2")], None, tokens(8, 3), gpu);
    salted.group = full;
    salted.extra_keys = salted_keys.clone();
    let mut window = Stored::new(vec![h("s0"), h("s1"), h("s2")], None, tokens(8, 3), gpu);
    window.group = Some((1, "sliding_window"));
    window.extra_keys = salted_keys;

    let mut every_kind = Stored::new(vec![h("p0")], None, tokens(10, 1), gpu);
    let nested = [&[0x92, 0xaa][..], b"img-hash-3", &[0x02]].concat();
    let float = [&[0xcb][..], &1.5f64.to_be_bytes()].concat();
    let embeds = [b"prompt-embeds".as_slice(), &[0; 19]].concat();
    every_kind.extra_keys = Some(vec![Some(vec![
        s("img-hash-2"),
        ExtraKey::Int(7),
        ExtraKey::Bytes(embeds.into()),
        ExtraKey::Other(nested.into()),
        ExtraKey::Other(float.into()),
    ])]);

    vec![
        lora.event(),
        salted.event(),
        window.event(),
        Stored::new(vec![h("s0"), h("s1")], None, vec![], Some(Medium::Cpu)).event(),
        VllmEvent::Skipped {
            reason: SkipReason::UnknownTag,
        },
        VllmEvent::Skipped {
            reason: SkipReason::UnknownMedium,
        },
        every_kind.event(),
        removed(vec![h("s2")], gpu, Some(0)),
        removed(vec![h("s0")], Some(Medium::Cpu), None),
        VllmEvent::AllBlocksCleared,
    ]
}

#[test]
fn v3_array_every_field_positional() {
    let batch = decode("v3_array");
    assert_batch("v3_array", &batch, 1764892803.75, Some(2), &full_events());
}

#[test]
fn v4_map_every_field_tagged_maps() {
    let batch = decode("v4_map");
    assert_batch("v4_map", &batch, 1764892804.125, Some(2), &full_events());
}

#[test]
fn v4_map_batch_is_a_map_too() {
    let batch = decode("v4_map_batch");
    let gpu = Some(Medium::Gpu);
    let mut store = Stored::new(vec![h("m0")], None, tokens(11, 1), gpu);
    store.group = Some((0, "full_attention"));
    assert_batch(
        "v4_map_batch",
        &batch,
        1764892805.5,
        Some(3),
        &[store.event(), removed(vec![h("m0")], gpu, None)],
    );
}

#[test]
fn sglang_metadata_is_not_a_lora_name() {
    let batch = decode("sglang");
    let gpu = Some(Medium::Gpu);
    assert_eq!(batch.ts, 1764892806.0);
    assert_eq!(batch.dp_rank, Some(1), "attn_dp_rank");
    assert_eq!(batch.events.len(), 4);
    assert_eq!(
        batch.events[0],
        Stored::new(vec![int(21), int(22)], None, tokens(12, 2), gpu).event()
    );
    // A metadata map ({"cache_salt": ...}) where vLLM has lora_name: no LoRA.
    assert_eq!(
        batch.events[1],
        Stored::new(
            vec![int(23)],
            Some(int(22)),
            tokens(12, 3)[8..].to_vec(),
            gpu
        )
        .event()
    );
    assert_eq!(batch.events[3], removed(vec![int(23)], None, None));
}

#[test]
fn sglang_cpu_pinned_is_the_cpu_tier() {
    // SGLang's StorageMedium.CPU is "CPU_PINNED": its host-memory copies.
    let batch = decode("sglang");
    assert_eq!(
        batch.events[2],
        Stored::new(vec![int(21)], None, vec![], Some(Medium::Cpu)).event()
    );
}

/// Every `.msgpack` under `tests/data/vllm` has a test above, and a description.
#[test]
fn every_golden_file_is_tested_and_described() {
    let tested = [
        "sglang",
        "v0_int",
        "v1_medium",
        "v2_lora_name",
        "v3_array",
        "v4_map",
        "v4_map_batch",
    ];
    let mut found: Vec<String> = std::fs::read_dir(data_dir())
        .expect("tests/data/vllm")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".msgpack")?.to_owned())
        })
        .collect();
    found.sort();
    assert_eq!(found, tested);
    for name in tested {
        let json = std::fs::read_to_string(data_dir().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}.json: {e}"));
        assert!(
            json.contains(&format!("\"file\": \"{name}.msgpack\"")),
            "{name}.json"
        );
    }
}

/// The committed bytes are exactly what msgspec writes from the script today.
#[test]
fn golden_files_regenerate_byte_for_byte() {
    if skip_python_tests() {
        return;
    }
    let out = Command::new(python())
        .arg(workspace_root().join("scripts/vllm_golden.py"))
        .arg("--check")
        .output()
        .expect("run scripts/vllm_golden.py --check");
    assert!(
        out.status.success(),
        "scripts/vllm_golden.py --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
