//! Decoder tests: both layouts, version skew, and malformed input (errors, never panics).

use proptest::prelude::*;
use rmpv::Value;

use super::*;

fn s(v: &str) -> Value {
    Value::from(v)
}

fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).unwrap();
    buf
}

fn ints(v: &[u64]) -> Value {
    Value::Array(v.iter().map(|&x| Value::from(x)).collect())
}

fn batch(events: Vec<Value>, rank: Option<i64>) -> Value {
    let mut items = vec![Value::F64(12.5), Value::Array(events)];
    if let Some(r) = rank {
        items.push(Value::from(r));
    }
    Value::Array(items)
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// vLLM before PR #42892: `["BlockStored", hashes, parent, tokens, bs, lora_id, medium]`.
fn legacy_stored() -> Value {
    Value::Array(vec![
        s("BlockStored"),
        Value::Array(vec![Value::from(u64::MAX), Value::from(-5i64)]),
        Value::Nil,
        ints(&[1, 2, 3, 4, 5, 6, 7, 8]),
        Value::from(4),
        Value::Nil,
        s("GPU"),
    ])
}

/// Decodes one event on its own (a batch turns its errors into [`VllmEvent::Skipped`]).
fn decode_one(event: Value) -> Result<VllmEvent, VllmDecodeError> {
    event_from_value(event)
}

#[test]
fn legacy_array_layout() {
    let b = decode_vllm_batch(&encode(&batch(
        vec![
            legacy_stored(),
            Value::Array(vec![s("BlockRemoved"), ints(&[9]), s("cpu")]),
            Value::Array(vec![s("AllBlocksCleared")]),
        ],
        Some(3),
    )))
    .unwrap();
    assert_eq!(b.ts, 12.5);
    assert_eq!(b.dp_rank, Some(3));
    assert_eq!(
        b.events[0],
        VllmEvent::BlockStored {
            block_hashes: vec![ExternalHash::Int(u64::MAX.into()), ExternalHash::Int(-5)],
            parent: None,
            token_ids: vec![1, 2, 3, 4, 5, 6, 7, 8],
            block_size: 4,
            lora_id: None,
            lora_name: None,
            medium: Some(Medium::Gpu),
            group_idx: None,
            cache_kind: None,
            extra_keys: None,
        }
    );
    assert_eq!(
        b.events[1],
        VllmEvent::BlockRemoved {
            block_hashes: vec![ExternalHash::Int(9)],
            medium: Some(Medium::Cpu),
            group_idx: None,
        }
    );
    assert_eq!(b.events[2], VllmEvent::AllBlocksCleared);
}

#[test]
fn map_layout_with_bytes_hashes_and_unknown_keys() {
    let event = map(vec![
        ("type", s("BlockStored")),
        (
            "block_hashes",
            Value::Array(vec![Value::Binary(vec![0xAB; 32])]),
        ),
        ("parent_block_hash", Value::Binary(vec![1, 2, 3])),
        ("token_ids", ints(&[10, 11])),
        ("block_size", Value::from(2)),
        ("lora_id", Value::from(7)),
        ("medium", s("GPU")),
        ("lora_name", s("sql")),
        ("extra_keys", Value::Array(vec![Value::Nil])),
        ("group_idx", Value::from(0)),
        ("kv_cache_spec_kind", s("full_attention")),
        ("some_future_field", map(vec![("x", Value::from(1))])),
    ]);
    let VllmEvent::BlockStored {
        block_hashes,
        parent,
        lora_id,
        lora_name,
        group_idx,
        cache_kind,
        ..
    } = decode_one(event).unwrap()
    else {
        panic!("not a store");
    };
    assert_eq!(block_hashes, [ExternalHash::from(vec![0xAB; 32])]);
    assert_eq!(parent, Some(ExternalHash::from(&[1u8, 2, 3][..])));
    assert_eq!(lora_id, Some(7));
    assert_eq!(lora_name.as_deref(), Some("sql"));
    assert_eq!(group_idx, Some(0));
    assert_eq!(cache_kind.as_deref(), Some("full_attention"));
}

#[test]
fn bad_events_are_skipped_and_the_rest_of_the_batch_decoded() {
    let b = decode_vllm_batch(&encode(&batch(
        vec![
            Value::Array(vec![s("BlockRemoved"), ints(&[1]), s("TAPE")]),
            map(vec![("type", s("BlockMoved"))]),
            Value::Array(vec![s("BlockRemoved"), s("not hashes")]),
            Value::from(7),
            Value::Array(vec![s("BlockRemoved"), ints(&[2]), s("GPU")]),
        ],
        Some(0),
    )))
    .unwrap();
    let skipped = |reason| VllmEvent::Skipped { reason };
    assert_eq!(
        b.events[..4],
        [
            skipped(SkipReason::UnknownMedium),
            skipped(SkipReason::UnknownTag),
            skipped(SkipReason::Malformed),
            skipped(SkipReason::Malformed),
        ]
    );
    assert!(
        matches!(&b.events[4], VllmEvent::BlockRemoved { block_hashes, .. }
        if block_hashes == &[ExternalHash::Int(2)])
    );
}

#[test]
fn extra_keys_are_decoded_per_block() {
    let event = map(vec![
        ("type", s("BlockStored")),
        ("block_hashes", ints(&[1, 2])),
        ("parent_block_hash", Value::Nil),
        ("token_ids", ints(&[1, 2, 3, 4])),
        ("block_size", Value::from(2)),
        ("lora_id", Value::Nil),
        ("medium", s("GPU")),
        ("lora_name", s("sql")),
        (
            "extra_keys",
            Value::Array(vec![
                Value::Array(vec![
                    s("sql"),
                    Value::Array(vec![s("img"), Value::from(-3)]),
                    s("salt"),
                    Value::Binary(vec![9, 9]),
                    Value::from(u64::MAX),
                ]),
                Value::Nil,
            ]),
        ),
    ]);
    let VllmEvent::BlockStored { extra_keys, .. } = decode_one(event).unwrap() else {
        panic!("not a store");
    };
    let mut tuple = Vec::new();
    rmpv::encode::write_value(&mut tuple, &Value::Array(vec![s("img"), Value::from(-3)])).unwrap();
    assert_eq!(
        extra_keys,
        Some(vec![
            Some(vec![
                ExtraKey::Str("sql".into()),
                ExtraKey::Other(tuple.into_boxed_slice()),
                ExtraKey::Str("salt".into()),
                ExtraKey::Bytes(vec![9, 9].into_boxed_slice()),
                ExtraKey::Int(u64::MAX.into()),
            ]),
            None,
        ])
    );
    // The canonical bytes keep kinds and boundaries apart.
    let bytes = |keys: &[ExtraKey]| {
        let mut out = Vec::new();
        keys.iter().for_each(|k| k.encode_into(&mut out));
        out
    };
    let (ab, c) = (ExtraKey::Str("ab".into()), ExtraKey::Str("c".into()));
    let (a, bc) = (ExtraKey::Str("a".into()), ExtraKey::Str("bc".into()));
    assert_ne!(bytes(&[ab, c]), bytes(&[a, bc]));
    assert_ne!(
        bytes(&[ExtraKey::Str("1".into())]),
        bytes(&[ExtraKey::Int(1)])
    );
}

#[test]
fn map_shaped_batch_and_sglang_rank_name() {
    let b = map(vec![
        ("ts", Value::from(3)),
        (
            "events",
            Value::Array(vec![map(vec![("type", s("AllBlocksCleared"))])]),
        ),
        ("attn_dp_rank", Value::from(2)),
    ]);
    let b = decode_vllm_batch(&encode(&b)).unwrap();
    assert_eq!((b.ts, b.dp_rank), (3.0, Some(2)));
    assert_eq!(b.events, [VllmEvent::AllBlocksCleared]);
}

#[test]
fn version_skew_is_tolerated() {
    // Older: no rank, SGLang's removal without a medium, a store without the medium field.
    let mut short = legacy_stored();
    if let Value::Array(items) = &mut short {
        items.truncate(6);
    }
    let b = decode_vllm_batch(&encode(&batch(
        vec![short, Value::Array(vec![s("BlockRemoved"), ints(&[1])])],
        None,
    )))
    .unwrap();
    assert_eq!(b.dp_rank, None);
    assert!(matches!(
        b.events[0],
        VllmEvent::BlockStored { medium: None, .. }
    ));
    assert!(matches!(
        b.events[1],
        VllmEvent::BlockRemoved { medium: None, .. }
    ));

    // Newer or other engines: extra trailing fields; SGLang's metadata map where vLLM has
    // lora_name is not an error.
    let mut long = legacy_stored();
    if let Value::Array(items) = &mut long {
        items.push(map(vec![("cache_salt", s("tenant"))]));
        items.extend([
            Value::Nil,
            Value::from(1),
            s("sliding_window"),
            Value::from(128),
        ]);
        items.extend((0..5).map(Value::from));
    }
    let VllmEvent::BlockStored {
        lora_name,
        group_idx,
        cache_kind,
        ..
    } = decode_one(long).unwrap()
    else {
        panic!("not a store");
    };
    assert_eq!(lora_name, None);
    assert_eq!(group_idx, Some(1));
    assert_eq!(cache_kind.as_deref(), Some("sliding_window"));

    // Extra batch fields are ignored too.
    let mut b = batch(vec![], Some(0));
    if let Value::Array(items) = &mut b {
        items.push(s("future"));
    }
    assert!(decode_vllm_batch(&encode(&b)).is_ok());
}

#[test]
fn media_and_aliases() {
    let removed = |m: &str| decode_one(Value::Array(vec![s("BlockRemoved"), ints(&[1]), s(m)]));
    assert!(matches!(
        removed("DISK"),
        Ok(VllmEvent::BlockRemoved {
            medium: Some(Medium::Disk),
            ..
        })
    ));
    assert!(matches!(
        removed("STORAGE"),
        Ok(VllmEvent::BlockRemoved {
            medium: Some(Medium::Disk),
            ..
        })
    ));
    assert!(matches!(
        removed("external"),
        Ok(VllmEvent::BlockRemoved {
            medium: Some(Medium::External),
            ..
        })
    ));
    assert_eq!(
        removed("TAPE"),
        Err(VllmDecodeError::UnknownMedium {
            name: "TAPE".into()
        })
    );
}

#[test]
fn truncated_payloads_are_errors() {
    let bytes = encode(&batch(vec![legacy_stored(), legacy_stored()], Some(0)));
    for len in 0..bytes.len() {
        assert!(
            decode_vllm_batch(&bytes[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
    assert!(decode_vllm_batch(&bytes).is_ok());
    let mut longer = bytes.clone();
    longer.push(0xc0);
    assert_eq!(
        decode_vllm_batch(&longer),
        Err(VllmDecodeError::TrailingBytes { count: 1 })
    );
}

#[test]
fn wrong_types_are_errors() {
    let with = |at: usize, v: Value| {
        let mut e = legacy_stored();
        if let Value::Array(items) = &mut e {
            items[at] = v;
        }
        decode_one(e)
    };
    assert!(matches!(
        with(1, s("nope")),
        Err(VllmDecodeError::WrongType {
            field: "block_hashes",
            ..
        })
    ));
    assert!(matches!(
        with(1, Value::Array(vec![Value::F64(1.0)])),
        Err(VllmDecodeError::WrongType {
            field: "block_hashes",
            ..
        })
    ));
    assert!(matches!(
        with(2, s("x")),
        Err(VllmDecodeError::WrongType {
            field: "parent_block_hash",
            ..
        })
    ));
    assert!(matches!(
        with(3, ints(&[u64::from(u32::MAX) + 1])),
        Err(VllmDecodeError::OutOfRange { field: "token_ids" })
    ));
    assert!(matches!(
        with(3, Value::Array(vec![Value::from(-1)])),
        Err(VllmDecodeError::OutOfRange { field: "token_ids" })
    ));
    assert!(matches!(
        with(4, Value::from(-4)),
        Err(VllmDecodeError::OutOfRange {
            field: "block_size"
        })
    ));
    assert!(matches!(
        with(4, Value::Nil),
        Err(VllmDecodeError::MissingField {
            field: "block_size"
        })
    ));
    assert!(matches!(
        with(6, Value::from(3)),
        Err(VllmDecodeError::WrongType {
            field: "medium",
            ..
        })
    ));
    // Map layout: named fields are strict.
    assert!(matches!(
        decode_one(map(vec![
            ("type", s("BlockRemoved")),
            ("block_hashes", ints(&[1])),
            ("group_idx", s("zero")),
        ])),
        Err(VllmDecodeError::WrongType {
            field: "group_idx",
            ..
        })
    ));
    assert!(matches!(
        decode_one(map(vec![("type", s("BlockRemoved"))])),
        Err(VllmDecodeError::MissingField {
            field: "block_hashes"
        })
    ));
    assert!(matches!(
        decode_one(map(vec![("block_hashes", ints(&[1]))])),
        Err(VllmDecodeError::MissingField { field: "type" })
    ));
    assert!(matches!(
        decode_one(Value::Array(vec![Value::from(1)])),
        Err(VllmDecodeError::WrongType { field: "type", .. })
    ));
    assert!(matches!(
        decode_one(Value::from(1)),
        Err(VllmDecodeError::WrongType { field: "event", .. })
    ));
    // Batch level.
    assert!(matches!(
        decode_vllm_batch(&encode(&s("batch"))),
        Err(VllmDecodeError::WrongType { field: "batch", .. })
    ));
    assert!(matches!(
        decode_vllm_batch(&encode(&Value::Array(vec![Value::F64(1.0)]))),
        Err(VllmDecodeError::MissingField { field: "events" })
    ));
    assert!(matches!(
        decode_vllm_batch(&encode(&Value::Array(vec![s("t"), Value::Array(vec![])]))),
        Err(VllmDecodeError::WrongType { field: "ts", .. })
    ));
    assert!(matches!(
        decode_vllm_batch(&encode(&Value::Array(vec![
            Value::F64(1.0),
            Value::Array(vec![]),
            s("r")
        ]))),
        Err(VllmDecodeError::WrongType {
            field: "data_parallel_rank",
            ..
        })
    ));
}

#[test]
fn unknown_tags_are_errors_with_a_bounded_echo() {
    let long = "X".repeat(10_000);
    let err = decode_one(Value::Array(vec![s(&long)])).unwrap_err();
    let VllmDecodeError::UnknownTag { tag } = err else {
        panic!("{err:?}");
    };
    assert_eq!(tag.len(), 64);
    assert!(matches!(
        decode_one(map(vec![("type", s("BlockMoved"))])),
        Err(VllmDecodeError::UnknownTag { .. })
    ));
}

#[test]
fn hostile_lengths_and_nesting_do_not_blow_up() {
    // An array header claiming 4 billion elements, then nothing.
    assert!(decode_vllm_batch(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    // A bin header claiming 4 GiB.
    assert!(decode_vllm_batch(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
    // Deep nesting: 10 000 nested one-element arrays.
    let mut deep = vec![0x91; 10_000];
    deep.push(0xc0);
    assert!(matches!(
        decode_vllm_batch(&deep),
        Err(VllmDecodeError::Msgpack { .. })
    ));
}

#[test]
fn external_hash_display() {
    assert_eq!(ExternalHash::Int(-3).to_string(), "-3");
    assert_eq!(format!("{:?}", ExternalHash::from(vec![0, 255])), "0x00ff");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_vllm_batch(&bytes);
    }

    #[test]
    fn mutated_valid_payloads_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode(&batch(
            vec![legacy_stored(), Value::Array(vec![s("BlockRemoved"), ints(&[1, 2])])],
            Some(1),
        ));
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = decode_vllm_batch(&bytes);
    }
}
