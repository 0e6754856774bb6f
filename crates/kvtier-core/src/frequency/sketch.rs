//! [`FrequencySketch`]: a TinyLFU count-min sketch of 4-bit counters, shared by many threads
//! without a lock.
//!
//! # Layout
//! The table is an array of 64-byte blocks, each holding eight `u64` words of sixteen 4-bit
//! counters. A key picks one block from its mixed hash and four counters inside it, one per
//! "hash function": counter `i` lives in word `2i` or `2i + 1` and at any of the 16 nibbles of
//! that word, both chosen by bits that are independent of the block index. So every counter of
//! every word is reachable (kvbm-logical's sketch derives the nibble from the same bits as the
//! word and uses 1 counter in 16), and an update or estimate touches one cache line.
//!
//! ```text
//!   key --mix--> h:  block = h & mask      counter i: word 2i + b_i, nibble n_i  (i = 0..4)
//!   block (64 B):  [w0 w1 | w2 w3 | w4 w5 | w6 w7]   each w = 16 x 4-bit counters
//! ```
//!
//! # Updates, aging and concurrency
//! - *Conservative update*: an increment raises only the counters that equal the key's current
//!   minimum, so an estimate never falls below the key's true count (until aging halves it or the
//!   counter saturates at 15), and over-counting from collisions is smaller than with a plain
//!   count-min sketch.
//! - *Aging*: every `sample_size` successful increments (default 10 x capacity) all counters are
//!   halved, so old popularity fades.
//! - Words are `AtomicU64`s updated with relaxed compare-and-swap: no lock, no global mutex. Under
//!   contention an update can be lost or applied to a slightly stale minimum; the sketch is an
//!   estimate and stays one. Large sketches spread the increment count over a few cache-padded
//!   stripes so the sample counter is not one contended line; aging then starts when one stripe
//!   reaches its share of `sample_size`, which is within a few per cent of `sample_size` total.

use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// Largest capacity (distinct keys tracked) a sketch accepts: 2^27 keys, 1 GiB of counters.
pub const MAX_SKETCH_CAPACITY: usize = 1 << 27;

/// Largest value a counter holds.
const COUNTER_MAX: u8 = 15;
/// Words per 64-byte block.
const BLOCK_WORDS: usize = 8;
/// Every nibble's low three bits, used to halve a word in one operation.
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;
/// Sample counters are striped only when every stripe's share is at least this large, so small
/// sketches age after exactly `sample_size` increments.
const MIN_STRIPE_SHARE: u64 = 4096;
/// Most stripes the sample counter is spread over.
const MAX_STRIPES: u64 = 8;

/// Why a [`FrequencySketchBuilder`] configuration was rejected.
///
/// # Examples
///
/// ```
/// use kvtier_core::{FrequencySketch, SketchConfigError};
///
/// let err = FrequencySketch::builder(0).build().unwrap_err();
/// assert!(matches!(err, SketchConfigError::InvalidCapacity { capacity: 0, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SketchConfigError {
    /// The capacity is zero or above [`MAX_SKETCH_CAPACITY`].
    #[error("invalid sketch capacity {capacity}: must be in 1..={max}")]
    InvalidCapacity {
        /// The rejected capacity, in distinct keys.
        capacity: usize,
        /// The largest accepted capacity.
        max: usize,
    },
    /// The sample size (increments between agings) is zero.
    #[error("invalid sketch sample size 0: must be at least 1")]
    ZeroSampleSize,
}

/// Builds a [`FrequencySketch`].
///
/// # Examples
///
/// ```
/// use kvtier_core::FrequencySketch;
///
/// let sketch = FrequencySketch::builder(1000).with_sample_size(50_000).build()?;
/// assert_eq!(sketch.capacity(), 1024);
/// assert_eq!(sketch.sample_size(), 50_000);
/// # Ok::<(), kvtier_core::SketchConfigError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FrequencySketchBuilder {
    capacity: usize,
    sample_size: Option<u64>,
}

impl FrequencySketchBuilder {
    /// A builder for a sketch tracking about `capacity` distinct keys (rounded up to a power of
    /// two, at least 8; 8 bytes of counters per key).
    pub const fn new(capacity: usize) -> Self {
        Self {
            capacity,
            sample_size: None,
        }
    }

    /// Successful increments between two agings (every counter halved).
    /// Default: 10 x the requested capacity.
    pub const fn with_sample_size(mut self, sample_size: u64) -> Self {
        self.sample_size = Some(sample_size);
        self
    }

    /// Allocates the sketch (all counters zero).
    ///
    /// # Errors
    /// [`SketchConfigError::InvalidCapacity`] if the capacity is zero or above
    /// [`MAX_SKETCH_CAPACITY`]; [`SketchConfigError::ZeroSampleSize`] for a zero sample size.
    pub fn build(self) -> Result<FrequencySketch, SketchConfigError> {
        if self.capacity == 0 || self.capacity > MAX_SKETCH_CAPACITY {
            return Err(SketchConfigError::InvalidCapacity {
                capacity: self.capacity,
                max: MAX_SKETCH_CAPACITY,
            });
        }
        let sample_size = self
            .sample_size
            .unwrap_or_else(|| (self.capacity as u64).saturating_mul(10));
        if sample_size == 0 {
            return Err(SketchConfigError::ZeroSampleSize);
        }
        let words = self.capacity.next_power_of_two().max(BLOCK_WORDS);
        let blocks: Box<[Block]> = (0..words / BLOCK_WORDS).map(|_| Block::default()).collect();
        let stripes = (sample_size / MIN_STRIPE_SHARE).clamp(1, MAX_STRIPES);
        Ok(FrequencySketch {
            // `blocks.len()` is a power of two, so `len - 1` is a mask.
            block_mask: blocks.len() as u64 - 1,
            blocks,
            sample_size,
            stripe_limit: sample_size.div_ceil(stripes),
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
            aging: AtomicBool::new(false),
            halvings: AtomicU64::new(0),
        })
    }
}

/// Eight words of sixteen counters: one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Block([AtomicU64; BLOCK_WORDS]);

/// One share of the sample counter, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

/// Where a key's four counters are: block, then (word, bit shift) per counter, and the stripe
/// its increments are counted in.
#[derive(Clone, Copy)]
struct Slots {
    block: usize,
    counters: [(usize, u32); 4],
    stripe: usize,
}

/// A TinyLFU count-min sketch: approximate access counts (0..=15) for `u64` keys, aged by
/// periodic halving, safe to share between threads without a lock. See the module docs.
///
/// Keys should already be hashes (for blocks: [`crate::SequenceHash::mix64`]); they are mixed
/// again anyway, so small integers work too.
///
/// # Examples
///
/// ```
/// use kvtier_core::FrequencySketch;
///
/// let sketch = FrequencySketch::builder(1024).build()?;
/// for _ in 0..3 {
///     sketch.increment(42);
/// }
/// assert!(sketch.estimate(42) >= 3);
/// sketch.halve();
/// assert!(sketch.estimate(42) <= 2);
/// # Ok::<(), kvtier_core::SketchConfigError>(())
/// ```
#[derive(Debug)]
pub struct FrequencySketch {
    blocks: Box<[Block]>,
    block_mask: u64,
    sample_size: u64,
    stripes: Box<[Stripe]>,
    stripe_limit: u64,
    /// Set while one thread ages the table, so concurrent triggers do not halve twice.
    aging: AtomicBool,
    halvings: AtomicU64,
}

impl FrequencySketch {
    /// A builder for a sketch tracking about `capacity` distinct keys.
    pub const fn builder(capacity: usize) -> FrequencySketchBuilder {
        FrequencySketchBuilder::new(capacity)
    }

    /// Distinct keys the table is sized for (the requested capacity rounded up to a power of
    /// two, at least 8).
    pub fn capacity(&self) -> usize {
        self.blocks.len() * BLOCK_WORDS
    }

    /// Successful increments between two agings.
    pub fn sample_size(&self) -> u64 {
        self.sample_size
    }

    /// Bytes of counters.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.blocks)
    }

    /// How many times the counters have been halved (automatically or by [`Self::halve`]).
    pub fn halvings(&self) -> u64 {
        self.halvings.load(Ordering::Relaxed)
    }

    /// Counts one access of `key`. Raises only the key's minimal counters; saturated keys
    /// (estimate 15) are left alone and do not advance aging.
    #[inline]
    pub fn increment(&self, key: u64) {
        let slots = self.slots(key);
        let words = &self.blocks[slots.block].0;
        let mut values = [0u8; 4];
        for (v, &(w, shift)) in values.iter_mut().zip(&slots.counters) {
            *v = nibble(words[w].load(Ordering::Relaxed), shift);
        }
        let min = values.iter().copied().min().unwrap_or(COUNTER_MAX);
        if min >= COUNTER_MAX {
            return;
        }
        let mut added = false;
        for (&v, &(w, shift)) in values.iter().zip(&slots.counters) {
            if v != min {
                continue;
            }
            // Re-checked inside the CAS: another thread may have raised it meanwhile, in which
            // case this key's minimum already grew and the counter must not grow twice.
            added |= words[w]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                    (nibble(word, shift) <= min).then(|| word + (1u64 << shift))
                })
                .is_ok();
        }
        if added {
            self.count_addition(slots.stripe);
        }
    }

    /// [`Self::increment`] through exclusive access: plain loads and stores, no atomic
    /// read-modify-write. A sketch owned by one policy instance (used under its shard's lock)
    /// counts this way, so the cache misses of consecutive increments can overlap instead of
    /// each waiting behind a locked instruction.
    #[inline]
    pub fn increment_mut(&mut self, key: u64) {
        let slots = self.slots(key);
        let Some(block) = self.blocks.get_mut(slots.block) else {
            return;
        };
        let words = &mut block.0;
        let mut values = [0u8; 4];
        for (v, &(w, shift)) in values.iter_mut().zip(&slots.counters) {
            *v = nibble(*words[w].get_mut(), shift);
        }
        let min = values.iter().copied().min().unwrap_or(COUNTER_MAX);
        if min >= COUNTER_MAX {
            return;
        }
        for (&v, &(w, shift)) in values.iter().zip(&slots.counters) {
            if v == min {
                *words[w].get_mut() += 1u64 << shift;
            }
        }
        let Some(stripe) = self.stripes.get_mut(slots.stripe) else {
            return;
        };
        let n = stripe.0.get_mut();
        *n += 1;
        if *n >= self.stripe_limit {
            self.halve_mut();
        }
    }

    /// [`Self::halve`] through exclusive access.
    fn halve_mut(&mut self) {
        for block in self.blocks.iter_mut() {
            for word in &mut block.0 {
                let w = word.get_mut();
                *w = (*w >> 1) & HALVE_MASK;
            }
        }
        for stripe in self.stripes.iter_mut() {
            *stripe.0.get_mut() /= 2;
        }
        *self.halvings.get_mut() += 1;
    }

    /// The estimated access count of `key` (0..=15): never below the true count since the last
    /// aging (for counts up to 15), above it only by collisions.
    #[inline]
    pub fn estimate(&self, key: u64) -> u8 {
        let slots = self.slots(key);
        let words = &self.blocks[slots.block].0;
        slots
            .counters
            .iter()
            .map(|&(w, shift)| nibble(words[w].load(Ordering::Relaxed), shift))
            .min()
            .unwrap_or(0)
    }

    /// Ages the sketch now: halves every counter (rounding down) and the pending sample count.
    /// This also happens automatically every [`Self::sample_size`] increments.
    pub fn halve(&self) {
        for block in self.blocks.iter() {
            for word in &block.0 {
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some((w >> 1) & HALVE_MASK)
                });
            }
        }
        for stripe in self.stripes.iter() {
            let _ = stripe
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n / 2));
        }
        self.halvings.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one successful increment; the thread that takes a stripe to its limit ages the
    /// table (unless another thread is already doing so).
    #[inline]
    fn count_addition(&self, stripe: usize) {
        let Some(s) = self.stripes.get(stripe) else {
            return;
        };
        let n = s.0.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.stripe_limit
            && self
                .aging
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            self.halve();
            self.aging.store(false, Ordering::Release);
        }
    }

    /// Maps a key to its block, four counters and stripe.
    #[inline]
    fn slots(&self, key: u64) -> Slots {
        let h = fmix64(key);
        // The block comes from the low bits of `h`; everything else from the high bits of a
        // second product, so the counters inside the block are independent of the block.
        let c = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40; // 24 bits
        let counter = |i: u32| {
            let bits = (c >> (5 * i)) & 31;
            let word = 2 * i as usize + (bits & 1) as usize;
            let shift = ((bits >> 1) as u32) * 4;
            (word, shift)
        };
        Slots {
            block: (h & self.block_mask) as usize,
            counters: [counter(0), counter(1), counter(2), counter(3)],
            stripe: ((c >> 20) % self.stripes.len() as u64) as usize,
        }
    }
}

/// The 4-bit counter at `shift` in `word`.
#[inline]
fn nibble(word: u64, shift: u32) -> u8 {
    ((word >> shift) & 0xF) as u8
}

/// MurmurHash3's 64-bit finaliser: a bijective, well-mixed spread of the key.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {

    #[test]
    fn exclusive_increment_matches_the_shared_one() {
        let shared = FrequencySketch::builder(64)
            .with_sample_size(200)
            .build()
            .unwrap();
        let mut owned = FrequencySketch::builder(64)
            .with_sample_size(200)
            .build()
            .unwrap();
        let mut x = 7u64;
        for _ in 0..1_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = x >> 58; // 64 distinct keys, heavily repeated
            shared.increment(key);
            owned.increment_mut(key);
        }
        assert!(owned.halvings() > 0, "aging must have run");
        assert_eq!(shared.halvings(), owned.halvings());
        for key in 0..64 {
            assert_eq!(shared.estimate(key), owned.estimate(key), "key {key}");
        }
    }

    use super::*;

    #[test]
    fn every_nibble_of_every_word_is_reachable() {
        let sketch = FrequencySketch::builder(8)
            .with_sample_size(u64::MAX)
            .build()
            .unwrap();
        let mut seen = [0u16; BLOCK_WORDS];
        for key in 0..4096u64 {
            let s = sketch.slots(key);
            assert_eq!(s.block, 0);
            for (w, shift) in s.counters {
                seen[w] |= 1 << (shift / 4);
            }
        }
        assert_eq!(seen, [u16::MAX; BLOCK_WORDS]);
    }

    #[test]
    fn large_sample_sizes_are_striped() {
        let sketch = FrequencySketch::builder(1 << 20).build().unwrap();
        assert_eq!(sketch.stripes.len() as u64, MAX_STRIPES);
        assert!(sketch.stripe_limit * MAX_STRIPES >= sketch.sample_size());
        let small = FrequencySketch::builder(64).build().unwrap();
        assert_eq!(small.stripes.len(), 1);
        assert_eq!(small.stripe_limit, 640);
    }
}
