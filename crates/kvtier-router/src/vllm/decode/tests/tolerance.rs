//! Bad input: one bad event is skipped with its reason, a batch that is not msgpack is an
//! error, and nothing panics or allocates what the input does not hold.

use proptest::prelude::*;
use rmpv::Value;

use super::extra_keys::sample_extra_keys;
use super::*;

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
        // rmpv counts nesting its own way (a map nested in an array inside a map key already
        // passes 16 at 7 levels): its limit must only stop runaway input, not judge depth.
        let reference = rmpv::decode::read_value_with_max_depth(&mut cursor, 1024)
            .is_ok_and(|_| cursor.position() as usize == bytes.len());
        if decode_vllm_batch(&bytes).is_ok() {
            prop_assert!(reference, "accepted a payload rmpv rejects: {bytes:x?}");
        }
    }
}

/// `legacy_stored` with these token ids.
fn stored_with_tokens(tokens: Value) -> Value {
    let mut e = legacy_stored();
    if let Value::Array(items) = &mut e {
        items[3] = tokens;
    }
    e
}

fn token_ids(event: &VllmEvent) -> &[u32] {
    match event {
        VllmEvent::BlockStored { token_ids, .. } => token_ids,
        other => panic!("not a store: {other:?}"),
    }
}

#[test]
fn tokens_in_any_integer_form_decode_and_bad_ones_fail_mid_array() {
    // A token written in a wider form than msgspec would (u64 marker 0xcf) after tokens in the
    // fast forms: the slow path takes over where the fast one stopped.
    let mut bytes = encode(&stored_with_tokens(ints(&[7, 200, 70_000, 0x7f7f_7f7f, 9])));
    let at = bytes
        .windows(5)
        .position(|w| w == [0xce, 0x7f, 0x7f, 0x7f, 0x7f])
        .unwrap();
    bytes.splice(at..at + 5, [0xcf, 0, 0, 0, 0, 0x7f, 0x7f, 0x7f, 0x7f]);
    let mut r = Reader::new(&bytes);
    let event = event::parse_event(&mut r, 3, &mut spares::Spares::default()).unwrap();
    assert_eq!(r.remaining(), 0);
    assert_eq!(token_ids(&event), [7, 200, 70_000, 0x7f7f_7f7f, 9]);
    // A negative token or a float after good ones is still an error, not a short array.
    let bad = |v: Value| {
        let mut items: Vec<Value> = [1u64, 300, 5].iter().map(|&t| Value::from(t)).collect();
        items.push(v);
        parse_one(stored_with_tokens(Value::Array(items)))
    };
    assert!(matches!(
        bad(Value::from(-3)),
        Err(VllmDecodeError::OutOfRange { field: "token_ids" })
    ));
    assert!(matches!(
        bad(Value::F64(1.0)),
        Err(VllmDecodeError::WrongType {
            field: "token_ids",
            ..
        })
    ));
}

proptest! {
    /// Token ids of every width decode to their values, whatever mix of forms they take.
    #[test]
    fn tokens_of_every_width_round_trip(
        tokens in proptest::collection::vec(
            prop_oneof![0u32..0x80, 0x80u32..0x100, 0x100u32..0x1_0000, any::<u32>()],
            0..80,
        ),
    ) {
        let wide: Vec<u64> = tokens.iter().map(|&t| u64::from(t)).collect();
        let event = parse_one(stored_with_tokens(ints(&wide))).unwrap();
        prop_assert_eq!(token_ids(&event), &tokens[..]);
    }
}
