//! Tier indices: every [`Tier`] marker type gets a small, process-wide bit index so that a
//! registry entry can record its presence in each tier as one bit of a `u64`.
//!
//! `G1`..`G4` have fixed indices 0..=3 and never touch the table. Other tier types are assigned
//! the next free index (4, 5, ...) the first time a registry needs one (when
//! [`Registry::observer`](crate::Registry::observer) is called for them); there are at most
//! [`MAX_TIERS`] in a process. Lookups that must not assign (presence queries) return "absent"
//! for a tier that was never assigned, which is the truth: no observer of that tier exists.
//!
//! The table is global rather than per registry so that a [`TierSet`] can answer
//! [`TierSet::contains`] on its own and print tier names without a registry at hand.
//!
//! # Lock ordering
//! The table's lock is a leaf: it is taken alone (never while a registry shard lock is held)
//! and no user code runs under it.

use std::any::TypeId;
use std::fmt;

use crate::sync::RwLock;

use crate::{G1, G2, G3, G4, Tier};

/// Most tiers one process can tell apart (the width of a [`TierSet`]).
pub const MAX_TIERS: usize = 64;

/// Number of fixed indices (`G1`..`G4`).
const FIXED: usize = 4;
const FIXED_NAMES: [&str; FIXED] = [G1::NAME, G2::NAME, G3::NAME, G4::NAME];

/// Why a tier could not be given an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// Every one of the [`MAX_TIERS`] indices is already taken by another tier type.
    #[error("cannot index tier `{tier}`: all {max} tier indices are taken")]
    Exhausted {
        /// `Tier::NAME` of the tier that was refused.
        tier: &'static str,
        /// The number of indices ([`MAX_TIERS`]).
        max: usize,
    },
}

/// The small index of one tier type in [`TierSet`]s.
///
/// # Examples
///
/// ```
/// use kvtier_core::{G2, TierId};
///
/// let id = TierId::of::<G2>().unwrap();
/// assert_eq!(id.index(), 1);
/// assert_eq!(id.name(), "g2");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierId(u8);

impl TierId {
    /// The index of `T` if it has one (always for `G1`..`G4`; for other tiers once a registry
    /// observer was created for them). Never assigns.
    pub fn of<T: Tier>() -> Option<TierId> {
        TABLE.lookup(TypeId::of::<T>())
    }

    /// The index of `T`, assigning the next free one on first use.
    ///
    /// # Errors
    ///
    /// [`TierError::Exhausted`] when [`MAX_TIERS`] tier types already have indices.
    pub fn get_or_assign<T: Tier>() -> Result<TierId, TierError> {
        TABLE.get_or_assign(TypeId::of::<T>(), T::NAME)
    }

    /// The bit position, in `0..MAX_TIERS`.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The tier's `Tier::NAME`.
    pub fn name(self) -> &'static str {
        TABLE.name(self)
    }

    #[inline]
    pub(crate) const fn bit(self) -> u64 {
        1u64 << self.0
    }
}

impl fmt::Debug for TierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TierId({}:{})", self.0, self.name())
    }
}

impl fmt::Display for TierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of tiers (one bit per [`TierId`]): where a hash is present.
///
/// # Examples
///
/// ```
/// use kvtier_core::{G1, G3, TierId, TierSet};
///
/// let set = TierSet::EMPTY.with(TierId::of::<G1>().unwrap()).with(TierId::of::<G3>().unwrap());
/// assert!(set.contains::<G1>() && !set.contains::<kvtier_core::G2>());
/// assert_eq!(set.len(), 2);
/// let names: Vec<_> = set.iter().map(|t| t.name()).collect();
/// assert_eq!(names, ["g1", "g3"]);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TierSet(u64);

impl TierSet {
    /// No tier.
    pub const EMPTY: TierSet = TierSet(0);

    /// Builds a set from its bits (bit `i` = the tier whose [`TierId::index`] is `i`).
    pub const fn from_bits(bits: u64) -> TierSet {
        TierSet(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// This set plus `id`.
    #[must_use]
    pub const fn with(self, id: TierId) -> TierSet {
        TierSet(self.0 | id.bit())
    }

    /// Whether tier `T` is in the set.
    pub fn contains<T: Tier>(self) -> bool {
        TierId::of::<T>().is_some_and(|id| self.contains_id(id))
    }

    /// Whether `id` is in the set.
    pub const fn contains_id(self, id: TierId) -> bool {
        self.0 & id.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of tiers in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The tiers in the set, by increasing index.
    pub fn iter(self) -> impl Iterator<Item = TierId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            Some(TierId(i as u8))
        })
    }
}

impl fmt::Debug for TierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(TierId::name))
            .finish()
    }
}

/// The assignment of indices to non-fixed tier types.
pub(crate) struct TierTable {
    dynamic: RwLock<Vec<(TypeId, &'static str)>>,
    capacity: usize,
}

static TABLE: TierTable = TierTable::new(MAX_TIERS);

impl TierTable {
    pub(crate) const fn new(capacity: usize) -> Self {
        Self {
            dynamic: crate::sync::const_rwlock(Vec::new()),
            capacity,
        }
    }

    fn fixed(ty: TypeId) -> Option<TierId> {
        [
            TypeId::of::<G1>(),
            TypeId::of::<G2>(),
            TypeId::of::<G3>(),
            TypeId::of::<G4>(),
        ]
        .iter()
        .position(|&t| t == ty)
        .map(|i| TierId(i as u8))
    }

    pub(crate) fn lookup(&self, ty: TypeId) -> Option<TierId> {
        Self::fixed(ty).or_else(|| {
            let d = self.dynamic.read();
            d.iter()
                .position(|&(t, _)| t == ty)
                .map(|i| TierId((FIXED + i) as u8))
        })
    }

    pub(crate) fn get_or_assign(
        &self,
        ty: TypeId,
        name: &'static str,
    ) -> Result<TierId, TierError> {
        if let Some(id) = self.lookup(ty) {
            return Ok(id);
        }
        let mut d = self.dynamic.write();
        // Another thread may have assigned it between the read and the write lock.
        if let Some(i) = d.iter().position(|&(t, _)| t == ty) {
            return Ok(TierId((FIXED + i) as u8));
        }
        if FIXED + d.len() >= self.capacity {
            return Err(TierError::Exhausted {
                tier: name,
                max: self.capacity,
            });
        }
        d.push((ty, name));
        Ok(TierId((FIXED + d.len() - 1) as u8))
    }

    pub(crate) fn name(&self, id: TierId) -> &'static str {
        match FIXED_NAMES.get(id.index()) {
            Some(n) => n,
            None => self
                .dynamic
                .read()
                .get(id.index() - FIXED)
                .map_or("unknown", |&(_, n)| n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A;
    struct B;
    struct C;

    #[test]
    fn fixed_tiers_never_use_the_table() {
        let table = TierTable::new(FIXED);
        assert_eq!(table.lookup(TypeId::of::<G3>()), Some(TierId(2)));
        assert_eq!(table.get_or_assign(TypeId::of::<G4>(), "g4"), Ok(TierId(3)));
        assert!(table.dynamic.read().is_empty());
    }

    #[test]
    fn dynamic_tiers_are_assigned_once_then_exhaust() {
        let table = TierTable::new(FIXED + 2);
        assert_eq!(table.lookup(TypeId::of::<A>()), None);
        let a = table.get_or_assign(TypeId::of::<A>(), "a").unwrap();
        assert_eq!(a, TierId(4));
        assert_eq!(table.get_or_assign(TypeId::of::<A>(), "a"), Ok(a));
        assert_eq!(table.get_or_assign(TypeId::of::<B>(), "b"), Ok(TierId(5)));
        assert_eq!(
            table.get_or_assign(TypeId::of::<C>(), "c"),
            Err(TierError::Exhausted { tier: "c", max: 6 })
        );
        assert_eq!(table.name(TierId(5)), "b");
        assert_eq!(table.name(TierId(0)), "g1");
    }

    #[test]
    fn set_iterates_in_index_order() {
        let s = TierSet::from_bits(0b1000_0101 | 1 << 63);
        let ids: Vec<usize> = s.iter().map(TierId::index).collect();
        assert_eq!(ids, [0, 2, 7, 63]);
        assert_eq!(s.len(), 4);
    }
}
