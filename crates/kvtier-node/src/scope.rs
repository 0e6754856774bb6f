//! Namespaces: which tenant a block belongs to.
//!
//! Every tier is keyed by [`SequenceHash`], so a namespace is folded into the hash itself: a
//! block PUT under namespace `n` is stored under `scoped(n, h)`, a keyed mix of `h` with a
//! 64-bit digest of `n`. Two namespaces never address one stored block unless two 128-bit keys
//! collide (the same odds every content hash in the system already relies on), and a client
//! can only name hashes of its own namespace. The default namespace (`""`) is the identity, so
//! hashes stored there are exactly the ones engines and the router compute. The position bits
//! are kept, so a scoped hash still knows its place in a sequence.

use kvtier_core::SequenceHash;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A namespace, ready to scope hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    name: String,
    /// `None` for the default namespace (no scoping).
    seed: Option<u64>,
}

impl Scope {
    /// The default namespace.
    pub(crate) fn default_namespace() -> Self {
        Self {
            name: String::new(),
            seed: None,
        }
    }

    /// The namespace `name`.
    pub(crate) fn new(name: &str) -> Self {
        if name.is_empty() {
            return Self::default_namespace();
        }
        Self {
            name: name.to_string(),
            seed: Some(xxh3_64(name.as_bytes()) | 1),
        }
    }

    /// The key `hash` is stored under in this namespace.
    #[inline]
    pub(crate) fn scoped(&self, hash: SequenceHash) -> SequenceHash {
        match self.seed {
            None => hash,
            Some(seed) => {
                let chained = xxh3_64_with_seed(&hash.as_u128().to_le_bytes(), seed);
                let fragment = (xxh3_64_with_seed(&chained.to_le_bytes(), seed) >> 32) as u32;
                SequenceHash::new(chained, fragment, hash.position())
            }
        }
    }

    /// Scopes every hash of `hashes` into `out` (cleared first).
    pub(crate) fn scope_all(
        &self,
        hashes: impl Iterator<Item = SequenceHash>,
        out: &mut Vec<SequenceHash>,
    ) {
        out.clear();
        out.extend(hashes.map(|h| self.scoped(h)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_is_identity_and_others_differ() {
        let h = SequenceHash::child_of(SequenceHash::root(7), 9);
        assert_eq!(Scope::new("").scoped(h), h);
        let a = Scope::new("tenant-a").scoped(h);
        let b = Scope::new("tenant-b").scoped(h);
        assert_ne!(a, h);
        assert_ne!(a, b);
        assert_eq!(
            a,
            Scope::new("tenant-a").scoped(h),
            "deterministic (survives restarts)"
        );
        assert_eq!(a.position(), h.position());
    }
}
