//! How `/query` turns tokens and extra keys into sequence hashes.
//!
//! Every query goes through [`crate::vllm_request_hashes`]: without a salt and without
//! multimodal items that is the [`kvtier_core::BlockHasher`] chain of the tokens with the model
//! and LoRA bound in, as the vLLM converter and kvtier's own instances hash them. A salt and
//! multimodal items are vLLM's per-block `extra_keys` (`cache_salt` on block 0, each item's
//! identifier on the blocks its placeholder tokens overlap), folded in exactly as the converter
//! folds the `extra_keys` of `BlockStored` events, so a salted query matches only blocks stored
//! under that salt and an unsalted one never does.

use kvtier_core::{HashScheme, SequenceHash};

use super::http::MmItemJson;
use crate::{MmPlaceholder, VllmConvertConfig, vllm_request_hashes};

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
    let mut config = VllmConvertConfig::default().with_scheme(scheme);
    if let Some(m) = keys.model {
        config = config.with_model(m);
    }
    let mm: Vec<MmPlaceholder> = keys
        .mm
        .iter()
        .map(|m| MmPlaceholder {
            identifier: m.identifier.clone(),
            offset: m.offset,
            length: m.length,
        })
        .collect();
    vllm_request_hashes(&config, block_size, keys.lora, keys.salt, &mm, tokens)
        .map_err(|e| e.to_string())
}
