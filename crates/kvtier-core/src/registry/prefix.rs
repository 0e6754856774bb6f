//! [`PrefixMatch`]: the answer of [`Registry::longest_prefix_any`](crate::Registry::longest_prefix_any).

use crate::Tier;
use crate::registry::tiers::{TierId, TierSet};

/// The longest prefix of a hash chain that some tier holds, with where each block of it is.
///
/// Position `i` of the prefix is held by at least one tier; different positions may be held
/// by different tiers (the prefix may be split across G1, G2 and G3).
///
/// # Examples
///
/// ```
/// use kvtier_core::{G1, G2, PrefixMatch, TierId, TierSet};
///
/// let g1 = TierSet::EMPTY.with(TierId::of::<G1>().unwrap());
/// let g2 = TierSet::EMPTY.with(TierId::of::<G2>().unwrap());
/// let m = PrefixMatch::from_tiers(vec![g1, g1.with(TierId::of::<G2>().unwrap()), g2]);
/// assert_eq!(m.len(), 3);
/// assert_eq!(m.prefix_len_in::<G1>(), 2);
/// assert_eq!(m.prefix_len_in::<G2>(), 0);
/// assert_eq!(m.count_in::<G2>(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixMatch {
    tiers: Vec<TierSet>,
}

impl PrefixMatch {
    /// Builds a match from the tiers of each position (every set should be non-empty).
    pub fn from_tiers(tiers: Vec<TierSet>) -> Self {
        Self { tiers }
    }

    /// Length of the longest prefix held across tiers (every position in at least one tier).
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Whether not even the first hash is held anywhere.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tiers holding each position of the prefix.
    pub fn tiers(&self) -> &[TierSet] {
        &self.tiers
    }

    /// The tiers holding some block of the prefix.
    pub fn union(&self) -> TierSet {
        TierSet::from_bits(self.tiers.iter().fold(0, |m, s| m | s.bits()))
    }

    /// Length of the prefix that tier `T` holds on its own (contiguous from position 0).
    pub fn prefix_len_in<T: Tier>(&self) -> usize {
        TierId::of::<T>().map_or(0, |id| self.prefix_len_in_id(id))
    }

    /// [`prefix_len_in`](Self::prefix_len_in) by tier index.
    pub fn prefix_len_in_id(&self, id: TierId) -> usize {
        self.tiers.iter().take_while(|s| s.contains_id(id)).count()
    }

    /// How many blocks of the prefix tier `T` holds (not necessarily contiguous).
    pub fn count_in<T: Tier>(&self) -> usize {
        TierId::of::<T>().map_or(0, |id| {
            self.tiers.iter().filter(|s| s.contains_id(id)).count()
        })
    }

    /// For every tier holding position 0, the length of the prefix it holds on its own, by
    /// increasing tier index.
    pub fn per_tier(&self) -> Vec<(TierId, usize)> {
        self.tiers.first().map_or_else(Vec::new, |first| {
            first
                .iter()
                .map(|id| (id, self.prefix_len_in_id(id)))
                .collect()
        })
    }
}
