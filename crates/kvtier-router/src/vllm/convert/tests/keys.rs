//! `extra_keys` folding: the converter's hashes equal [`crate::vllm_request_hashes`] for salted,
//! multimodal and LoRA chains, and differ from unsalted ones.

use kvtier_core::Medium;
use kvtier_events::InstanceId;
use rmpv::Value;

use super::*;
use crate::vllm::keys::vllm_request_hashes;
use crate::{ExtraKey, MmPlaceholder};

fn str_key(s: &str) -> ExtraKey {
    ExtraKey::Str(s.into())
}

/// vLLM's multimodal key `(identifier, offset - block start)` as msgspec encodes the tuple.
fn mm_key(identifier: &str, rel: i64) -> ExtraKey {
    let mut raw = Vec::new();
    rmpv::encode::write_value(
        &mut raw,
        &Value::Array(vec![Value::from(identifier), Value::from(rel)]),
    )
    .unwrap();
    ExtraKey::Other(raw.into_boxed_slice())
}

fn keyed(
    hashes: &[i128],
    parent: Option<i128>,
    tokens: &[u32],
    lora: Option<&str>,
    keys: Vec<Option<Vec<ExtraKey>>>,
) -> VllmEvent {
    let mut e = stored(hashes, parent, tokens);
    if let VllmEvent::BlockStored {
        lora_name,
        extra_keys,
        ..
    } = &mut e
    {
        *lora_name = lora.map(str::to_owned);
        *extra_keys = Some(keys);
    }
    e
}

fn created(out: &[EventMessage]) -> Vec<SequenceHash> {
    out.iter().flat_map(|m| batch_of(m).2).collect()
}

#[test]
fn salted_chain_matches_only_salted_queries() {
    let t = tokens(1, 3);
    let mut conv = VllmConverter::new(InstanceId(1), config());
    // The salt is on block 0 only; the chain carries it to the later blocks.
    let out = apply_all(
        &mut conv,
        vec![
            keyed(
                &[1, 2],
                None,
                &t[..2 * BS],
                None,
                vec![Some(vec![str_key("tenant")]), None],
            ),
            keyed(&[3], Some(2), &t[2 * BS..], None, vec![None]),
        ],
    );
    let salted = vllm_request_hashes(&config(), BS, None, Some("tenant"), &[], &t).unwrap();
    let unsalted = vllm_request_hashes(&config(), BS, None, None, &[], &t).unwrap();
    let other = vllm_request_hashes(&config(), BS, None, Some("other"), &[], &t).unwrap();
    assert_eq!(created(&out), salted);
    assert!(salted.iter().zip(&unsalted).all(|(s, u)| s != u));
    assert!(salted.iter().zip(&other).all(|(s, o)| s != o));
    assert_eq!(unsalted, hasher(None).sequence_hashes(&t));
}

#[test]
fn multimodal_chain_matches_the_request_hashes() {
    let t = tokens(2, 3);
    // An image on tokens 2..7 overlaps blocks 0 and 1; a second one on 9..10 block 2.
    let mm = [
        MmPlaceholder {
            identifier: "img-a".into(),
            offset: 2,
            length: 5,
        },
        MmPlaceholder {
            identifier: "img-b".into(),
            offset: 9,
            length: 1,
        },
    ];
    let keys = vec![
        Some(vec![mm_key("img-a", 2)]),
        Some(vec![mm_key("img-a", -2)]),
        Some(vec![mm_key("img-b", 1)]),
    ];
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let out = apply(&mut conv, keyed(&[1, 2, 3], None, &t, None, keys));
    let expected = vllm_request_hashes(&config(), BS, None, None, &mm, &t).unwrap();
    assert_eq!(created(&out), expected);
    let plain = hasher(None).sequence_hashes(&t);
    assert!(expected.iter().zip(&plain).all(|(e, p)| e != p));
    // Reordered items are the same request.
    let swapped = [mm[1].clone(), mm[0].clone()];
    assert_eq!(
        vllm_request_hashes(&config(), BS, None, None, &swapped, &t).unwrap(),
        expected
    );
}

#[test]
fn lora_chain_with_salt_binds_the_lora_once() {
    let t = tokens(3, 2);
    let keys = vec![
        Some(vec![str_key("sql"), str_key("s1")]),
        Some(vec![str_key("sql")]),
    ];
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let out = apply(&mut conv, keyed(&[1, 2], None, &t, Some("sql"), keys));
    let expected = vllm_request_hashes(&config(), BS, Some("sql"), Some("s1"), &[], &t).unwrap();
    assert_eq!(created(&out), expected);
    // The LoRA alone (no salt) is exactly the namespace-bound hash: not folded twice.
    let mut conv = VllmConverter::new(InstanceId(1), config());
    let lora_only = vec![Some(vec![str_key("sql")]), Some(vec![str_key("sql")])];
    let out = apply(&mut conv, keyed(&[1, 2], None, &t, Some("sql"), lora_only));
    assert_eq!(created(&out), hasher(Some("sql")).sequence_hashes(&t));
    assert_eq!(
        vllm_request_hashes(&config(), BS, Some("sql"), None, &[], &t).unwrap(),
        hasher(Some("sql")).sequence_hashes(&t)
    );
    assert_eq!(batch_of(&out[0]).1, Medium::Gpu);
}
