//! Decoding of the msgpack payload of one vLLM / SGLang KV-event batch into [`VllmBatch`].
//!
//! Owns only the bytes-to-values step: no hashing, no sequence numbers, no sockets. The
//! decoder streams over the byte slice (`decode/reader.rs` reads one msgpack head at a time,
//! `decode/event.rs` types each field as it passes), so the only allocations are the decoded
//! values. It never panics and never allocates more than the input justifies (msgpack lengths
//! are capped by the bytes that remain, nesting by 24 levels).
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
//! extra_keys = nil | [nil | [value, …], …]               (one entry per block)
//! ```
//!
//! Positional events tolerate version skew: missing trailing fields are `None`, extra trailing
//! fields are ignored, and fields after `medium` whose type does not match (SGLang puts a
//! metadata map where vLLM has `lora_name`) are treated as absent. Map events ignore unknown
//! keys. Fields that matter for placement (`block_hashes`, `token_ids`, `block_size`) are
//! checked strictly.
//!
//! # One bad event is one bad event
//!
//! An event the decoder cannot use (an unknown tag, an unknown medium, a missing or mistyped
//! field) becomes [`VllmEvent::Skipped`] with its [`SkipReason`], and every other event of the
//! batch is still decoded. Only a payload that is unusable as a whole is a [`VllmDecodeError`]:
//! not one well-formed msgpack value (so no event boundary can be trusted), trailing bytes,
//! not an array or map, no `events` array, or a bad `ts` or rank. When the payload is not
//! well-formed msgpack, that is the error reported, whatever else is wrong with it.

use std::fmt;

use kvtier_core::Medium;

use self::reader::{Head, Reader};

mod event;
mod reader;
mod spares;

use self::spares::Spares;

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
        /// block); `None` when the event has no `extra_keys` field or it is nil. Kept as sent:
        /// the decoder does not check that there is one entry per block.
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

/// Why an event of a batch became [`VllmEvent::Skipped`].
///
/// # Examples
///
/// ```
/// use kvtier_router::SkipReason;
///
/// assert_eq!(SkipReason::UnknownTag.as_str(), "unknown_tag");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The event's tag names no event type kvtier knows (a newer engine's event).
    UnknownTag,
    /// The event names a medium kvtier does not know.
    UnknownMedium,
    /// The event is well-formed msgpack but not a usable event: a required field is missing,
    /// or a field has the wrong type or an out-of-range value.
    Malformed,
}

impl SkipReason {
    /// A stable `snake_case` name (`unknown_tag`, `unknown_medium`, `malformed`), for metric
    /// names and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTag => "unknown_tag",
            Self::UnknownMedium => "unknown_medium",
            Self::Malformed => "malformed",
        }
    }

    /// The reason an event that failed with `error` is skipped.
    fn of(error: &VllmDecodeError) -> Self {
        match error {
            VllmDecodeError::UnknownTag { .. } => Self::UnknownTag,
            VllmDecodeError::UnknownMedium { .. } => Self::UnknownMedium,
            _ => Self::Malformed,
        }
    }
}

/// One element of a block's extra-keys tuple, as msgspec encoded it.
///
/// vLLM folds multimodal identifiers (strings), `cache_salt` (a string) and other per-block
/// keys into its block hashes; kvtier folds the same values into its own hashes through
/// [`ExtraKey::encode_into`].
///
/// # Examples
///
/// ```
/// use kvtier_router::ExtraKey;
///
/// let mut out = Vec::new();
/// ExtraKey::Str("salt".into()).encode_into(&mut out);
/// assert_eq!(out, [&[1u8][..], &4u64.to_le_bytes(), b"salt"].concat());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExtraKey {
    /// A msgpack string (valid UTF-8).
    Str(String),
    /// A msgpack binary.
    Bytes(Box<[u8]>),
    /// A msgpack integer of any width.
    Int(i128),
    /// The raw msgpack bytes of any other value (float, bool, nil, array, map, extension, or a
    /// string that is not UTF-8).
    Other(Box<[u8]>),
}

impl ExtraKey {
    /// Appends the canonical encoding used for hashing: stable across kvtier versions.
    ///
    /// One tag byte (`1` string, `2` bytes, `3` integer, `4` other), then the payload's length
    /// in bytes as a little-endian `u64`, then the payload: the string's UTF-8 bytes, the
    /// bytes, the integer as 16 little-endian two's-complement bytes (whatever its msgpack
    /// width), or the value's raw msgpack bytes. The length prefix keeps consecutive keys
    /// apart (`("ab", "c")` never encodes like `("a", "bc")`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_router::ExtraKey;
    ///
    /// let mut out = Vec::new();
    /// ExtraKey::Int(-1).encode_into(&mut out);
    /// assert_eq!(out[0], 3);
    /// assert_eq!(out[1..9], 16u64.to_le_bytes());
    /// assert_eq!(out[9..], [0xff; 16]);
    /// ```
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let int;
        let (tag, payload): (u8, &[u8]) = match self {
            Self::Str(s) => (1, s.as_bytes()),
            Self::Bytes(b) => (2, b),
            Self::Int(v) => {
                int = v.to_le_bytes();
                (3, &int)
            }
            Self::Other(raw) => (4, raw),
        };
        out.push(tag);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
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
    /// An event's tag names no known event type (inside a batch: [`SkipReason::UnknownTag`]).
    #[error("unknown event tag {tag:?}")]
    UnknownTag {
        /// The tag (cut to 64 characters).
        tag: String,
    },
    /// A medium name that kvtier does not know (inside a batch:
    /// [`SkipReason::UnknownMedium`]).
    #[error("unknown medium {name:?}")]
    UnknownMedium {
        /// The name (cut to 64 characters).
        name: String,
    },
}

/// Decodes the msgpack payload of one batch (the third frame of a PUB message, or the second of
/// a replay reply).
///
/// Events the decoder cannot use become [`VllmEvent::Skipped`] (see the module docs); the rest
/// of the batch is decoded.
///
/// # Errors
///
/// A [`VllmDecodeError`] when the payload is unusable as a whole: not one well-formed msgpack
/// value, trailing bytes, not an array or a map, no `events` array, a `ts` that is not a
/// number, or a rank that is not an integer. Never panics.
///
/// # Examples
///
/// ```
/// use kvtier_router::{ExternalHash, SkipReason, VllmEvent, decode_vllm_batch};
///
/// // [1.5, [["BlockRemoved", [7], "GPU"], ["BlockMoved"]], 0] as msgpack
/// let bytes = [
///     0x93, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x92, 0x93, 0xac, b'B', b'l', b'o', b'c',
///     b'k', b'R', b'e', b'm', b'o', b'v', b'e', b'd', 0x91, 0x07, 0xa3, b'G', b'P', b'U',
///     0x91, 0xaa, b'B', b'l', b'o', b'c', b'k', b'M', b'o', b'v', b'e', b'd', 0x00,
/// ];
/// let batch = decode_vllm_batch(&bytes)?;
/// assert_eq!(batch.ts, 1.5);
/// assert_eq!(batch.dp_rank, Some(0));
/// assert!(matches!(
///     &batch.events[0],
///     VllmEvent::BlockRemoved { block_hashes, .. } if block_hashes == &[ExternalHash::Int(7)]
/// ));
/// // A newer engine's event type: skipped, the rest of the batch is kept.
/// assert_eq!(batch.events[1], VllmEvent::Skipped { reason: SkipReason::UnknownTag });
/// assert!(decode_vllm_batch(&bytes[..10]).is_err());
/// # Ok::<(), kvtier_router::VllmDecodeError>(())
/// ```
pub fn decode_vllm_batch(bytes: &[u8]) -> Result<VllmBatch, VllmDecodeError> {
    decode_batch(bytes, &mut Spares::default()).map_err(|e| malformed_first(bytes, e))
}

/// [`decode_vllm_batch`] for a stream of batches: decodes into the allocations of the batches
/// given back with [`VllmDecoder::recycle`] (the events' hash and token vectors, 32-byte hash
/// boxes), so that a busy stream's batches mostly cost no allocation. The batches it gives are
/// the same as [`decode_vllm_batch`]'s.
///
/// # Examples
///
/// ```
/// use kvtier_router::{VllmDecoder, decode_vllm_batch};
///
/// // [ts, [["BlockRemoved", [7]]], 0], as msgpack.
/// let bytes = [0x93, 0x00, 0x91, 0x92, 0xac, b'B', b'l', b'o', b'c', b'k', b'R', b'e', b'm',
///     b'o', b'v', b'e', b'd', 0x91, 0x07, 0x00];
/// let mut decoder = VllmDecoder::new();
/// for _ in 0..3 {
///     let batch = decoder.decode(&bytes)?;
///     assert_eq!(batch, decode_vllm_batch(&bytes)?);
///     decoder.recycle(batch);
/// }
/// # Ok::<(), kvtier_router::VllmDecodeError>(())
/// ```
#[derive(Debug, Default)]
pub struct VllmDecoder {
    spares: Spares,
}

impl VllmDecoder {
    /// A decoder without spares yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one batch, like [`decode_vllm_batch`].
    ///
    /// # Errors
    ///
    /// Those of [`decode_vllm_batch`].
    pub fn decode(&mut self, bytes: &[u8]) -> Result<VllmBatch, VllmDecodeError> {
        decode_batch(bytes, &mut self.spares).map_err(|e| malformed_first(bytes, e))
    }

    /// Gives back a batch that is no longer needed, for the next batches to reuse its
    /// allocations (a bounded number of them; the rest is freed).
    pub fn recycle(&mut self, batch: VllmBatch) {
        self.spares.reclaim(batch);
    }
}

/// A batch-level field error stands only if the whole payload is well-formed msgpack; else the
/// msgpack error (or the trailing bytes) is what is wrong. Runs only on the error path.
fn malformed_first(bytes: &[u8], error: VllmDecodeError) -> VllmDecodeError {
    if matches!(
        error,
        VllmDecodeError::Msgpack { .. } | VllmDecodeError::TrailingBytes { .. }
    ) {
        return error;
    }
    let mut r = Reader::new(bytes);
    match r.skip(1) {
        Err(msgpack) => msgpack,
        Ok(()) if r.remaining() > 0 => VllmDecodeError::TrailingBytes {
            count: r.remaining(),
        },
        Ok(()) => error,
    }
}

fn decode_batch(bytes: &[u8], spares: &mut Spares) -> Result<VllmBatch, VllmDecodeError> {
    let mut r = Reader::new(bytes);
    let batch = match r.head()? {
        Head::Array(n) => array_batch(&mut r, n, spares)?,
        Head::Map(n) => map_batch(&mut r, n, spares)?,
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: "batch",
                expected: "an array or a map",
            });
        }
    };
    if r.remaining() > 0 {
        return Err(VllmDecodeError::TrailingBytes {
            count: r.remaining(),
        });
    }
    Ok(batch)
}

/// `[ts, events, rank?, ...]` (extra trailing fields ignored).
fn array_batch(
    r: &mut Reader<'_>,
    n: u32,
    spares: &mut Spares,
) -> Result<VllmBatch, VllmDecodeError> {
    if n == 0 {
        return Err(VllmDecodeError::MissingField { field: "ts" });
    }
    let ts = ts(r.head()?)?;
    if n < 2 {
        return Err(VllmDecodeError::MissingField { field: "events" });
    }
    let events = events(r, spares)?;
    let dp_rank = if n >= 3 {
        event::opt_int(r.head()?, "data_parallel_rank")?
    } else {
        None
    };
    for _ in 3..n {
        r.skip(2)?;
    }
    Ok(VllmBatch {
        ts,
        events,
        dp_rank,
    })
}

/// `{"ts": …, "events": …, "data_parallel_rank" | "attn_dp_rank": …}` (other keys ignored; the
/// last of a repeated key wins).
fn map_batch(
    r: &mut Reader<'_>,
    n: u32,
    spares: &mut Spares,
) -> Result<VllmBatch, VllmDecodeError> {
    let (mut ts_field, mut events_field, mut rank_field) = (None, None, None);
    for _ in 0..n {
        let key_start = r.pos();
        let key = match r.head()? {
            Head::Str(key) => key,
            _ => {
                r.rewind(key_start);
                r.skip(2)?;
                r.skip(2)?;
                continue;
            }
        };
        match key {
            b"ts" => ts_field = Some(field(r, |r| ts(r.head()?))?),
            b"events" => events_field = Some(field(r, |r| events(r, spares))?),
            b"data_parallel_rank" | b"attn_dp_rank" => {
                rank_field = Some(field(r, |r| {
                    event::opt_int(r.head()?, "data_parallel_rank")
                })?);
            }
            _ => r.skip(2)?,
        }
    }
    let ts = ts_field.ok_or(VllmDecodeError::MissingField { field: "ts" })??;
    let events = events_field.ok_or(VllmDecodeError::MissingField { field: "events" })??;
    let dp_rank = rank_field.transpose()?.flatten();
    Ok(VllmBatch {
        ts,
        events,
        dp_rank,
    })
}

/// Reads one batch field with `read`; a field error is returned inside `Ok` with the reader
/// past the field, a msgpack error as `Err`.
fn field<'a, T>(
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, VllmDecodeError>,
) -> Result<Result<T, VllmDecodeError>, VllmDecodeError> {
    let start = r.pos();
    match read(r) {
        Ok(value) => Ok(Ok(value)),
        Err(e @ VllmDecodeError::Msgpack { .. }) => Err(e),
        Err(e) => {
            r.rewind(start);
            r.skip(2)?;
            Ok(Err(e))
        }
    }
}

fn ts(head: Head<'_>) -> Result<f64, VllmDecodeError> {
    match head {
        Head::F64(v) => Ok(v),
        Head::F32(v) => Ok(f64::from(v)),
        Head::UInt(v) => Ok(v as f64),
        Head::NInt(v) => Ok(v as f64),
        _ => Err(VllmDecodeError::WrongType {
            field: "ts",
            expected: "a number",
        }),
    }
}

/// The events array: each event decoded, or skipped with its reason.
fn events(r: &mut Reader<'_>, spares: &mut Spares) -> Result<Vec<VllmEvent>, VllmDecodeError> {
    let Head::Array(n) = r.head()? else {
        return Err(VllmDecodeError::WrongType {
            field: "events",
            expected: "an array",
        });
    };
    let mut out = spares.events(usize::try_from(n).unwrap_or(usize::MAX).min(r.remaining()));
    for _ in 0..n {
        let start = r.pos();
        match event::parse_event(r, 3, spares) {
            Ok(event) => out.push(event),
            Err(e) => {
                // The event's own bytes must still be msgpack, or no boundary can be trusted.
                r.rewind(start);
                r.skip(3)?;
                out.push(VllmEvent::Skipped {
                    reason: SkipReason::of(&e),
                });
            }
        }
    }
    Ok(out)
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

#[cfg(test)]
mod tests;
