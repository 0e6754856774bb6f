//! One event of a batch, read field by field straight from the msgpack bytes.
//!
//! Owns the two event layouts (positional arrays and tagged maps, see `decode.rs`) and the
//! typing of every field. It returns a [`VllmDecodeError`] for an event it cannot use; the
//! batch decoder then skips that event's bytes and records a [`VllmEvent::Skipped`], so an
//! error here never leaves the reader in the middle of a value that the caller cannot step
//! over. Nothing here allocates except the decoded values themselves (one `Vec` for the hashes,
//! one for the tokens, one boxed slice per byte-string hash), and those come from the
//! [`Spares`] of earlier batches when there are any.

use kvtier_core::Medium;

use super::reader::{Head, Reader};
use super::spares::Spares;
use super::{ExternalHash, ExtraKey, VllmDecodeError, VllmEvent, echo};

/// The fields an event can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    BlockHashes,
    Parent,
    TokenIds,
    BlockSize,
    LoraId,
    Medium,
    LoraName,
    ExtraKeys,
    GroupIdx,
    CacheKind,
}

impl Field {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"block_hashes" => Self::BlockHashes,
            b"parent_block_hash" => Self::Parent,
            b"token_ids" => Self::TokenIds,
            b"block_size" => Self::BlockSize,
            b"lora_id" => Self::LoraId,
            b"medium" => Self::Medium,
            b"lora_name" => Self::LoraName,
            b"extra_keys" => Self::ExtraKeys,
            b"group_idx" => Self::GroupIdx,
            b"kv_cache_spec_kind" => Self::CacheKind,
            _ => return None,
        })
    }
}

/// The positional layout of `BlockStored` (after the tag), in vLLM's field order.
const STORED: [Field; 10] = [
    Field::BlockHashes,
    Field::Parent,
    Field::TokenIds,
    Field::BlockSize,
    Field::LoraId,
    Field::Medium,
    Field::LoraName,
    Field::ExtraKeys,
    Field::GroupIdx,
    Field::CacheKind,
];
/// The positional layout of `BlockRemoved` (after the tag).
const REMOVED: [Field; 3] = [Field::BlockHashes, Field::Medium, Field::GroupIdx];

/// A known event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Stored,
    Removed,
    Cleared,
}

impl Tag {
    fn parse(name: &[u8]) -> Result<Self, VllmDecodeError> {
        match name {
            b"BlockStored" => Ok(Self::Stored),
            b"BlockRemoved" => Ok(Self::Removed),
            b"AllBlocksCleared" => Ok(Self::Cleared),
            other => match std::str::from_utf8(other) {
                Ok(tag) => Err(VllmDecodeError::UnknownTag { tag: echo(tag) }),
                Err(_) => Err(VllmDecodeError::WrongType {
                    field: "type",
                    expected: "UTF-8",
                }),
            },
        }
    }

    /// The positional fields, and how many of them are strictly typed: positional fields past
    /// that index are optional extensions, where a type mismatch means another engine's
    /// extension (SGLang puts a metadata map where vLLM has `lora_name`), not a bad event.
    fn layout(self) -> (&'static [Field], usize) {
        match self {
            Self::Stored => (&STORED, 6),
            Self::Removed => (&REMOVED, 2),
            Self::Cleared => (&[], 0),
        }
    }

    fn has(self, field: Field) -> bool {
        self.layout().0.contains(&field)
    }
}

/// Reads one event whose first byte is at the reader's position, at nesting `depth`.
///
/// # Errors
///
/// Any [`VllmDecodeError`]; the reader is then somewhere inside the event (the caller rewinds
/// and skips it).
pub(super) fn parse_event(
    r: &mut Reader<'_>,
    depth: usize,
    spares: &mut Spares,
) -> Result<VllmEvent, VllmDecodeError> {
    match r.head()? {
        Head::Array(n) => positional(r, n, depth, spares),
        Head::Map(n) => named(r, n, depth, spares),
        _ => Err(VllmDecodeError::WrongType {
            field: "event",
            expected: "an array or a map",
        }),
    }
}

/// `[tag, field, field, ...]`: missing trailing fields are absent, extra ones ignored.
fn positional(
    r: &mut Reader<'_>,
    n: u32,
    depth: usize,
    spares: &mut Spares,
) -> Result<VllmEvent, VllmDecodeError> {
    if n == 0 {
        return Err(VllmDecodeError::MissingField { field: "type" });
    }
    let tag = match r.head()? {
        Head::Str(name) => Tag::parse(name)?,
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: "type",
                expected: "a string tag",
            });
        }
    };
    let (layout, strict) = tag.layout();
    let mut parts = Parts::default();
    for i in 0..n - 1 {
        let i = i as usize;
        match layout.get(i) {
            Some(&field) => {
                let start = r.pos();
                if let Err(e) = parts.read(r, field, depth + 1, spares) {
                    let lenient = matches!(
                        e,
                        VllmDecodeError::WrongType { .. } | VllmDecodeError::OutOfRange { .. }
                    );
                    if i < strict || !lenient {
                        return Err(e);
                    }
                    r.rewind(start);
                    r.skip(depth + 1)?;
                }
            }
            None => r.skip(depth + 1)?,
        }
    }
    parts.finish(tag)
}

/// `{"type": tag, name: value, ...}`: unknown keys ignored, known ones strictly typed, the tag
/// anywhere (msgspec writes it first).
fn named(
    r: &mut Reader<'_>,
    n: u32,
    depth: usize,
    spares: &mut Spares,
) -> Result<VllmEvent, VllmDecodeError> {
    let mut tag = None;
    let mut parts = Parts::default();
    // Fields that failed, kept until the tag says whether they matter.
    let mut errors: Vec<(Field, VllmDecodeError)> = Vec::new();
    for _ in 0..n {
        let key_start = r.pos();
        let Head::Str(key) = r.head()? else {
            r.rewind(key_start);
            r.skip(depth + 1)?;
            r.skip(depth + 1)?;
            continue;
        };
        if key == b"type" {
            let start = r.pos();
            tag = Some(match r.head()? {
                Head::Str(name) => Tag::parse(name),
                _ => {
                    r.rewind(start);
                    r.skip(depth + 1)?;
                    Err(VllmDecodeError::WrongType {
                        field: "type",
                        expected: "a string tag",
                    })
                }
            });
            continue;
        }
        let Some(field) = Field::from_name(key) else {
            r.skip(depth + 1)?;
            continue;
        };
        if let Some(Ok(known)) = &tag
            && !known.has(field)
        {
            r.skip(depth + 1)?;
            continue;
        }
        let start = r.pos();
        if let Err(e) = parts.read(r, field, depth + 1, spares) {
            r.rewind(start);
            r.skip(depth + 1)?;
            errors.push((field, e));
        }
    }
    let tag = tag.ok_or(VllmDecodeError::MissingField { field: "type" })??;
    if let Some((_, e)) = errors.into_iter().find(|(f, _)| tag.has(*f)) {
        return Err(e);
    }
    parts.finish(tag)
}

/// The fields read so far (each `None` until read, or when nil).
#[derive(Default)]
struct Parts {
    block_hashes: Option<Vec<ExternalHash>>,
    parent: Option<ExternalHash>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<usize>,
    lora_id: Option<i64>,
    medium: Option<Medium>,
    lora_name: Option<String>,
    extra_keys: Option<Vec<Option<Vec<ExtraKey>>>>,
    group_idx: Option<i64>,
    cache_kind: Option<String>,
}

impl Parts {
    /// Reads the value of `field` (at nesting `depth`); sets it only if it is well typed.
    fn read(
        &mut self,
        r: &mut Reader<'_>,
        field: Field,
        depth: usize,
        spares: &mut Spares,
    ) -> Result<(), VllmDecodeError> {
        match field {
            Field::BlockHashes => self.block_hashes = hashes(r, spares)?,
            Field::Parent => {
                self.parent = match r.bin8_fast() {
                    Some(bytes) => Some(spares.bytes(bytes)),
                    None => match r.head()? {
                        Head::Nil => None,
                        head => Some(hash(head, "parent_block_hash", spares)?),
                    },
                }
            }
            Field::TokenIds => self.token_ids = tokens(r, spares)?,
            Field::BlockSize => self.block_size = block_size(r.head()?)?,
            Field::LoraId => self.lora_id = opt_int(r.head()?, "lora_id")?,
            Field::Medium => self.medium = medium(r.head()?)?,
            Field::LoraName => self.lora_name = opt_str(r.head()?, "lora_name")?,
            Field::ExtraKeys => self.extra_keys = extra_keys(r, depth)?,
            Field::GroupIdx => self.group_idx = opt_int(r.head()?, "group_idx")?,
            Field::CacheKind => self.cache_kind = opt_str(r.head()?, "kv_cache_spec_kind")?,
        }
        Ok(())
    }

    fn finish(self, tag: Tag) -> Result<VllmEvent, VllmDecodeError> {
        let missing = |field| VllmDecodeError::MissingField { field };
        Ok(match tag {
            Tag::Stored => VllmEvent::BlockStored {
                block_hashes: self.block_hashes.ok_or(missing("block_hashes"))?,
                parent: self.parent,
                token_ids: self.token_ids.ok_or(missing("token_ids"))?,
                block_size: self.block_size.ok_or(missing("block_size"))?,
                lora_id: self.lora_id,
                lora_name: self.lora_name,
                medium: self.medium,
                group_idx: self.group_idx,
                cache_kind: self.cache_kind,
                extra_keys: self.extra_keys,
            },
            Tag::Removed => VllmEvent::BlockRemoved {
                block_hashes: self.block_hashes.ok_or(missing("block_hashes"))?,
                medium: self.medium,
                group_idx: self.group_idx,
            },
            Tag::Cleared => VllmEvent::AllBlocksCleared,
        })
    }
}

/// Room for `n` elements, but never more than the input can still hold (one byte each).
fn capacity(n: u32, r: &Reader<'_>) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).min(r.remaining())
}

fn hash(
    head: Head<'_>,
    field: &'static str,
    spares: &mut Spares,
) -> Result<ExternalHash, VllmDecodeError> {
    match head {
        Head::UInt(v) => Ok(ExternalHash::from(v)),
        Head::NInt(v) => Ok(ExternalHash::from(v)),
        Head::Bin(b) => Ok(spares.bytes(b)),
        _ => Err(VllmDecodeError::WrongType {
            field,
            expected: "an integer or bytes",
        }),
    }
}

fn hashes(
    r: &mut Reader<'_>,
    spares: &mut Spares,
) -> Result<Option<Vec<ExternalHash>>, VllmDecodeError> {
    const FIELD: &str = "block_hashes";
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Array(n) => {
            let mut out = spares.hashes(capacity(n, r));
            for _ in 0..n {
                out.push(match r.bin8_fast() {
                    Some(bytes) => spares.bytes(bytes),
                    None => hash(r.head()?, FIELD, spares)?,
                });
            }
            Ok(Some(out))
        }
        _ => Err(VllmDecodeError::WrongType {
            field: FIELD,
            expected: "an array of hashes",
        }),
    }
}

fn tokens(r: &mut Reader<'_>, spares: &mut Spares) -> Result<Option<Vec<u32>>, VllmDecodeError> {
    const FIELD: &str = "token_ids";
    match r.head()? {
        Head::Nil => Ok(None),
        Head::Array(n) => {
            let mut out = spares.tokens(capacity(n, r));
            // The usual forms in one tight loop; anything else (an error, most likely) below.
            let fast = r.uints_fast(n, &mut out);
            for _ in fast..n {
                let token = match r.head_fast()? {
                    Head::UInt(v) => u32::try_from(v)
                        .map_err(|_| VllmDecodeError::OutOfRange { field: FIELD })?,
                    Head::NInt(_) => return Err(VllmDecodeError::OutOfRange { field: FIELD }),
                    _ => {
                        return Err(VllmDecodeError::WrongType {
                            field: FIELD,
                            expected: "an array of integers",
                        });
                    }
                };
                out.push(token);
            }
            Ok(Some(out))
        }
        _ => Err(VllmDecodeError::WrongType {
            field: FIELD,
            expected: "an array of integers",
        }),
    }
}

fn block_size(head: Head<'_>) -> Result<Option<usize>, VllmDecodeError> {
    const FIELD: &str = "block_size";
    match head {
        Head::Nil => Ok(None),
        Head::UInt(v) => usize::try_from(v)
            .map(Some)
            .map_err(|_| VllmDecodeError::OutOfRange { field: FIELD }),
        Head::NInt(_) => Err(VllmDecodeError::OutOfRange { field: FIELD }),
        _ => Err(VllmDecodeError::WrongType {
            field: FIELD,
            expected: "an integer",
        }),
    }
}

/// An optional `i64` field.
pub(super) fn opt_int(head: Head<'_>, field: &'static str) -> Result<Option<i64>, VllmDecodeError> {
    match head {
        Head::Nil => Ok(None),
        Head::UInt(v) => i64::try_from(v)
            .map(Some)
            .map_err(|_| VllmDecodeError::OutOfRange { field }),
        Head::NInt(v) => Ok(Some(v)),
        _ => Err(VllmDecodeError::WrongType {
            field,
            expected: "an integer or nil",
        }),
    }
}

fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, VllmDecodeError> {
    std::str::from_utf8(bytes).map_err(|_| VllmDecodeError::WrongType {
        field,
        expected: "UTF-8",
    })
}

fn opt_str(head: Head<'_>, field: &'static str) -> Result<Option<String>, VllmDecodeError> {
    match head {
        Head::Nil => Ok(None),
        Head::Str(b) => utf8(b, field).map(|s| Some(s.to_owned())),
        _ => Err(VllmDecodeError::WrongType {
            field,
            expected: "a string or nil",
        }),
    }
}

/// A medium name: kvtier's names in any case, plus the engines' aliases.
fn medium(head: Head<'_>) -> Result<Option<Medium>, VllmDecodeError> {
    const FIELD: &str = "medium";
    let name = match head {
        Head::Nil => return Ok(None),
        // What vLLM sends, without the general lookup.
        Head::Str(b"GPU") => return Ok(Some(Medium::Gpu)),
        Head::Str(b"CPU") => return Ok(Some(Medium::Cpu)),
        Head::Str(b) => utf8(b, FIELD)?,
        _ => {
            return Err(VllmDecodeError::WrongType {
                field: FIELD,
                expected: "a string or nil",
            });
        }
    };
    if let Some(m) = Medium::from_name(name) {
        return Ok(Some(m));
    }
    // SGLang's hierarchical cache names its host tier CPU_PINNED.
    if name.eq_ignore_ascii_case("CPU_PINNED") {
        return Ok(Some(Medium::Cpu));
    }
    // vLLM's offloading connectors name their tiers CPU and STORAGE (vllm/distributed/kv_events.py).
    if ["STORAGE", "SSD", "LOCAL_DISK"]
        .iter()
        .any(|alias| alias.eq_ignore_ascii_case(name))
    {
        return Ok(Some(Medium::Disk));
    }
    Err(VllmDecodeError::UnknownMedium { name: echo(name) })
}

/// `extra_keys`: nil, or one entry per block, each nil or a tuple of values.
fn extra_keys(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<Option<Vec<Option<Vec<ExtraKey>>>>, VllmDecodeError> {
    let wrong = || VllmDecodeError::WrongType {
        field: "extra_keys",
        expected: "an array of tuples or nils",
    };
    let n = match r.head()? {
        Head::Nil => return Ok(None),
        Head::Array(n) => n,
        _ => return Err(wrong()),
    };
    let mut blocks = Vec::with_capacity(capacity(n, r));
    for _ in 0..n {
        match r.head()? {
            Head::Nil => blocks.push(None),
            Head::Array(m) => {
                let mut keys = Vec::with_capacity(capacity(m, r));
                for _ in 0..m {
                    keys.push(extra_key(r, depth + 2)?);
                }
                blocks.push(Some(keys));
            }
            _ => return Err(wrong()),
        }
    }
    Ok(Some(blocks))
}

/// One element of a block's extra-keys tuple, at nesting `depth`.
fn extra_key(r: &mut Reader<'_>, depth: usize) -> Result<ExtraKey, VllmDecodeError> {
    let start = r.pos();
    Ok(match r.head()? {
        Head::Str(b) => match std::str::from_utf8(b) {
            Ok(s) => ExtraKey::Str(s.to_owned()),
            Err(_) => ExtraKey::Other(r.since(start).into()),
        },
        Head::Bin(b) => ExtraKey::Bytes(b.into()),
        Head::UInt(v) => ExtraKey::Int(i128::from(v)),
        Head::NInt(v) => ExtraKey::Int(i128::from(v)),
        Head::Array(_) | Head::Map(_) => {
            r.rewind(start);
            r.skip(depth)?;
            ExtraKey::Other(r.since(start).into())
        }
        Head::Nil | Head::Bool(_) | Head::F32(_) | Head::F64(_) | Head::Ext => {
            ExtraKey::Other(r.since(start).into())
        }
    })
}
