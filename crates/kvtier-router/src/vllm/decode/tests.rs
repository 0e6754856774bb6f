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

/// `event` decoded inside a batch (an event the decoder cannot use is `Skipped`).
fn decode_one(event: Value) -> Result<VllmEvent, VllmDecodeError> {
    decode_vllm_batch(&encode(&batch(vec![event], Some(0)))).map(|mut b| b.events.remove(0))
}

/// `event` decoded alone, with the precise error of an event the decoder cannot use; also
/// checks that inside a batch the same event decodes the same or is skipped for that reason.
fn parse_one(event: Value) -> Result<VllmEvent, VllmDecodeError> {
    let bytes = encode(&event);
    let mut r = Reader::new(&bytes);
    let parsed = event::parse_event(&mut r, 3);
    let in_batch = decode_one(event).expect("a well-formed event never fails its batch");
    match &parsed {
        Ok(e) => {
            assert_eq!(r.remaining(), 0, "the event was not read to its end");
            assert_eq!(&in_batch, e);
        }
        Err(e) => assert_eq!(
            in_batch,
            VllmEvent::Skipped {
                reason: SkipReason::of(e)
            }
        ),
    }
    parsed
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
    } = parse_one(long).unwrap()
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
    let removed = |m: &str| parse_one(Value::Array(vec![s("BlockRemoved"), ints(&[1]), s(m)]));
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
        parse_one(e)
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
        parse_one(map(vec![
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
        parse_one(map(vec![("type", s("BlockRemoved"))])),
        Err(VllmDecodeError::MissingField {
            field: "block_hashes"
        })
    ));
    assert!(matches!(
        parse_one(map(vec![("block_hashes", ints(&[1]))])),
        Err(VllmDecodeError::MissingField { field: "type" })
    ));
    assert!(matches!(
        parse_one(Value::Array(vec![Value::from(1)])),
        Err(VllmDecodeError::WrongType { field: "type", .. })
    ));
    assert!(matches!(
        parse_one(Value::from(1)),
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
    let err = parse_one(Value::Array(vec![s(&long)])).unwrap_err();
    let VllmDecodeError::UnknownTag { tag } = err else {
        panic!("{err:?}");
    };
    assert_eq!(tag.len(), 64);
    assert!(matches!(
        parse_one(map(vec![("type", s("BlockMoved"))])),
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

#[test]
fn one_bad_event_is_one_bad_event() {
    let unknown_tag = Value::Array(vec![s("BlockMoved"), ints(&[1])]);
    let unknown_medium = Value::Array(vec![s("BlockRemoved"), ints(&[2]), s("TAPE")]);
    let mut bad_size = legacy_stored();
    if let Value::Array(items) = &mut bad_size {
        items[4] = s("sixteen");
    }
    let not_an_event = Value::from(7);
    let map_unknown = map(vec![("type", s("FutureEvent")), ("x", Value::Nil)]);
    let removed = Value::Array(vec![s("BlockRemoved"), ints(&[9]), s("CPU")]);
    let b = decode_vllm_batch(&encode(&batch(
        vec![
            legacy_stored(),
            unknown_tag,
            unknown_medium,
            bad_size,
            not_an_event,
            map_unknown,
            removed,
            Value::Array(vec![s("AllBlocksCleared")]),
        ],
        Some(1),
    )))
    .unwrap();
    let skipped = |reason| VllmEvent::Skipped { reason };
    assert_eq!(b.events.len(), 8);
    assert!(matches!(b.events[0], VllmEvent::BlockStored { .. }));
    assert_eq!(b.events[1], skipped(SkipReason::UnknownTag));
    assert_eq!(b.events[2], skipped(SkipReason::UnknownMedium));
    assert_eq!(b.events[3], skipped(SkipReason::Malformed));
    assert_eq!(b.events[4], skipped(SkipReason::Malformed));
    assert_eq!(b.events[5], skipped(SkipReason::UnknownTag));
    assert_eq!(
        b.events[6],
        VllmEvent::BlockRemoved {
            block_hashes: vec![ExternalHash::Int(9)],
            medium: Some(Medium::Cpu),
            group_idx: None,
        }
    );
    assert_eq!(b.events[7], VllmEvent::AllBlocksCleared);
    assert_eq!(b.dp_rank, Some(1));
}

#[test]
fn a_bad_event_that_is_not_msgpack_fails_the_batch() {
    // The second event's token array claims 4 billion elements: no event boundary after it
    // can be trusted.
    let mut bytes = encode(&batch(vec![legacy_stored()], Some(0)));
    let events_at = bytes.iter().position(|&b| b == 0x91).unwrap();
    bytes[events_at] = 0x92;
    let rank = bytes.pop().unwrap();
    bytes.extend([0x94, 0xab]);
    bytes.extend(b"BlockStored");
    bytes.extend([0x90, 0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, rank]);
    assert!(matches!(
        decode_vllm_batch(&bytes),
        Err(VllmDecodeError::Msgpack { .. })
    ));
}

#[test]
fn skip_reasons_have_stable_names() {
    assert_eq!(SkipReason::UnknownTag.as_str(), "unknown_tag");
    assert_eq!(SkipReason::UnknownMedium.as_str(), "unknown_medium");
    assert_eq!(SkipReason::Malformed.as_str(), "malformed");
}

/// The extra keys `[None, ("mm-hash", b"\x01\x02", -3, 1.5, [1, "x"])]` and what they decode to.
fn sample_extra_keys() -> (Value, Vec<Option<Vec<ExtraKey>>>) {
    let nested = Value::Array(vec![Value::from(1), s("x")]);
    let value = Value::Array(vec![
        Value::Nil,
        Value::Array(vec![
            s("mm-hash"),
            Value::Binary(vec![1, 2]),
            Value::from(-3),
            Value::F64(1.5),
            nested.clone(),
        ]),
    ]);
    let decoded = vec![
        None,
        Some(vec![
            ExtraKey::Str("mm-hash".into()),
            ExtraKey::Bytes(Box::new([1, 2])),
            ExtraKey::Int(-3),
            ExtraKey::Other(encode(&Value::F64(1.5)).into_boxed_slice()),
            ExtraKey::Other(encode(&nested).into_boxed_slice()),
        ]),
    ];
    (value, decoded)
}

#[test]
fn extra_keys_in_both_layouts() {
    let (value, expected) = sample_extra_keys();
    let mut positional = legacy_stored();
    if let Value::Array(items) = &mut positional {
        items.extend([Value::Nil, value.clone()]);
    }
    let VllmEvent::BlockStored { extra_keys, .. } = parse_one(positional).unwrap() else {
        panic!("not a store");
    };
    assert_eq!(extra_keys.as_ref(), Some(&expected));

    let named = map(vec![
        ("type", s("BlockStored")),
        ("block_hashes", ints(&[1, 2])),
        ("token_ids", ints(&[1, 2, 3, 4, 5, 6, 7, 8])),
        ("block_size", Value::from(4)),
        ("extra_keys", value),
    ]);
    let VllmEvent::BlockStored { extra_keys, .. } = parse_one(named).unwrap() else {
        panic!("not a store");
    };
    assert_eq!(extra_keys, Some(expected));

    // Absent and nil are both `None`; a salt-only block is a one-string tuple.
    let VllmEvent::BlockStored { extra_keys, .. } = parse_one(legacy_stored()).unwrap() else {
        panic!("not a store");
    };
    assert_eq!(extra_keys, None);
    let salted = map(vec![
        ("type", s("BlockStored")),
        ("block_hashes", ints(&[1])),
        ("token_ids", ints(&[1, 2, 3, 4])),
        ("block_size", Value::from(4)),
        (
            "extra_keys",
            Value::Array(vec![Value::Array(vec![s("salt")])]),
        ),
    ]);
    let VllmEvent::BlockStored { extra_keys, .. } = parse_one(salted).unwrap() else {
        panic!("not a store");
    };
    assert_eq!(
        extra_keys,
        Some(vec![Some(vec![ExtraKey::Str("salt".into())])])
    );
}

#[test]
fn mistyped_extra_keys_are_lenient_only_in_the_positional_layout() {
    let mut positional = legacy_stored();
    if let Value::Array(items) = &mut positional {
        items.extend([Value::Nil, s("not keys")]);
    }
    assert!(matches!(
        parse_one(positional),
        Ok(VllmEvent::BlockStored {
            extra_keys: None,
            ..
        })
    ));
    let named = map(vec![
        ("type", s("BlockStored")),
        ("block_hashes", ints(&[1])),
        ("token_ids", ints(&[1, 2, 3, 4])),
        ("block_size", Value::from(4)),
        ("extra_keys", Value::Array(vec![s("not a tuple")])),
    ]);
    assert!(matches!(
        parse_one(named),
        Err(VllmDecodeError::WrongType {
            field: "extra_keys",
            ..
        })
    ));
}

#[test]
fn extra_key_encoding_is_canonical() {
    let enc = |keys: &[ExtraKey]| {
        let mut out = Vec::new();
        keys.iter().for_each(|k| k.encode_into(&mut out));
        out
    };
    assert_eq!(
        enc(&[ExtraKey::Bytes(Box::new([7, 8]))]),
        [&[2u8][..], &2u64.to_le_bytes(), &[7, 8]].concat()
    );
    assert_eq!(
        enc(&[ExtraKey::Int(1)]),
        [&[3u8][..], &16u64.to_le_bytes(), &1i128.to_le_bytes()].concat()
    );
    assert_eq!(
        enc(&[ExtraKey::Other(Box::new([0xc3]))]),
        [&[4u8][..], &1u64.to_le_bytes(), &[0xc3]].concat()
    );
    // Length prefixes and tags keep distinct tuples distinct.
    let s2 = |a: &str, b: &str| enc(&[ExtraKey::Str(a.into()), ExtraKey::Str(b.into())]);
    assert_ne!(s2("ab", "c"), s2("a", "bc"));
    assert_ne!(
        enc(&[ExtraKey::Str("x".into())]),
        enc(&[ExtraKey::Bytes(Box::new(*b"x"))])
    );
    // An integer is the same key whatever its msgpack width.
    let wide = [0xd3, 0, 0, 0, 0, 0, 0, 0, 5];
    let mut r = Reader::new(&wide);
    assert_eq!(r.head().unwrap(), Head::UInt(5));
}

#[test]
fn map_events_accept_the_tag_anywhere_and_ignore_other_types_fields() {
    let tag_last = map(vec![
        ("block_hashes", ints(&[4])),
        // Not a field of BlockRemoved: ignored, even mistyped.
        ("token_ids", s("ignored")),
        ("medium", s("disk")),
        ("type", s("BlockRemoved")),
    ]);
    assert_eq!(
        parse_one(tag_last).unwrap(),
        VllmEvent::BlockRemoved {
            block_hashes: vec![ExternalHash::Int(4)],
            medium: Some(Medium::Disk),
            group_idx: None,
        }
    );
    // Non-string keys are skipped.
    let odd_keys = Value::Map(vec![
        (Value::from(1), Value::Array(vec![Value::Nil])),
        (s("type"), s("AllBlocksCleared")),
    ]);
    assert_eq!(parse_one(odd_keys).unwrap(), VllmEvent::AllBlocksCleared);
    // A tag that is not UTF-8 is malformed, not unknown.
    let bad_utf8 = [0x91, 0xa2, 0xff, 0xfe];
    assert!(matches!(
        event::parse_event(&mut Reader::new(&bad_utf8), 3),
        Err(VllmDecodeError::WrongType { field: "type", .. })
    ));
    let in_batch = [&[0x92, 0x00, 0x91][..], &bad_utf8].concat();
    assert_eq!(
        decode_vllm_batch(&in_batch).unwrap().events,
        [VllmEvent::Skipped {
            reason: SkipReason::Malformed
        }]
    );
}

/// An integer or a byte string hash, as an engine would send it.
fn arb_hash() -> impl Strategy<Value = ExternalHash> {
    prop_oneof![
        any::<u64>().prop_map(ExternalHash::from),
        any::<i64>().prop_map(ExternalHash::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(ExternalHash::from),
    ]
}

fn hash_value(h: &ExternalHash) -> Value {
    match h {
        ExternalHash::Int(v) => match u64::try_from(*v) {
            Ok(u) => Value::from(u),
            Err(_) => Value::from(i64::try_from(*v).unwrap()),
        },
        ExternalHash::Bytes(b) => Value::Binary(b.to_vec()),
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> Value) -> Value {
    v.map_or(Value::Nil, f)
}

/// A store event and its encodings in both layouts (every field present).
fn arb_store() -> impl Strategy<Value = (VllmEvent, Value, Value)> {
    (
        proptest::collection::vec(arb_hash(), 0..5),
        proptest::option::of(arb_hash()),
        proptest::collection::vec(any::<u32>(), 0..40),
        (0usize..100_000, proptest::option::of(any::<i64>())),
        proptest::option::of("[a-z]{0,8}"),
        proptest::option::of(prop_oneof![Just(Medium::Gpu), Just(Medium::Cpu)]),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            |(hashes, parent, tokens, (bs, lora_id), lora_name, medium, group)| {
                let values = vec![
                    Value::Array(hashes.iter().map(hash_value).collect()),
                    opt(parent.as_ref(), hash_value),
                    Value::Array(tokens.iter().map(|&t| Value::from(t)).collect()),
                    Value::from(bs),
                    opt(lora_id, Value::from),
                    opt(medium, |m| s(m.as_str())),
                    opt(lora_name.as_deref(), s),
                    Value::Nil,
                    opt(group, Value::from),
                    s("full_attention"),
                ];
                let mut positional = vec![s("BlockStored")];
                positional.extend(values.iter().cloned());
                let names = [
                    "block_hashes",
                    "parent_block_hash",
                    "token_ids",
                    "block_size",
                    "lora_id",
                    "medium",
                    "lora_name",
                    "extra_keys",
                    "group_idx",
                    "kv_cache_spec_kind",
                ];
                let mut named = vec![("type", s("BlockStored"))];
                named.extend(names.into_iter().zip(values));
                let event = VllmEvent::BlockStored {
                    block_hashes: hashes,
                    parent,
                    token_ids: tokens,
                    block_size: bs,
                    lora_id,
                    lora_name,
                    medium,
                    group_idx: group,
                    cache_kind: Some("full_attention".into()),
                    extra_keys: None,
                };
                (event, Value::Array(positional), map(named))
            },
        )
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

    /// A payload the decoder accepts is well-formed msgpack (so a skipped event never hides a
    /// broken boundary), checked against rmpv as the reference reader.
    #[test]
    fn accepted_payloads_are_msgpack(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        map_layout in any::<bool>(),
    ) {
        let stored = if map_layout {
            map(vec![
                ("type", s("BlockStored")),
                ("block_hashes", ints(&[1, 2])),
                ("token_ids", ints(&[1, 2, 3, 4, 5, 6, 7, 8])),
                ("block_size", Value::from(4)),
                ("medium", s("GPU")),
                ("extra_keys", sample_extra_keys().0),
            ])
        } else {
            legacy_stored()
        };
        let mut bytes = encode(&batch(
            vec![stored, Value::Array(vec![s("BlockRemoved"), ints(&[1, 2])])],
            Some(1),
        ));
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let mut cursor = std::io::Cursor::new(&bytes[..]);
        let reference = rmpv::decode::read_value_with_max_depth(&mut cursor, 16)
            .is_ok_and(|_| cursor.position() as usize == bytes.len());
        if decode_vllm_batch(&bytes).is_ok() {
            prop_assert!(reference, "accepted a payload rmpv rejects: {bytes:x?}");
        }
    }

    #[test]
    fn generated_stores_decode_in_both_layouts(
        events in proptest::collection::vec(arb_store(), 0..6),
        rank in proptest::option::of(any::<i64>()),
    ) {
        let mut values = Vec::new();
        let mut expected = Vec::new();
        for (event, positional, named) in events {
            values.extend([positional, named]);
            expected.extend([event.clone(), event]);
        }
        let b = decode_vllm_batch(&encode(&batch(values, rank))).unwrap();
        prop_assert_eq!(b.events, expected);
        prop_assert_eq!(b.dp_rank, rank);
    }
}
