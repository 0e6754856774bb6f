//! `extra_keys`: decoded in both layouts, typed as msgspec sent them, encoded canonically.

use rmpv::Value;

use super::*;

/// The extra keys `[None, ("mm-hash", b"\x01\x02", -3, 1.5, [1, "x"])]` and what they decode to.
pub(super) fn sample_extra_keys() -> (Value, Vec<Option<Vec<ExtraKey>>>) {
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
