//! How `/query` turns tokens and extra keys into sequence hashes.
//!
//! Without a salt and without multimodal items, the hashes are the [`BlockHasher`] chain of
//! the tokens with the model and LoRA bound in, as the vLLM converter and kvtier's own
//! instances hash them. A salt and multimodal items are vLLM's per-block `extra_keys`: they
//! must be folded in exactly as the converter folds the `extra_keys` of `BlockStored` events.
//!
//! MERGE(C2): once `crate::vllm_request_hashes` exists, [`request_hashes`] calls it with
//! `VllmConvertConfig { scheme, default_block_size: block_size, model, .. }`, `lora`,
//! `salt` and the items as `MmPlaceholder`s, for every query (it equals the plain chain
//! without salt and items). Until then a salt is bound with [`ExtraKeys::with_salt`] (kvtier's
//! own salting) and multimodal items are refused.

use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, SequenceHash};

use super::http::MmItemJson;

/// The extra keys of a query.
pub(crate) struct Keys<'a> {
    pub(crate) model: Option<&'a str>,
    pub(crate) lora: Option<&'a str>,
    pub(crate) salt: Option<&'a str>,
    pub(crate) mm: &'a [MmItemJson],
}

/// The sequence hashes of `tokens` under `keys` (see the module docs).
pub(crate) fn request_hashes(
    scheme: HashScheme,
    block_size: usize,
    keys: Keys<'_>,
    tokens: &[u32],
) -> Result<Vec<SequenceHash>, String> {
    if !keys.mm.is_empty() {
        return Err("extra.mm needs vLLM's extra-key folding, which this build lacks".into());
    }
    let mut extra = ExtraKeys::new();
    if let Some(m) = keys.model {
        extra = extra.with_model(m);
    }
    if let Some(l) = keys.lora {
        extra = extra.with_lora(l);
    }
    if let Some(s) = keys.salt {
        extra = extra.with_salt(s.as_bytes().to_vec());
    }
    BlockHasher::new(block_size, scheme, extra)
        .map(|h| h.sequence_hashes(tokens))
        .map_err(|e| e.to_string())
}
