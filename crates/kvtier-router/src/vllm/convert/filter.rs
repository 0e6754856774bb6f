//! Which stores and removes a converter indexes (the KV-cache group filter of hybrid models),
//! and its cache of hashers by `(block size, LoRA)`.
//!
//! Nothing here touches the block map: these only decide whether an event is indexed and
//! with which [`BlockHasher`].

use kvtier_core::BlockHasher;

use super::{MAX_HASHERS, VllmConverter, VllmGroupFilter};

impl VllmConverter {
    /// Where the hasher of `(block_size, lora)` is in the cache (made if needed), or `None`
    /// when that pair cannot make one.
    pub(super) fn hasher(&mut self, block_size: usize, lora: Option<&str>) -> Option<usize> {
        if let Some(at) = self
            .hashers
            .iter()
            .position(|(bs, l, _)| *bs == block_size && l.as_deref() == lora)
        {
            return self.hashers[at].2.is_some().then_some(at);
        }
        // A stream that cycles through endless LoRA names must not grow the cache forever.
        if self.hashers.len() >= MAX_HASHERS {
            self.hashers.clear();
        }
        let hasher =
            BlockHasher::new(block_size, self.config.scheme, self.config.extra_keys(lora)).ok();
        let made = hasher.is_some();
        self.hashers
            .push((block_size, lora.map(str::to_owned), hasher));
        made.then_some(self.hashers.len() - 1)
    }

    /// Whether a store of `group` (of cache kind `kind`) is indexed; remembers the decision
    /// for the group's removes.
    pub(super) fn accept_store(&mut self, group: Option<i64>, kind: Option<&str>) -> bool {
        let Some(group) = group else { return true };
        let accept = match self.config.groups {
            VllmGroupFilter::All => true,
            VllmGroupFilter::Index(only) => group == only,
            VllmGroupFilter::FullAttention => match kind {
                Some(kind) => ["full_attention", "mla_attention"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(kind)),
                None => group == 0,
            },
        };
        if self.groups.get(&group) != Some(&accept) {
            self.groups.insert(group, accept);
        }
        accept
    }

    /// Whether a remove of `group` is indexed (what the group's stores were told).
    pub(super) fn accept_remove(&self, group: Option<i64>) -> bool {
        let Some(group) = group else { return true };
        match self.config.groups {
            VllmGroupFilter::All => true,
            VllmGroupFilter::Index(only) => group == only,
            // Removes carry no kind: use what the group's stores said.
            VllmGroupFilter::FullAttention => {
                self.groups.get(&group).copied().unwrap_or(group == 0)
            }
        }
    }
}
