//! [`ExtraKeys`]: what besides the tokens decides whether two blocks are the same.
//!
//! Two kinds of keys exist:
//!
//! - **Namespace keys** (model id, LoRA adapter, tenant salt) apply to every block of a
//!   sequence. They are encoded once into a 64-bit *namespace digest* that seeds every block
//!   hash.
//! - **Multimodal keys** ([`MmKey`]: a content hash plus the token range `[start, end)` its
//!   placeholder tokens occupy) apply only to the blocks whose token range overlaps them.
//!
//! Every key carries a kind tag and variable-length keys a length prefix, so keys of different
//! kinds never collide (LoRA `"x"` is not salt `"x"`) and boundaries cannot shift (model
//! `"ab"` + LoRA `"c"` is not model `"a"` + LoRA `"bc"`). The exact byte encoding is documented
//! on [`ExtraKeys`]; `tests/hashing.rs` pins it with independently computed vectors.

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::error::HashError;

/// Kind tag of a model id in the namespace encoding.
const TAG_MODEL: u8 = 0x01;
/// Kind tag of a LoRA adapter name in the namespace encoding.
const TAG_LORA: u8 = 0x02;
/// Kind tag of a tenant salt in the namespace encoding.
const TAG_SALT: u8 = 0x03;
/// Kind tag of a multimodal key in a block's byte layout.
const TAG_MM: u8 = 0x10;
/// Encoded size of one multimodal key: tag, content hash, relative start, relative end.
pub(super) const MM_KEY_BYTES: usize = 1 + 8 + 8 + 8;
/// XXH3 seed of the namespace digest: the little-endian `u64` of `b"kvtierNS"`.
pub(super) const NAMESPACE_SEED: u64 = u64::from_le_bytes(*b"kvtierNS");

/// A multimodal content hash and the token range `[start, end)` of the sequence it covers.
///
/// The key changes the hash of every block whose token range overlaps `start..end`, and its
/// offset relative to each such block is part of the hash, so moving the same image to other
/// positions gives other hashes.
///
/// # Examples
///
/// ```
/// use kvtier_core::MmKey;
///
/// let image = MmKey::new(0xFEED, 10..42);
/// assert_eq!(image.range(), 10..42);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MmKey {
    /// First token position covered (inclusive).
    pub start: usize,
    /// One past the last token position covered.
    pub end: usize,
    /// Hash of the multimodal content (image, audio ...), computed by the caller.
    pub content_hash: u64,
}

impl MmKey {
    /// The largest `end` a multimodal range may have: token positions are `u32` throughout
    /// kvtier (block positions in a [`crate::SequenceHash`] are `u32` too).
    pub const MAX_END: usize = u32::MAX as usize;

    /// A key for `content_hash` covering the token positions in `range`.
    ///
    /// The range is validated when the key reaches [`crate::BlockHasher::new`].
    pub const fn new(content_hash: u64, range: Range<usize>) -> Self {
        Self {
            start: range.start,
            end: range.end,
            content_hash,
        }
    }

    /// The token range `[start, end)` this key covers.
    pub const fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// Whether this key covers any token of `start..end`.
    pub(super) const fn overlaps(&self, start: usize, end: usize) -> bool {
        self.start < end && self.end > start
    }

    /// Checks that the range is non-empty and addressable.
    pub(super) fn validate(&self) -> Result<(), HashError> {
        if self.start >= self.end {
            return Err(HashError::EmptyMmRange {
                content_hash: self.content_hash,
                start: self.start,
                end: self.end,
            });
        }
        if self.end > Self::MAX_END {
            return Err(HashError::MmRangeOutOfBounds {
                content_hash: self.content_hash,
                start: self.start,
                end: self.end,
                limit: Self::MAX_END,
            });
        }
        Ok(())
    }

    /// This key's encoding relative to a block whose first token is at `block_start`.
    pub(super) fn encode(&self, block_start: usize) -> [u8; MM_KEY_BYTES] {
        // Positions are bounded by MmKey::MAX_END (validated), so they fit an i64 exactly.
        let rel = |pos: usize| (pos as i64).wrapping_sub(block_start as i64);
        let mut out = [0u8; MM_KEY_BYTES];
        out[0] = TAG_MM;
        out[1..9].copy_from_slice(&self.content_hash.to_le_bytes());
        out[9..17].copy_from_slice(&rel(self.start).to_le_bytes());
        out[17..25].copy_from_slice(&rel(self.end).to_le_bytes());
        out
    }
}

/// Keys besides the tokens that make blocks distinct: model, LoRA adapter, tenant salt and
/// multimodal content.
///
/// Setters replace an earlier value of the same kind (multimodal keys accumulate). Every key is
/// absent by default.
///
/// Namespace keys (model, LoRA, salt) apply to every block through one digest; multimodal keys
/// apply to the blocks they overlap. Each key carries a kind tag, variable-length keys a length
/// prefix, so keys of different kinds or with shifted boundaries never collide:
///
/// ```text
/// namespace encoding = [0x01 len:u64 model]?  [0x02 len:u64 lora]?  [0x03 len:u64 salt]?
/// namespace digest   = XXH3-64(namespace encoding, seed = LE u64 of b"kvtierNS")
/// mm key (per block) = 0x10  content_hash:u64  (start - block_start):i64  (end - block_start):i64
/// ```
///
/// Integers are little-endian. Absent keys are omitted; a present but empty key is still
/// written, so "no LoRA" differs from LoRA `""`. Multimodal keys are kept sorted by
/// `(start, end, content_hash)` without duplicates, so insertion order does not matter.
///
/// # Examples
///
/// ```
/// use kvtier_core::ExtraKeys;
///
/// let keys = ExtraKeys::new()
///     .with_model("llama-3-8b")
///     .with_lora("sql-adapter")
///     .with_salt(b"tenant-42".to_vec())
///     .with_mm(0xFEED, 10..42);
/// assert_eq!(keys.model(), Some("llama-3-8b"));
/// assert_eq!(keys.mm().len(), 1);
/// assert!(keys.namespace_digest().is_some());
/// assert_eq!(ExtraKeys::new().namespace_digest(), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtraKeys {
    model: Option<String>,
    lora: Option<String>,
    salt: Option<Vec<u8>>,
    mm: Vec<MmKey>,
}

impl ExtraKeys {
    /// No keys at all: blocks are identified by their tokens only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the model id (default: none).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the LoRA adapter name (default: none).
    pub fn with_lora(mut self, lora: impl Into<String>) -> Self {
        self.lora = Some(lora.into());
        self
    }

    /// Sets the tenant salt / namespace bytes (default: none).
    pub fn with_salt(mut self, salt: impl Into<Vec<u8>>) -> Self {
        self.salt = Some(salt.into());
        self
    }

    /// Adds a multimodal key: `content_hash` covers token positions `range` (default: none).
    ///
    /// The range is validated by [`crate::BlockHasher::new`].
    pub fn with_mm(mut self, content_hash: u64, range: Range<usize>) -> Self {
        self.push_mm(MmKey::new(content_hash, range));
        self
    }

    /// Adds a multimodal key in place (same as [`ExtraKeys::with_mm`]).
    pub fn push_mm(&mut self, key: MmKey) {
        // Keep sorted and deduplicated so insertion order never changes a hash.
        if let Err(at) = self.mm.binary_search(&key) {
            self.mm.insert(at, key);
        }
    }

    /// The model id, if set.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The LoRA adapter name, if set.
    pub fn lora(&self) -> Option<&str> {
        self.lora.as_deref()
    }

    /// The tenant salt, if set.
    pub fn salt(&self) -> Option<&[u8]> {
        self.salt.as_deref()
    }

    /// The multimodal keys, sorted by `(start, end, content_hash)`, without duplicates.
    pub fn mm(&self) -> &[MmKey] {
        &self.mm
    }

    /// Whether any namespace key (model, LoRA, salt) is set.
    pub fn has_namespace(&self) -> bool {
        self.model.is_some() || self.lora.is_some() || self.salt.is_some()
    }

    /// Whether no key of any kind is set.
    pub fn is_empty(&self) -> bool {
        !self.has_namespace() && self.mm.is_empty()
    }

    /// The namespace digest, or `None` when no namespace key is set.
    ///
    /// `XXH3-64(namespace encoding, seed = LE u64 of b"kvtierNS")`; see the module docs.
    pub fn namespace_digest(&self) -> Option<u64> {
        self.has_namespace().then(|| self.namespace_digest_always())
    }

    /// The namespace digest, also when no namespace key is set (digest of the empty encoding).
    pub(super) fn namespace_digest_always(&self) -> u64 {
        let mut buf = Vec::new();
        let keys = [
            (TAG_MODEL, self.model.as_deref().map(str::as_bytes)),
            (TAG_LORA, self.lora.as_deref().map(str::as_bytes)),
            (TAG_SALT, self.salt.as_deref()),
        ];
        for (tag, bytes) in keys {
            if let Some(bytes) = bytes {
                buf.push(tag);
                buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                buf.extend_from_slice(bytes);
            }
        }
        xxh3_64_with_seed(&buf, NAMESPACE_SEED)
    }

    /// Checks every multimodal key.
    pub(super) fn validate(&self) -> Result<(), HashError> {
        self.mm.iter().try_for_each(MmKey::validate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mm_insertion_order_is_irrelevant() {
        let a = ExtraKeys::new()
            .with_mm(1, 0..4)
            .with_mm(2, 8..9)
            .with_mm(1, 0..4);
        let b = ExtraKeys::new().with_mm(2, 8..9).with_mm(1, 0..4);
        assert_eq!(a, b);
        assert_eq!(a.mm().len(), 2);
    }

    #[test]
    fn empty_key_differs_from_absent_key() {
        let absent = ExtraKeys::new().with_model("m");
        let empty = ExtraKeys::new().with_model("m").with_lora("");
        assert_ne!(absent.namespace_digest(), empty.namespace_digest());
    }

    #[test]
    fn validation() {
        assert!(MmKey::new(1, 3..3).validate().is_err());
        let reversed = MmKey {
            start: 4,
            end: 3,
            content_hash: 1,
        };
        assert!(reversed.validate().is_err());
        assert!(MmKey::new(1, 0..MmKey::MAX_END).validate().is_ok());
        assert!(matches!(
            MmKey::new(1, 0..MmKey::MAX_END + 1).validate(),
            Err(HashError::MmRangeOutOfBounds { .. })
        ));
    }
}
