//! Both layouts and version skew: what each wire generation decodes to.

use proptest::prelude::*;
use rmpv::Value;

use super::*;

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
fn external_hash_display() {
    assert_eq!(ExternalHash::Int(-3).to_string(), "-3");
    assert_eq!(format!("{:?}", ExternalHash::from(vec![0, 255])), "0x00ff");
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
        event::parse_event(
            &mut Reader::new(&bad_utf8),
            3,
            &mut spares::Spares::default()
        ),
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

pub(super) fn hash_value(h: &ExternalHash) -> Value {
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
pub(super) fn arb_store() -> impl Strategy<Value = (VllmEvent, Value, Value)> {
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
