//! Which blocks an instance announces.

use kvtier_core::SequenceHash;
use serde::{Deserialize, Serialize};

/// Which blocks produce events.
///
/// Positions here are **1-based**: the first block of a sequence (its root, whose
/// [`SequenceHash::position`] is 0) is position 1. [`EmitPolicy::PowerOfTwo`] announces
/// positions 1, 2, 4, 8, ... — that is, sequence-hash positions 0, 1, 3, 7, ... — which is
/// `log2(n) + 1` events for an `n`-block prefix instead of `n`.
///
/// With power-of-two announcements a router knows only a bound on a prefix: an instance that
/// announced positions up to `2^k` but not `2^(k+1)` holds between `2^k` and `2^(k+1) - 1`
/// blocks of it (if its cache is prefix-closed). Blocks at saturated positions
/// ([`SequenceHash::MAX_POSITION`] and beyond) are never announced under this policy.
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
/// use kvtier_events::EmitPolicy;
///
/// let mut h = SequenceHash::root(1); // position 0 = 1-based position 1
/// let mut announced = vec![];
/// for i in 0..9u32 {
///     if EmitPolicy::PowerOfTwo.emits(h) {
///         announced.push(i + 1);
///     }
///     h = SequenceHash::child_of(h, 100 + i as u64);
/// }
/// assert_eq!(announced, [1, 2, 4, 8]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitPolicy {
    /// Every registered block (the default).
    #[default]
    All,
    /// Only blocks at 1-based positions 1, 2, 4, 8, ...
    PowerOfTwo,
    /// Nothing.
    None,
}

impl EmitPolicy {
    /// Whether a block with this hash is announced.
    #[inline]
    pub const fn emits(self, hash: SequenceHash) -> bool {
        match self {
            EmitPolicy::All => true,
            EmitPolicy::None => false,
            EmitPolicy::PowerOfTwo => {
                let pos = hash.position();
                pos < SequenceHash::MAX_POSITION && (pos + 1).is_power_of_two()
            }
        }
    }

    /// Whether the policy announces only some positions (a consumer then knows bounds, not
    /// exact prefix lengths).
    pub const fn is_sparse(self) -> bool {
        matches!(self, EmitPolicy::PowerOfTwo)
    }
}
