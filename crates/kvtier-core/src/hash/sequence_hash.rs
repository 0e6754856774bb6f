//! [`SequenceHash`]: the identity of a block *and its whole prefix*.
//!
//! A sequence hash packs four fields into one `u128`:
//!
//! ```text
//!  127        104 103    96 95            64 63                             0
//! +--------------+---------+----------------+--------------------------------+
//! | position u24 | run u8  | parent frag u32|  chained hash u64               |
//! +--------------+---------+----------------+--------------------------------+
//! ```
//!
//! - `position`: index of the block in its sequence (0 = root), saturating at
//!   [`SequenceHash::MAX_POSITION`]. Recoverable from the value so lookups and eviction can be
//!   partitioned by depth.
//! - `run`: a *content-defined run tag*. A block starts a new run when it is a root or when its
//!   chained hash has its four low bits clear (one block in sixteen on average, decided by
//!   content alone); otherwise it inherits its parent's tag. The manager shards by this tag, so the
//!   blocks of one chain sit in a few shards (one lock per run, not per block) while different
//!   chains, and long shared prefixes, still spread over all shards. It is derived from the
//!   chain, so it never separates two equal blocks.
//! - `parent fragment`: the low 32 bits of the parent's chained hash (0 for a root). Lets
//!   lineage-aware code link a block to its parent without another lookup. It is a hint: two
//!   parents may share a fragment, so code that uses it must tolerate collisions.
//! - `chained hash`: the 64-bit hash of this block chained onto its parent's chained hash. This is
//!   the value other engines exchange (see [`crate::HashScheme::Xxh3Compat`]).
//!
//! Equality and hashing use all 128 bits: the same chained hash at another position or under
//! another parent is a different block.

use std::fmt;

/// Identity of a block together with its prefix (position, parent fragment, chained hash).
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
///
/// let root = SequenceHash::root(0xABCD);
/// let child = SequenceHash::child_of(root, 0x1234);
/// assert_eq!(child.position(), 1);
/// assert_eq!(child.parent_fragment(), 0xABCD);
/// assert_eq!(child.chained(), 0x1234);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SequenceHash(u128);

impl SequenceHash {
    /// Largest position a sequence hash records; deeper blocks saturate here.
    pub const MAX_POSITION: u32 = (1 << 24) - 1;

    /// Builds a sequence hash from its fields, starting a new run (see the module docs).
    /// Prefer [`SequenceHash::root`] and [`SequenceHash::child_of`], which keep runs across a
    /// chain.
    pub const fn new(chained: u64, parent_fragment: u32, position: u32) -> Self {
        Self::with_run(chained, parent_fragment, position, Self::own_run(chained))
    }

    const fn own_run(chained: u64) -> u8 {
        // High bits: independent of the four low bits that decide run starts.
        (chained >> 56) as u8
    }

    /// Low bits of the chained hash that must be clear for a block to start a run.
    const RUN_MASK: u64 = 15;

    const fn starts_run(chained: u64) -> bool {
        chained & Self::RUN_MASK == 0
    }

    const fn with_run(chained: u64, parent_fragment: u32, position: u32, run: u8) -> Self {
        let pos = if position > Self::MAX_POSITION {
            Self::MAX_POSITION
        } else {
            position
        };
        Self(
            ((pos as u128) << 104)
                | ((run as u128) << 96)
                | ((parent_fragment as u128) << 64)
                | chained as u128,
        )
    }

    /// A root (position 0, no parent) with the given chained hash.
    pub const fn root(chained: u64) -> Self {
        Self::new(chained, 0, 0)
    }

    /// The block after `parent` whose chained hash is `chained` (position = parent's + 1).
    ///
    /// The position saturates at [`Self::MAX_POSITION`] rather than wrapping or panicking.
    pub const fn child_of(parent: SequenceHash, chained: u64) -> Self {
        let run = if Self::starts_run(chained) {
            Self::own_run(chained)
        } else {
            parent.run_tag()
        };
        Self::with_run(
            chained,
            parent.chained() as u32,
            parent.position().saturating_add(1),
            run,
        )
    }

    /// Index of the block in its sequence (0 for the root), at most [`Self::MAX_POSITION`].
    pub const fn position(self) -> u32 {
        (self.0 >> 104) as u32
    }

    /// The content-defined run tag (see the module docs); managers shard by it.
    pub const fn run_tag(self) -> u8 {
        (self.0 >> 96) as u8
    }

    /// Low 32 bits of the parent's chained hash (0 for a root).
    pub const fn parent_fragment(self) -> u32 {
        (self.0 >> 64) as u32
    }

    /// The 64-bit chained hash (the interoperable value).
    pub const fn chained(self) -> u64 {
        self.0 as u64
    }

    /// The raw 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds a sequence hash from [`SequenceHash::as_u128`].
    pub const fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    /// Whether `self` can be the parent of `child` (positions adjacent, fragment matches).
    ///
    /// A fragment is 32 bits, so `true` is a strong hint, not a proof.
    pub const fn may_be_parent_of(self, child: SequenceHash) -> bool {
        child.position() == self.position().wrapping_add(1)
            && child.position() != 0
            && child.parent_fragment() == self.chained() as u32
    }

    /// A well-mixed 64-bit digest of all 128 bits, for hash tables and sketches.
    #[inline]
    pub const fn mix64(self) -> u64 {
        let lo = self.0 as u64;
        let hi = (self.0 >> 64) as u64;
        let x = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^ (x >> 32) ^ hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
    }
}

impl PartialOrd for SequenceHash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SequenceHash {
    /// Orders by position first, then by the raw value.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.position(), self.0).cmp(&(other.position(), other.0))
    }
}

impl fmt::Debug for SequenceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SequenceHash({}:{:016x}<{:08x})",
            self.position(),
            self.chained(),
            self.parent_fragment()
        )
    }
}

impl fmt::Display for SequenceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:016x}", self.position(), self.chained())
    }
}

/// A [`std::hash::BuildHasher`] for maps keyed by [`SequenceHash`] (or anything hashed as a few
/// integers): one multiply-fold per word, robust to unmixed inputs such as small trace ids.
#[derive(Clone, Copy, Default, Debug)]
pub struct SeqHashBuilder;

impl std::hash::BuildHasher for SeqHashBuilder {
    type Hasher = SeqHasher;
    fn build_hasher(&self) -> SeqHasher {
        SeqHasher(0)
    }
}

/// The hasher made by [`SeqHashBuilder`].
#[derive(Clone, Copy, Default, Debug)]
pub struct SeqHasher(u64);

impl SeqHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        let m = ((self.0 ^ v) as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_u128 | 1);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl std::hash::Hasher for SeqHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // One more fold so low bits (used by hashbrown for buckets) depend on all input bits.
        let x = self.0.wrapping_mul(0xA24B_AED4_963E_E407);
        x ^ (x >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.mix(v as u64);
        self.mix((v >> 64) as u64);
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(v as u64);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
}

/// A `hashbrown` map keyed with [`SeqHashBuilder`].
pub type SeqHashMap<K, V> = hashbrown::HashMap<K, V, SeqHashBuilder>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let h = SequenceHash::new(0xDEAD_BEEF_0000_0001, 0x55AA, 7);
        assert_eq!(h.position(), 7);
        assert_eq!(h.parent_fragment(), 0x55AA);
        assert_eq!(h.chained(), 0xDEAD_BEEF_0000_0001);
        assert_eq!(SequenceHash::from_u128(h.as_u128()), h);
    }

    #[test]
    fn same_chained_other_position_differs() {
        let a = SequenceHash::new(42, 0, 0);
        let b = SequenceHash::new(42, 0, 1);
        assert_ne!(a, b);
        assert!(a < b);
    }

    #[test]
    fn parent_link_hint() {
        let root = SequenceHash::root(0x1_0000_0002);
        let child = SequenceHash::child_of(root, 9);
        assert!(root.may_be_parent_of(child));
        assert!(!child.may_be_parent_of(root));
        let other = SequenceHash::child_of(SequenceHash::root(3), 9);
        assert!(!root.may_be_parent_of(other));
    }

    #[test]
    fn position_saturates() {
        let deep = SequenceHash::new(1, 0, u32::MAX);
        assert_eq!(deep.position(), SequenceHash::MAX_POSITION);
        assert_eq!(
            SequenceHash::child_of(deep, 2).position(),
            SequenceHash::MAX_POSITION
        );
    }

    #[test]
    fn runs_are_inherited_until_a_content_boundary() {
        let root = SequenceHash::root(0xAB00_0000_0000_0001);
        assert_eq!(root.run_tag(), 0xAB);
        // Low bits not clear: inherits.
        let a = SequenceHash::child_of(root, 0xCD00_0000_0000_0008);
        assert_eq!(a.run_tag(), 0xAB);
        // Low bits clear: starts its own run.
        let b = SequenceHash::child_of(a, 0xEF00_0000_0000_0010);
        assert_eq!(b.run_tag(), 0xEF);
        let c = SequenceHash::child_of(b, 0x1200_0000_0000_0001);
        assert_eq!(c.run_tag(), 0xEF);
        // Equal chains give equal tags.
        assert_eq!(SequenceHash::child_of(a, 0xEF00_0000_0000_0010), b);
    }
}
