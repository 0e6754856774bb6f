//! Decoder tests (one file per topic below) and the helpers they share: msgpack values built
//! with rmpv, encoded as msgspec would.

use rmpv::Value;

use super::*;

mod extra_keys;
mod layouts;
mod reuse;
mod tolerance;

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
    let parsed = event::parse_event(&mut r, 3, &mut spares::Spares::default());
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
