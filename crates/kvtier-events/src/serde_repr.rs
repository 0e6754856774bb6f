//! Serde representations of the wire's scalar types, one per format family.
//!
//! - Human-readable formats (JSON): an instance id and a sequence hash are 32 lower-case hex
//!   digits (a `u128` does not survive a JSON number in most consumers); media are strings.
//! - Binary formats (msgpack): an instance id is a 16-byte big-endian `bin`, and the hashes of a
//!   batch are one `bin` of 16 bytes each, big-endian, so a batch decodes with one length check.
//!
//! Decoding never panics: a wrong length or digit is a serde error.

use std::fmt;

use kvtier_core::{Medium, SequenceHash};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;

fn parse_hex_u128<E: de::Error>(s: &str) -> Result<u128, E> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 32 {
        return Err(E::custom(format_args!(
            "expected 1 to 32 hex digits, got {s:?}"
        )));
    }
    u128::from_str_radix(digits, 16).map_err(|_| E::custom(format_args!("not hex: {s:?}")))
}

fn u128_from_be<E: de::Error>(bytes: &[u8]) -> Result<u128, E> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| E::invalid_length(bytes.len(), &"16 bytes"))?;
    Ok(u128::from_be_bytes(arr))
}

/// A `u128` as hex (human-readable) or 16 big-endian bytes (binary).
struct U128Visitor;

impl<'de> Visitor<'de> for U128Visitor {
    type Value = u128;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 128-bit id as hex digits or 16 big-endian bytes")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
        parse_hex_u128(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<u128, E> {
        u128_from_be(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
        Ok(v as u128)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u128, A::Error> {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &"16 bytes"))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(17, &"16 bytes"));
        }
        Ok(u128::from_be_bytes(bytes))
    }
}

fn serialize_u128<S: Serializer>(v: u128, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&format!("{v:032x}"))
    } else {
        s.serialize_bytes(&v.to_be_bytes())
    }
}

fn deserialize_u128<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    if d.is_human_readable() {
        d.deserialize_str(U128Visitor)
    } else {
        d.deserialize_bytes(U128Visitor)
    }
}

pub(crate) mod instance {
    use super::*;
    use crate::InstanceId;

    pub(crate) fn serialize<S: Serializer>(v: &InstanceId, s: S) -> Result<S::Ok, S::Error> {
        serialize_u128(v.0, s)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<InstanceId, D::Error> {
        deserialize_u128(d).map(InstanceId)
    }
}

pub(crate) mod hashes {
    use serde::ser::SerializeSeq;

    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[SequenceHash], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for h in v {
                seq.serialize_element(&format!("{:032x}", h.as_u128()))?;
            }
            seq.end()
        } else {
            let mut bytes = Vec::with_capacity(v.len() * 16);
            for h in v {
                bytes.extend_from_slice(&h.as_u128().to_be_bytes());
            }
            s.serialize_bytes(&bytes)
        }
    }

    struct HashesVisitor;

    impl<'de> Visitor<'de> for HashesVisitor {
        type Value = Vec<SequenceHash>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of hex hashes or a byte string of 16-byte hashes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            if v.len() % 16 != 0 {
                return Err(E::invalid_length(v.len(), &"a multiple of 16 bytes"));
            }
            Ok(v.chunks_exact(16)
                .map(|c| {
                    let arr: [u8; 16] = c.try_into().expect("chunks_exact yields 16 bytes");
                    SequenceHash::from_u128(u128::from_be_bytes(arr))
                })
                .collect())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(s) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                out.push(SequenceHash::from_u128(parse_hex_u128(&s)?));
            }
            Ok(out)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<SequenceHash>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_seq(HashesVisitor)
        } else {
            d.deserialize_bytes(HashesVisitor)
        }
    }
}

pub(crate) mod medium {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Medium, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Medium, D::Error> {
        let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Medium::from_name(&name)
            .ok_or_else(|| de::Error::custom(format_args!("unknown medium {name:?}")))
    }
}

pub(crate) mod opt_medium {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<Medium>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(m) => s.serialize_some(m.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Medium>, D::Error> {
        let name = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
        name.map(|n| {
            Medium::from_name(&n)
                .ok_or_else(|| de::Error::custom(format_args!("unknown medium {n:?}")))
        })
        .transpose()
    }
}
