//! [`VllmDecoder`]: a stream decoded into the allocations of the batches given back gives the
//! same batches as [`decode_vllm_batch`], whatever the earlier batches held.

use proptest::prelude::*;
use rmpv::Value;

use super::layouts::{arb_store, hash_value};
use super::*;

/// A removal of 32-byte hashes (the size whose boxes are reused) and integer ones.
fn arb_remove() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        prop_oneof![
            proptest::array::uniform32(any::<u8>()).prop_map(|b| ExternalHash::from(&b[..])),
            any::<u64>().prop_map(ExternalHash::from),
        ],
        0..40,
    )
    .prop_map(|hashes| {
        Value::Array(vec![
            s("BlockRemoved"),
            Value::Array(hashes.iter().map(hash_value).collect()),
        ])
    })
}

/// One batch's bytes: stores in either layout and removals, or bytes that are not a batch.
fn arb_batch() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(
            prop_oneof![
                arb_store().prop_map(|(_, positional, _)| positional),
                arb_store().prop_map(|(_, _, named)| named),
                arb_remove(),
            ],
            0..6,
        )
        .prop_map(|events| encode(&batch(events, Some(0)))),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_recycling_decoder_decodes_like_a_fresh_one(
        stream in proptest::collection::vec(arb_batch(), 1..12),
    ) {
        let mut decoder = VllmDecoder::new();
        for bytes in &stream {
            let reused = decoder.decode(bytes);
            prop_assert_eq!(&reused, &decode_vllm_batch(bytes));
            if let Ok(batch) = reused {
                decoder.recycle(batch);
            }
        }
    }
}

#[test]
fn recycled_hash_boxes_hold_the_new_bytes() {
    let removal = |byte: u8| {
        encode(&batch(
            vec![Value::Array(vec![
                s("BlockRemoved"),
                Value::Array(vec![Value::Binary(vec![byte; 32])]),
            ])],
            None,
        ))
    };
    let mut decoder = VllmDecoder::new();
    let first = decoder.decode(&removal(1)).unwrap();
    decoder.recycle(first);
    let second = decoder.decode(&removal(2)).unwrap();
    assert_eq!(
        second.events,
        vec![VllmEvent::BlockRemoved {
            block_hashes: vec![ExternalHash::from(&[2u8; 32][..])],
            medium: None,
            group_idx: None,
        }]
    );
}
