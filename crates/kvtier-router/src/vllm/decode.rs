//! Decoding of the msgpack payload of one vLLM / SGLang KV-event batch into [`VllmBatch`].
//!
//! Owns only the bytes-to-values step: no hashing, no sequence numbers, no sockets. Decoding
//! never panics and never allocates more than the input justifies (msgpack lengths are not
//! trusted for pre-allocation, nesting is capped): any malformed input is a
//! [`VllmDecodeError`].
//!
//! # Layouts accepted
//!
//! The engines encode their msgspec structs with `tag=True` (the tag is the class name) and
//! `omit_defaults=True`. Two shapes exist in the field, and both are accepted, also mixed in one
//! batch:
//!
//! ```text
//! batch  = [ts, events, data_parallel_rank?]            (array_like EventBatch; SGLang has no rank
//!        | {"ts":…, "events":…, "data_parallel_rank":…}   or calls it attn_dp_rank)
//! event  = ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
//!           lora_id, medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind, …]
//!        | ["BlockRemoved", block_hashes, medium, group_idx, …]
//!        | ["AllBlocksCleared"]                          (legacy positional events)
//!        | {"type": "BlockStored", "block_hashes": …, …}  (vLLM ≥ PR #42892: tagged maps)
//! hash   = int (u64 or negative i64) | bin (newer vLLM: bytes)
//! ```
//!
//! Positional events tolerate version skew: missing trailing fields are `None`, extra trailing
//! fields are ignored, and fields after `medium` whose type does not match (SGLang puts a
//! metadata map where vLLM has `lora_name`) are treated as absent. Map events ignore unknown
//! keys. Fields that matter for placement (`block_hashes`, `token_ids`, `block_size`) are
//! checked strictly.

use std::fmt;
use std::io::Cursor;

use kvtier_core::Medium;
use rmpv::Value;

/// The deepest msgpack nesting accepted (a batch needs 5 levels; extra keys a few more).
const MAX_DEPTH: usize = 24;
/// The longest unknown tag or medium name kept in an error (longer ones are cut).
const MAX_ECHO: usize = 64;

/// A block hash as the engine published it.
///
/// Older engines publish 64-bit integers (either signed or unsigned on the wire, kept here as
/// their exact value), newer vLLM publishes bytes. Equal hashes compare equal whatever their
/// msgpack width; an integer never equals a byte string.
///
/// # Examples
///
/// ```
/// use kvtier_router::ExternalHash;
///
/// assert_eq!(ExternalHash::from(7u64), ExternalHash::Int(7));
/// assert_ne!(ExternalHash::from(-1i64), ExternalHash::from(u64::MAX));
/// assert_eq!(ExternalHash::from(&b"\x01\x02"[..]).to_string(), "0x0102");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExternalHash {
    /// An integer hash: any value of `i64` or `u64`.
    Int(i128),
    /// A byte-string hash (for example vLLM's 32-byte SHA-256 block hashes).
    Bytes(Box<[u8]>),
}

impl From<u64> for ExternalHash {
    fn from(value: u64) -> Self {
        Self::Int(i128::from(value))
    }
}

impl From<i64> for ExternalHash {
    fn from(value: i64) -> Self {
        Self::Int(i128::from(value))
    }
}

impl From<&[u8]> for ExternalHash {
    fn from(value: &[u8]) -> Self {
        Self::Bytes(value.into())
    }
}

impl From<Vec<u8>> for ExternalHash {
    fn from(value: Vec<u8>) -> Self {
        Self::Bytes(value.into_boxed_slice())
    }
}

impl fmt::Display for ExternalHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Bytes(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

impl fmt::Debug for ExternalHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One decoded event batch: what one publish call of the engine carried.
#[derive(Clone, Debug, PartialEq)]
pub struct VllmBatch {
    /// The engine's wall-clock timestamp of the batch, in seconds since the Unix epoch.
    pub ts: f64,
    /// The events, in the order the engine produced them.
    pub events: Vec<VllmEvent>,
    /// The data-parallel rank that published the batch (`None` for engines that do not send it).
    pub dp_rank: Option<i64>,
}

/// One KV-cache event of an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VllmEvent {
    /// Full blocks were cached; they form a chain, each the child of the previous one.
    BlockStored {
        /// The blocks' hashes, parent first.
        block_hashes: Vec<ExternalHash>,
        /// The hash of the parent of the first block (`None`: the first block is a root).
        parent: Option<ExternalHash>,
        /// The tokens of all the blocks, `block_size` per block, in order.
        token_ids: Vec<u32>,
        /// Tokens per block (0 if the engine sent 0; the converter then uses its default).
        block_size: usize,
        /// The deprecated numeric LoRA id, if any.
        lora_id: Option<i64>,
        /// The LoRA adapter name, if any (vLLM's hash key since `lora_name` was added).
        lora_name: Option<String>,
        /// Where the blocks are (`None`: the engine did not say; GPU by convention).
        medium: Option<Medium>,
        /// The KV-cache group of hybrid models (`None` before vLLM added groups).
        group_idx: Option<i64>,
        /// The group's cache kind, for example `full_attention` or `sliding_window`.
        cache_kind: Option<String>,
        /// vLLM's per-block `extra_keys` (one entry per block hash, `None` = no keys for that
        /// block); `None` when the event has no `extra_keys` field or it is nil.
        extra_keys: Option<Vec<Option<Vec<ExtraKey>>>>,
    },
    /// Blocks left the cache.
    BlockRemoved {
        /// The hashes of the removed blocks, in the engine's order.
        block_hashes: Vec<ExternalHash>,
        /// Where they were (`None`: GPU by convention).
        medium: Option<Medium>,
        /// The KV-cache group of hybrid models.
        group_idx: Option<i64>,
    },
    /// Every cached block of the engine is gone (prefix-cache reset).
    AllBlocksCleared,
    /// An event the decoder could not understand; the rest of its batch is still decoded.
    Skipped {
        /// Why it was skipped.
        reason: SkipReason,
    },
}

/// Why an event of a batch was skipped (see [`VllmEvent::Skipped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its tag names no event type the decoder knows (a newer engine's event).
    UnknownTag,
    /// It names a medium kvtier does not know.
    UnknownMedium,
    /// Any other problem: a missing or mistyped field, a number out of range.
    Malformed,
}

/// One element of a block's extra-keys tuple, as msgspec encoded it.
///
/// vLLM's elements are strings (LoRA name, `cache_salt`, older multimodal identifiers),
/// byte strings (prompt-embedding digests) and, in current versions, a `(identifier, offset)`
/// tuple per multimodal item, which msgpack carries as an array: such values are kept as
/// their msgpack bytes ([`ExtraKey::Other`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExtraKey {
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Box<[u8]>),
    /// An integer (any value of `i64` or `u64`).
    Int(i128),
    /// The raw msgpack bytes of any other value (float, bool, nil, array, map), in the
    /// smallest encoding of each item (as msgspec writes them).
    Other(Box<[u8]>),
}

impl ExtraKey {
    /// Appends the canonical bytes used for hashing: a kind tag, then
    ///
    /// ```text
    /// Str    0x01 || LE32(len) || UTF-8 bytes
    /// Bytes  0x02 || LE32(len) || bytes
    /// Int    0x03 || LE128(value)
    /// Other  0x04 || LE32(len) || msgpack bytes
    /// ```
    ///
    /// Tags and lengths keep different kinds and boundaries apart (`"ab","c"` is not
    /// `"a","bc"`; the string `"1"` is not the integer 1).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut tagged = |tag: u8, bytes: &[u8]| {
            out.push(tag);
            // Lengths are bounded by the msgpack payload, far below 4 GiB in practice;
            // saturating keeps the encoding total anyway.
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match self {
            Self::Str(s) => tagged(0x01, s.as_bytes()),
            Self::Bytes(b) => tagged(0x02, b),
            Self::Int(i) => {
                out.push(0x03);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Self::Other(raw) => tagged(0x04, raw),
        }
    }
}

/// Why a payload is not a valid event batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VllmDecodeError {
    /// The bytes are not one well-formed msgpack value (truncated, bad marker, too deep).
    #[error("not a msgpack value: {reason}")]
    Msgpack {
        /// What the msgpack reader reported.
        reason: String,
    },
    /// Bytes follow the batch value.
    #[error("{count} unexpected bytes after the event batch")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong msgpack type.
    #[error("field `{field}` is not {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What was expected there.
        expected: &'static str,
    },
    /// A number does not fit the field (a negative block size, a token id above `u32::MAX`).
    #[error("field `{field}` is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
    },
    /// An event's tag names no known event type.
    #[error("unknown event tag {tag:?}")]
    UnknownTag {
        /// The tag (cut to 64 characters).
        tag: String,
    },
    /// A medium name that kvtier does not know.
    #[error("unknown medium {name:?}")]
    UnknownMedium {
        /// The name (cut to 64 characters).
        name: String,
    },
}

/// Decodes the msgpack payload of one batch (the third frame of a PUB message, or the second of
/// a replay reply).
///
/// # Errors
///
/// A [`VllmDecodeError`] for anything that is not a batch in one of the accepted layouts (see
/// the module docs). Never panics.
///
/// # Examples
///
/// ```
/// use kvtier_router::{ExternalHash, VllmEvent, decode_vllm_batch};
///
/// // [1.5, [["BlockRemoved", [7], "GPU"]], 0] as msgpack
/// let bytes = [
///     0x93, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x91, 0x93, 0xac, b'B', b'l', b'o', b'c',
///     b'k', b'R', b'e', b'm', b'o', b'v', b'e', b'd', 0x91, 0x07, 0xa3, b'G', b'P', b'U', 0x00,
/// ];
/// let batch = decode_vllm_batch(&bytes)?;
/// assert_eq!(batch.ts, 1.5);
/// assert_eq!(batch.dp_rank, Some(0));
/// assert!(matches!(
///     &batch.events[0],
///     VllmEvent::BlockRemoved { block_hashes, .. } if block_hashes == &[ExternalHash::Int(7)]
/// ));
/// assert!(decode_vllm_batch(&bytes[..10]).is_err());
/// # Ok::<(), kvtier_router::VllmDecodeError>(())
/// ```
pub fn decode_vllm_batch(bytes: &[u8]) -> Result<VllmBatch, VllmDecodeError> {
    let mut cursor = Cursor::new(bytes);
    let value = rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH).map_err(|e| {
        VllmDecodeError::Msgpack {
            reason: e.to_string(),
        }
    })?;
    // The cursor never moves past the end of `bytes`, so the position fits a usize.
    let used = usize::try_from(cursor.position()).unwrap_or(bytes.len());
    if used < bytes.len() {
        return Err(VllmDecodeError::TrailingBytes {
            count: bytes.len() - used,
        });
    }
    batch_from_value(value)
}

fn batch_from_value(value: Value) -> Result<VllmBatch, VllmDecodeError> {
    let (ts, events, rank) = match value {
        Value::Array(items) => {
            let mut items = items.into_iter();
            (items.next(), items.next(), items.next())
        }
        Value::Map(entries) => {
            let (mut ts, mut events, mut rank) = (None, None, None);
            for (key, value) in entries {
                match key.as_str() {
                    Some("ts") => ts = Some(value),
                    Some("events") => events = Some(value),
                    Some("data_parallel_rank" | "attn_dp_rank") => rank = Some(value),
                    _ => {}
                }
            }
            (ts, events, rank)
        }
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: "batch",
                expected: "an array or a map",
            });
        }
    };
    let ts = match ts.ok_or(VllmDecodeError::MissingField { field: "ts" })? {
        Value::F64(v) => v,
        Value::F32(v) => f64::from(v),
        Value::Integer(i) => i.as_f64().unwrap_or(f64::NAN),
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: "ts",
                expected: "a number",
            });
        }
    };
    let events = match events.ok_or(VllmDecodeError::MissingField { field: "events" })? {
        Value::Array(events) => events
            .into_iter()
            .map(|event| {
                event_from_value(event).unwrap_or_else(|e| VllmEvent::Skipped {
                    reason: match e {
                        VllmDecodeError::UnknownTag { .. } => SkipReason::UnknownTag,
                        VllmDecodeError::UnknownMedium { .. } => SkipReason::UnknownMedium,
                        _ => SkipReason::Malformed,
                    },
                })
            })
            .collect(),
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: "events",
                expected: "an array",
            });
        }
    };
    let dp_rank = opt_int(rank, "data_parallel_rank")?;
    Ok(VllmBatch {
        ts,
        events,
        dp_rank,
    })
}

/// The fields of one event, by name, whichever layout carried them.
struct Fields {
    tag: String,
    /// Positional layout: the values after the tag. Map layout: empty.
    positional: Vec<Value>,
    /// Map layout: the `(name, value)` pairs other than the tag.
    named: Vec<(Value, Value)>,
}

/// Positions (after the tag) of the fields of the legacy array layout.
const STORED_FIELDS: [&str; 10] = [
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
const REMOVED_FIELDS: [&str; 3] = ["block_hashes", "medium", "group_idx"];
/// Positional fields after this index are optional extensions: a type mismatch there means
/// another engine's extension, not a malformed event.
const STRICT_POSITIONS_STORED: usize = 6;
const STRICT_POSITIONS_REMOVED: usize = 2;

impl Fields {
    fn parse(value: Value) -> Result<Self, VllmDecodeError> {
        match value {
            Value::Array(items) => {
                let mut items = items.into_iter();
                let tag = match items.next() {
                    Some(Value::String(s)) => s.into_str().ok_or(VllmDecodeError::WrongType {
                        field: "type",
                        expected: "UTF-8",
                    })?,
                    Some(_) => {
                        return Err(VllmDecodeError::WrongType {
                            field: "type",
                            expected: "a string tag",
                        });
                    }
                    None => return Err(VllmDecodeError::MissingField { field: "type" }),
                };
                Ok(Self {
                    tag,
                    positional: items.collect(),
                    named: Vec::new(),
                })
            }
            Value::Map(entries) => {
                let mut tag = None;
                let mut named = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    if key.as_str() == Some("type") {
                        tag = Some(match value {
                            Value::String(s) => s.into_str().ok_or(VllmDecodeError::WrongType {
                                field: "type",
                                expected: "UTF-8",
                            })?,
                            _ => {
                                return Err(VllmDecodeError::WrongType {
                                    field: "type",
                                    expected: "a string tag",
                                });
                            }
                        });
                    } else {
                        named.push((key, value));
                    }
                }
                Ok(Self {
                    tag: tag.ok_or(VllmDecodeError::MissingField { field: "type" })?,
                    positional: Vec::new(),
                    named,
                })
            }
            _ => Err(VllmDecodeError::WrongType {
                field: "event",
                expected: "an array or a map",
            }),
        }
    }

    /// Takes field `name` out (positional layouts look it up through `layout`).
    fn take(&mut self, layout: &[&str], name: &str) -> Option<Value> {
        if self.positional.is_empty() {
            let at = self
                .named
                .iter()
                .position(|(k, _)| k.as_str() == Some(name))?;
            return Some(std::mem::replace(&mut self.named[at].1, Value::Nil));
        }
        let at = layout.iter().position(|f| *f == name)?;
        self.positional
            .get_mut(at)
            .map(|v| std::mem::replace(v, Value::Nil))
    }

    /// Whether `name` is an optional extension in the positional layout (tolerant typing).
    fn lenient(&self, layout: &[&str], strict: usize, name: &str) -> bool {
        !self.positional.is_empty() && layout.iter().position(|f| *f == name) >= Some(strict)
    }
}

pub(super) fn event_from_value(value: Value) -> Result<VllmEvent, VllmDecodeError> {
    let mut f = Fields::parse(value)?;
    match f.tag.as_str() {
        "BlockStored" => {
            let l = &STORED_FIELDS;
            let block_hashes = hashes(f.take(l, "block_hashes"), "block_hashes")?;
            let parent = match f.take(l, "parent_block_hash") {
                None | Some(Value::Nil) => None,
                Some(v) => Some(hash(v, "parent_block_hash")?),
            };
            let token_ids = tokens(f.take(l, "token_ids"))?;
            let block_size = match f.take(l, "block_size") {
                None | Some(Value::Nil) => {
                    return Err(VllmDecodeError::MissingField {
                        field: "block_size",
                    });
                }
                Some(Value::Integer(i)) => i.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or(
                    VllmDecodeError::OutOfRange {
                        field: "block_size",
                    },
                )?,
                Some(_) => {
                    return Err(VllmDecodeError::WrongType {
                        field: "block_size",
                        expected: "an integer",
                    });
                }
            };
            let lora_id = opt_int(f.take(l, "lora_id"), "lora_id")?;
            let medium = medium(f.take(l, "medium"))?;
            let lenient = |f: &Fields, name| f.lenient(l, STRICT_POSITIONS_STORED, name);
            let lora_name = optional(
                lenient(&f, "lora_name"),
                opt_str(f.take(l, "lora_name"), "lora_name"),
            )?;
            let extra_keys = optional(
                lenient(&f, "extra_keys"),
                extra_keys(f.take(l, "extra_keys")),
            )?;
            let group_idx = optional(
                lenient(&f, "group_idx"),
                opt_int(f.take(l, "group_idx"), "group_idx"),
            )?;
            let cache_kind = optional(
                lenient(&f, "kv_cache_spec_kind"),
                opt_str(f.take(l, "kv_cache_spec_kind"), "kv_cache_spec_kind"),
            )?;
            Ok(VllmEvent::BlockStored {
                block_hashes,
                parent,
                token_ids,
                block_size,
                lora_id,
                lora_name,
                medium,
                group_idx,
                cache_kind,
                extra_keys,
            })
        }
        "BlockRemoved" => {
            let l = &REMOVED_FIELDS;
            let block_hashes = hashes(f.take(l, "block_hashes"), "block_hashes")?;
            let medium = medium(f.take(l, "medium"))?;
            let group_idx = optional(
                f.lenient(l, STRICT_POSITIONS_REMOVED, "group_idx"),
                opt_int(f.take(l, "group_idx"), "group_idx"),
            )?;
            Ok(VllmEvent::BlockRemoved {
                block_hashes,
                medium,
                group_idx,
            })
        }
        "AllBlocksCleared" => Ok(VllmEvent::AllBlocksCleared),
        other => Err(VllmDecodeError::UnknownTag { tag: echo(other) }),
    }
}

/// A lenient field's type error becomes `None`; a strict one stays an error.
fn optional<T>(
    lenient: bool,
    result: Result<Option<T>, VllmDecodeError>,
) -> Result<Option<T>, VllmDecodeError> {
    match result {
        Err(VllmDecodeError::WrongType { .. } | VllmDecodeError::OutOfRange { .. }) if lenient => {
            Ok(None)
        }
        other => other,
    }
}

fn hash(value: Value, field: &'static str) -> Result<ExternalHash, VllmDecodeError> {
    match value {
        Value::Integer(i) => {
            if let Some(v) = i.as_u64() {
                Ok(ExternalHash::from(v))
            } else if let Some(v) = i.as_i64() {
                Ok(ExternalHash::from(v))
            } else {
                Err(VllmDecodeError::OutOfRange { field })
            }
        }
        Value::Binary(b) => Ok(ExternalHash::from(b)),
        _ => Err(VllmDecodeError::WrongType {
            field,
            expected: "an integer or bytes",
        }),
    }
}

fn hashes(value: Option<Value>, field: &'static str) -> Result<Vec<ExternalHash>, VllmDecodeError> {
    match value {
        None | Some(Value::Nil) => Err(VllmDecodeError::MissingField { field }),
        Some(Value::Array(items)) => items.into_iter().map(|v| hash(v, field)).collect(),
        Some(_) => Err(VllmDecodeError::WrongType {
            field,
            expected: "an array of hashes",
        }),
    }
}

fn tokens(value: Option<Value>) -> Result<Vec<u32>, VllmDecodeError> {
    const FIELD: &str = "token_ids";
    match value {
        None | Some(Value::Nil) => Err(VllmDecodeError::MissingField { field: FIELD }),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::Integer(i) => i
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or(VllmDecodeError::OutOfRange { field: FIELD }),
                _ => Err(VllmDecodeError::WrongType {
                    field: FIELD,
                    expected: "an array of integers",
                }),
            })
            .collect(),
        Some(_) => Err(VllmDecodeError::WrongType {
            field: FIELD,
            expected: "an array of integers",
        }),
    }
}

/// `extra_keys`: nil, or an array with one entry per block, each nil or an array of keys.
fn extra_keys(value: Option<Value>) -> Result<Option<Vec<Option<Vec<ExtraKey>>>>, VllmDecodeError> {
    const FIELD: &str = "extra_keys";
    let wrong = VllmDecodeError::WrongType {
        field: FIELD,
        expected: "an array of key arrays or nils",
    };
    let entries = match value {
        None | Some(Value::Nil) => return Ok(None),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(wrong),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        out.push(match entry {
            Value::Nil => None,
            Value::Array(keys) => Some(keys.into_iter().map(extra_key).collect()),
            _ => return Err(wrong),
        });
    }
    Ok(Some(out))
}

fn extra_key(value: Value) -> ExtraKey {
    match value {
        Value::String(s) if s.is_str() => ExtraKey::Str(s.into_str().unwrap_or_default()),
        Value::Binary(b) => ExtraKey::Bytes(b.into_boxed_slice()),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(v), _) => ExtraKey::Int(i128::from(v)),
            (None, Some(v)) => ExtraKey::Int(i128::from(v)),
            // rmpv integers are always an i64 or a u64.
            (None, None) => ExtraKey::Int(0),
        },
        other => {
            let mut raw = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = rmpv::encode::write_value(&mut raw, &other);
            ExtraKey::Other(raw.into_boxed_slice())
        }
    }
}

fn opt_int(value: Option<Value>, field: &'static str) -> Result<Option<i64>, VllmDecodeError> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Integer(i)) => i
            .as_i64()
            .map(Some)
            .ok_or(VllmDecodeError::OutOfRange { field }),
        Some(_) => Err(VllmDecodeError::WrongType {
            field,
            expected: "an integer or nil",
        }),
    }
}

fn opt_str(value: Option<Value>, field: &'static str) -> Result<Option<String>, VllmDecodeError> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::String(s)) => s.into_str().map(Some).ok_or(VllmDecodeError::WrongType {
            field,
            expected: "UTF-8",
        }),
        Some(_) => Err(VllmDecodeError::WrongType {
            field,
            expected: "a string or nil",
        }),
    }
}

/// Parses a medium name: kvtier's names in any case, plus the engines' aliases.
fn medium(value: Option<Value>) -> Result<Option<Medium>, VllmDecodeError> {
    let Some(name) = opt_str(value, "medium")? else {
        return Ok(None);
    };
    if let Some(m) = Medium::from_name(&name) {
        return Ok(Some(m));
    }
    // vLLM's offloading connectors name their tiers CPU and STORAGE (vllm/distributed/kv_events.py).
    if ["STORAGE", "SSD", "LOCAL_DISK"]
        .iter()
        .any(|alias| alias.eq_ignore_ascii_case(&name))
    {
        return Ok(Some(Medium::Disk));
    }
    Err(VllmDecodeError::UnknownMedium { name: echo(&name) })
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

#[cfg(test)]
mod tests;
