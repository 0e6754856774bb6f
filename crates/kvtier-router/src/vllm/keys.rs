//! vLLM's per-block extra keys, folded into kvtier hashes the same way for stored blocks and
//! for queries: [`vllm_request_hashes`], [`MmPlaceholder`], and the fold the converter uses.
//!
//! # What vLLM puts in a block's extra keys
//!
//! vLLM (`generate_block_hash_extra_keys` in `vllm/v1/core/kv_cache_utils.py`) hashes each
//! block as `hash((parent_hash, block_tokens, extra_keys))`, where `extra_keys` is `None` or a
//! tuple of, in this order:
//!
//! 1. the LoRA adapter's name, on every block of a LoRA request (older versions: its integer
//!    id);
//! 2. for each multimodal item whose placeholder range `[offset, offset + length)` overlaps the
//!    block's token range, in the order of the items' offsets: `(identifier, offset - start)`
//!    where `start` is the block's first token position (older versions: the identifier
//!    alone);
//! 3. the request's `cache_salt`, on block 0 only (the block whose first token is position 0);
//! 4. a SHA-256 digest of the block's prompt embeddings, for requests made of embeddings.
//!
//! `BlockStored.extra_keys` carries that tuple per block (msgpack: an array; the multimodal
//! pair an array inside it).
//!
//! # How kvtier folds them
//!
//! The LoRA is already bound into every kvtier hash through [`ExtraKeys::with_lora`] (its name,
//! or `"lora-id:<id>"`), so the leading LoRA element is dropped. If anything remains, the
//! block's kvtier block hash `b` (from [`BlockHasher::hash_block`]) becomes
//!
//! ```text
//! XXH3-64( "kvtier-vllm-keys" || LE32(count) || key_1.encode_into() || ... , seed = b )
//! ```
//!
//! ([`ExtraKey::encode_into`]) before it is chained. Salt and multimodal keys thus change the
//! block's hash and, through the chain, every later block's, as they do in vLLM: a salted
//! request matches only blocks stored under the same salt, an unsalted one never does.
//!
//! [`ExtraKeys::with_lora`]: kvtier_core::ExtraKeys::with_lora

use kvtier_core::{BlockHasher, HashError, SequenceHash};
use rmpv::Value;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::convert::{VllmConvertConfig, VllmMmKeys};
use super::decode::ExtraKey;

/// Domain separation of the fold.
const FOLD_DOMAIN: &[u8] = b"kvtier-vllm-keys";

/// A multimodal item of a request as vLLM sees it: identifier + placeholder token range.
///
/// `identifier` is what vLLM calls the item's `identifier` (its multimodal hash, or the UUID
/// the client gave), `offset` and `length` its `mm_position` in the prompt's tokens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MmPlaceholder {
    /// The item's identifier.
    pub identifier: String,
    /// Position of its first placeholder token.
    pub offset: usize,
    /// How many placeholder tokens it covers.
    pub length: usize,
}

/// The kvtier sequence hashes of a request's tokens, with vLLM's per-block extra keys
/// (multimodal identifiers overlapping each block, then `cache_salt` on block 0 only) folded
/// in exactly as the converter folds the `extra_keys` of `BlockStored` events (see the module
/// docs).
///
/// With no salt and no multimodal item it equals
/// `BlockHasher::new(block_size, config.scheme, config.extra_keys(lora))?.sequence_hashes(tokens)`.
/// An empty salt counts as none (vLLM ignores it too). Prompt-embedding keys cannot be
/// computed from tokens: requests made of embeddings do not match.
///
/// # Errors
///
/// [`HashError`] if `block_size` (or the configured model, with `lora`) cannot make a hasher.
///
/// # Examples
///
/// ```
/// use kvtier_core::BlockHasher;
/// use kvtier_router::{MmPlaceholder, VllmConvertConfig, vllm_request_hashes};
///
/// let config = VllmConvertConfig::default().with_model("llava");
/// let tokens: Vec<u32> = (0..8).collect();
/// let plain = vllm_request_hashes(&config, 4, None, None, &[], &tokens)?;
/// let hasher = BlockHasher::new(4, config.scheme, config.extra_keys(None))?;
/// assert_eq!(plain, hasher.sequence_hashes(&tokens));
///
/// // A salt changes block 0, hence every block.
/// let salted = vllm_request_hashes(&config, 4, None, Some("tenant-a"), &[], &tokens)?;
/// assert!(salted.iter().zip(&plain).all(|(s, p)| s != p));
///
/// // An image on tokens 5..7 changes block 1 only.
/// let image = MmPlaceholder { identifier: "img-1".into(), offset: 5, length: 2 };
/// let mm = vllm_request_hashes(&config, 4, None, None, &[image], &tokens)?;
/// assert_eq!(mm[0], plain[0]);
/// assert_ne!(mm[1], plain[1]);
/// # Ok::<(), kvtier_core::HashError>(())
/// ```
pub fn vllm_request_hashes(
    config: &VllmConvertConfig,
    block_size: usize,
    lora: Option<&str>,
    salt: Option<&str>,
    mm: &[MmPlaceholder],
    tokens: &[u32],
) -> Result<Vec<SequenceHash>, HashError> {
    let hasher = BlockHasher::new(block_size, config.scheme, config.extra_keys(lora))?;
    let salt = salt.filter(|s| !s.is_empty());
    let mut items: Vec<&MmPlaceholder> = mm.iter().collect();
    items.sort_by_key(|p| p.offset);
    let mut out = Vec::with_capacity(tokens.len() / block_size);
    let mut keys = Vec::new();
    let mut scratch = Vec::new();
    let mut parent = None;
    for (i, block) in tokens.chunks_exact(block_size).enumerate() {
        let start = i * block_size;
        let end = start + block_size;
        keys.clear();
        for item in items
            .iter()
            .filter(|p| p.offset < end && p.offset + p.length > start)
        {
            keys.push(mm_key(config.mm_keys, item, start));
        }
        if let (0, Some(salt)) = (start, salt) {
            keys.push(ExtraKey::Str(salt.to_owned()));
        }
        let block_hash = fold(hasher.hash_block(i, block)?, &keys, &mut scratch);
        let next = hasher.extend_chain(parent, block_hash);
        out.push(next);
        parent = Some(next);
    }
    Ok(out)
}

/// The extra key vLLM puts in a block starting at token `start` for `item`.
fn mm_key(style: VllmMmKeys, item: &MmPlaceholder, start: usize) -> ExtraKey {
    match style {
        VllmMmKeys::IdentifierOnly => ExtraKey::Str(item.identifier.clone()),
        VllmMmKeys::WithOffset => {
            // Offsets are token positions: far below i64::MAX.
            let rel = i64::try_from(item.offset).unwrap_or(i64::MAX)
                - i64::try_from(start).unwrap_or(i64::MAX);
            let tuple = Value::Array(vec![
                Value::from(item.identifier.as_str()),
                Value::from(rel),
            ]);
            let mut raw = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = rmpv::encode::write_value(&mut raw, &tuple);
            ExtraKey::Other(raw.into_boxed_slice())
        }
    }
}

/// The LoRA of a stored block, as vLLM may have put it first in the block's extra keys.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoraKey<'a> {
    /// `lora_name` (current vLLM puts the name first).
    pub(crate) name: Option<&'a str>,
    /// `lora_id` (older vLLM put the integer id first).
    pub(crate) id: Option<i64>,
}

impl LoraKey<'_> {
    fn matches(&self, key: &ExtraKey) -> bool {
        match key {
            ExtraKey::Str(s) => self.name == Some(s.as_str()),
            ExtraKey::Int(i) => self.id.is_some_and(|id| i128::from(id) == *i),
            _ => false,
        }
    }
}

/// The keys of a block that are folded: all of them but a leading LoRA key.
pub(crate) fn foldable<'a>(keys: &'a [ExtraKey], lora: LoraKey<'_>) -> &'a [ExtraKey] {
    match keys.split_first() {
        Some((first, rest)) if lora.matches(first) => rest,
        _ => keys,
    }
}

/// Folds `keys` into `block_hash` (see the module docs); no keys leave it unchanged.
pub(crate) fn fold(block_hash: u64, keys: &[ExtraKey], scratch: &mut Vec<u8>) -> u64 {
    if keys.is_empty() {
        return block_hash;
    }
    scratch.clear();
    scratch.extend_from_slice(FOLD_DOMAIN);
    scratch.extend_from_slice(&u32::try_from(keys.len()).unwrap_or(u32::MAX).to_le_bytes());
    for key in keys {
        key.encode_into(scratch);
    }
    xxh3_64_with_seed(scratch, block_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_identity_without_keys_and_distinguishes_keys() {
        let mut scratch = Vec::new();
        assert_eq!(fold(42, &[], &mut scratch), 42);
        let a = fold(42, &[ExtraKey::Str("s".into())], &mut scratch);
        let b = fold(42, &[ExtraKey::Bytes(b"s".to_vec().into())], &mut scratch);
        let c = fold(43, &[ExtraKey::Str("s".into())], &mut scratch);
        assert!(a != 42 && a != b && a != c);
    }

    #[test]
    fn only_a_leading_lora_key_is_dropped() {
        let lora = ExtraKey::Str("sql".into());
        let salt = ExtraKey::Str("salt".into());
        let named = LoraKey {
            name: Some("sql"),
            id: None,
        };
        let keys = [lora.clone(), salt.clone()];
        assert_eq!(foldable(&keys, named), &keys[1..]);
        assert_eq!(foldable(&keys, LoraKey::default()), &keys[..]);
        let other_order = [salt.clone(), lora];
        assert_eq!(foldable(&other_order, named), &other_order[..]);
        let by_id = [ExtraKey::Int(7), salt];
        let id = LoraKey {
            name: None,
            id: Some(7),
        };
        assert_eq!(foldable(&by_id, id), &by_id[1..]);
    }

    #[test]
    fn mm_keys_carry_the_offset_relative_to_the_block() {
        let config = VllmConvertConfig::default();
        let tokens: Vec<u32> = (0..12).collect();
        let at = |offset| MmPlaceholder {
            identifier: "img".into(),
            offset,
            length: 2,
        };
        let one = vllm_request_hashes(&config, 4, None, None, &[at(5)], &tokens).unwrap();
        let moved = vllm_request_hashes(&config, 4, None, None, &[at(6)], &tokens).unwrap();
        assert_ne!(one[1], moved[1], "the offset inside the block counts");
        let ident = config.clone().with_mm_keys(VllmMmKeys::IdentifierOnly);
        let a = vllm_request_hashes(&ident, 4, None, None, &[at(5)], &tokens).unwrap();
        let b = vllm_request_hashes(&ident, 4, None, None, &[at(6)], &tokens).unwrap();
        assert_eq!(a, b, "older vLLM: the identifier alone");
        // An item spanning two blocks changes both, with a negative offset in the second.
        let span = vllm_request_hashes(&config, 4, None, None, &[at(3)], &tokens).unwrap();
        let plain = vllm_request_hashes(&config, 4, None, None, &[], &tokens).unwrap();
        assert!(span[0] != plain[0] && span[1] != plain[1]);
    }
}
