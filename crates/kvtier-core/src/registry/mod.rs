//! [`Registry`]: the index shared by the managers of every tier — which tiers hold each
//! sequence hash, typed attachments on a hash, touch callbacks and optional frequency counting.
//!
//! The registry owns no blocks. Each tier's [`BlockManager`](crate::BlockManager) reports its
//! registrations and removals through the [`BlockObserver`] returned by
//! [`Registry::observer`], and the registry answers cross-tier questions from that shadow:
//! "which tiers hold this hash?", "how long a prefix of this chain is cached anywhere?".
//!
//! ```text
//!   BlockManager<G1> --observer::<G1>()--.
//!   BlockManager<G2> --observer::<G2>()--+--> Registry shards: hash -> Entry
//!   BlockManager<G3> --observer::<G3>()--'      Entry = presence counts (u64 bits)
//!                                                     + Option<Box<counts overflow, attachments>>
//! ```
//!
//! Storage is `2^k` shards, each a [`parking_lot::RwLock`] over a `SeqHashMap<SequenceHash,
//! Entry>`, the shard chosen by bits of [`SequenceHash::mix64`]. Reads take a read lock of one
//! shard and create nothing. An entry that is only present somewhere is 16 bytes beside its key
//! with no allocation of its own; a box is allocated only for attachments or an unusual
//! presence count (see `entry.rs`). Tiers are bits of a `u64` (see [`TierId`]).
//!
//! # Consistency
//! Presence is a *shadow* of the managers: an observer is called after the manager released its
//! own lock, so a query racing a registration or an eviction may see the previous state.
//! Presence is kept as a count per tier (+1 registered, −1 removed), so notifications that
//! arrive out of order still cancel out: once the managers are quiet, "present in `T`" equals
//! "some `BlockManager<T>` using this registry's observer contains the hash". Several managers
//! of one tier may share a registry; a hash is present in the tier while any of them holds it.
//!
//! # Lock ordering
//! 1. A registry shard lock is a leaf. While one is held, no other lock is taken (no second
//!    shard, no manager lock, not the tier table, not the callback list) and no user code runs:
//!    not touch callbacks, not attachment closures, not a value's `Clone` or `Drop` (replaced,
//!    detached and evicted attachments are released after unlocking).
//! 2. Managers call observers after releasing their shard lock, so manager and registry locks
//!    never nest either way.
//! 3. The touch-callback list lock is held only to copy an `Arc` of the list; callbacks run with
//!    no lock held and may call back into the registry (including [`Registry::on_touch`]).

mod attachments;
mod builder;
mod entry;
mod prefix;
mod tiers;

pub use attachments::{AttachMode, AttachmentError};
pub use builder::{MAX_REGISTRY_SHARDS, RegistryBuildError, RegistryBuilder};
pub use prefix::PrefixMatch;
pub use tiers::{MAX_TIERS, TierError, TierId, TierSet};

use std::fmt;

use crate::sync::RwLock;
use hashbrown::hash_map::Entry as MapEntry;

use crate::registry::entry::{Attached, Entry};
use crate::sync::Arc;
use crate::{BlockObserver, FrequencyTracker, SeqHashMap, SequenceHash, Tier};

/// A callback run by [`Registry::touch`] for each touched hash.
pub type TouchCallback = Arc<dyn Fn(SequenceHash) + Send + Sync>;

/// The shared cross-tier index. A cheap `Clone` handle (`Send + Sync`).
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockManager, G1, G2, Registry, SequenceHash};
///
/// let registry = Registry::new();
/// let g1 = BlockManager::<G1>::builder()
///     .with_block_count(8)
///     .with_observer(registry.observer::<G1>()?)
///     .build()?;
/// let g2 = BlockManager::<G2>::builder()
///     .with_block_count(8)
///     .with_observer(registry.observer::<G2>()?)
///     .build()?;
///
/// let chain = [SequenceHash::root(1), SequenceHash::child_of(SequenceHash::root(1), 2)];
/// let b = g1.allocate_blocks(1)?.pop().unwrap().stage(chain[0], g1.block_size())?;
/// let _b0 = g1.register_block(b).unwrap();
/// let b = g2.allocate_blocks(1)?.pop().unwrap().stage(chain[1], g2.block_size())?;
/// let _b1 = g2.register_block(b).unwrap();
///
/// assert!(registry.is_present::<G1>(chain[0]) && !registry.is_present::<G2>(chain[0]));
/// let m = registry.longest_prefix_any(&chain);
/// assert_eq!(m.len(), 2); // split across G1 and G2
/// assert_eq!(m.prefix_len_in::<G1>(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Keeps each shard lock on its own cache line.
#[repr(align(64))]
struct Padded<T>(T);

struct Inner {
    shards: Box<[Padded<RwLock<Shard>>]>,
    mask: usize,
    callbacks: RwLock<Arc<[TouchCallback]>>,
    tracker: Option<Arc<dyn FrequencyTracker>>,
}

#[derive(Default)]
struct Shard {
    map: SeqHashMap<SequenceHash, Entry>,
    /// Entries present in at least one tier.
    present: usize,
}

impl Shard {
    /// Adds `delta` to `tier`'s presence count of `hash`. Returns the attachments to drop
    /// (after unlocking) when the update leaves the hash in no tier.
    fn update(&mut self, hash: SequenceHash, tier: TierId, delta: i32) -> Vec<Attached> {
        let tier = tier.index() as u8;
        let mut dropped = Vec::new();
        match self.map.entry(hash) {
            MapEntry::Occupied(mut o) => {
                let e = o.get_mut();
                let was = e.mask() != 0;
                e.adjust(tier, delta);
                let now = e.mask() != 0;
                if !now && e.has_attachments() {
                    dropped = e.take_attachments();
                }
                if e.is_vacant() {
                    o.remove();
                }
                match (was, now) {
                    (false, true) => self.present += 1,
                    (true, false) => self.present -= 1,
                    _ => {}
                }
            }
            MapEntry::Vacant(v) => {
                let mut e = Entry::EMPTY;
                e.adjust(tier, delta);
                if e.mask() != 0 {
                    self.present += 1;
                }
                if !e.is_vacant() {
                    v.insert(e);
                }
            }
        }
        dropped
    }
}

impl Inner {
    #[inline]
    fn shard(&self, hash: SequenceHash) -> &RwLock<Shard> {
        &self.shards[(hash.mix64() >> 32) as usize & self.mask].0
    }

    #[inline]
    fn update(&self, hash: SequenceHash, tier: TierId, delta: i32) {
        let dropped = self.shard(hash).write().update(hash, tier, delta);
        // Attachment values drop here, after the shard lock is released.
        drop(dropped);
    }

    #[inline]
    fn mask_of(&self, hash: SequenceHash) -> u64 {
        self.shard(hash)
            .read()
            .map
            .get(&hash)
            .map_or(0, Entry::mask)
    }
}

/// The [`BlockObserver`] that marks one tier's presence.
struct PresenceObserver {
    inner: Arc<Inner>,
    tier: TierId,
}

impl BlockObserver for PresenceObserver {
    #[inline]
    fn registered(&self, hash: SequenceHash) {
        self.inner.update(hash, self.tier, 1);
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        for &h in hashes {
            self.inner.update(h, self.tier, -1);
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("shards", &self.shard_count())
            .field("len", &self.len())
            .field("frequency_tracking", &self.inner.tracker.is_some())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry with the default configuration (see [`RegistryBuilder`]).
    pub fn new() -> Self {
        Self::from_parts(builder::default_shards().next_power_of_two(), None)
    }

    /// A builder for a registry with non-default settings.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// `shards` must be a power of two.
    fn from_parts(shards: usize, tracker: Option<Arc<dyn FrequencyTracker>>) -> Self {
        debug_assert!(shards.is_power_of_two());
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Padded(RwLock::new(Shard::default())))
                    .collect(),
                mask: shards - 1,
                callbacks: RwLock::new(Arc::from(Vec::new())),
                tracker,
            }),
        }
    }

    /// Number of independently locked shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// An observer that marks hashes present in tier `T` as a manager registers them and absent
    /// as it removes them. Pass it to
    /// [`BlockManagerBuilder::with_observer`](crate::BlockManagerBuilder::with_observer) of the
    /// `BlockManager<T>`. The observer keeps the registry's shared state alive.
    ///
    /// # Errors
    ///
    /// [`TierError::Exhausted`] when `T` is a new tier type and [`MAX_TIERS`] tier types already
    /// have indices (never for `G1`..`G4`).
    pub fn observer<T: Tier>(&self) -> Result<Arc<dyn BlockObserver>, TierError> {
        let tier = TierId::get_or_assign::<T>()?;
        Ok(Arc::new(PresenceObserver {
            inner: self.inner.clone(),
            tier,
        }))
    }

    /// Whether tier `T` holds `hash`.
    pub fn is_present<T: Tier>(&self, hash: SequenceHash) -> bool {
        TierId::of::<T>().is_some_and(|id| self.inner.mask_of(hash) & id.bit() != 0)
    }

    /// Whether any tier holds `hash`.
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.inner.mask_of(hash) != 0
    }

    /// The tiers holding `hash`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Registry, SequenceHash, TierSet};
    ///
    /// let registry = Registry::new();
    /// assert_eq!(registry.present_tiers(SequenceHash::root(5)), TierSet::EMPTY);
    /// ```
    pub fn present_tiers(&self, hash: SequenceHash) -> TierSet {
        TierSet::from_bits(self.inner.mask_of(hash))
    }

    /// For each of `hashes`, whether tier `T` holds it (aligned with the input).
    pub fn check_presence<T: Tier>(&self, hashes: &[SequenceHash]) -> Vec<bool> {
        match TierId::of::<T>() {
            None => vec![false; hashes.len()],
            Some(id) => hashes
                .iter()
                .map(|&h| self.inner.mask_of(h) & id.bit() != 0)
                .collect(),
        }
    }

    /// The longest prefix of `hashes` of which every block is held by at least one tier,
    /// stopping at the first hash no tier holds, with the tiers of each position. Read-only:
    /// touches nothing.
    pub fn longest_prefix_any(&self, hashes: &[SequenceHash]) -> PrefixMatch {
        let mut tiers = Vec::new();
        for &h in hashes {
            let m = self.inner.mask_of(h);
            if m == 0 {
                break;
            }
            tiers.push(TierSet::from_bits(m));
        }
        PrefixMatch::from_tiers(tiers)
    }

    /// Number of hashes held by at least one tier (hashes that only carry attachments are not
    /// counted). Exact when no observer is running.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.0.read().present).sum()
    }

    /// Whether no tier holds any hash.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a callback that [`touch`](Self::touch) runs for every touched hash. Callbacks run
    /// on the touching thread with no registry lock held, in the order they were added.
    pub fn on_touch(&self, callback: TouchCallback) {
        let mut list = self.inner.callbacks.write();
        let mut next: Vec<TouchCallback> = list.iter().cloned().collect();
        next.push(callback);
        *list = Arc::from(next);
    }

    /// Records an access of each of `hashes`: counts it into the frequency tracker (if any) and
    /// runs every [`on_touch`](Self::on_touch) callback with it. Hashes need not be present in
    /// any tier. No lock is held while callbacks run, so they may call the registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use kvtier_core::{Registry, SequenceHash};
    ///
    /// let registry = Registry::new();
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// registry.on_touch(Arc::new(move |_h| { s.fetch_add(1, Ordering::Relaxed); }));
    /// registry.touch(&[SequenceHash::root(1), SequenceHash::root(2)]);
    /// assert_eq!(seen.load(Ordering::Relaxed), 2);
    /// ```
    pub fn touch(&self, hashes: &[SequenceHash]) {
        if let Some(t) = &self.inner.tracker {
            for h in hashes {
                t.touch(h.mix64());
            }
        }
        let callbacks = self.inner.callbacks.read().clone();
        for &h in hashes {
            for cb in callbacks.iter() {
                cb(h);
            }
        }
    }

    /// The frequency tracker's estimate for `hash`; 0 without a tracker.
    pub fn frequency(&self, hash: SequenceHash) -> u32 {
        self.inner
            .tracker
            .as_ref()
            .map_or(0, |t| t.count(hash.mix64()))
    }

    /// The frequency tracker, if one was configured.
    pub fn frequency_tracker(&self) -> Option<&Arc<dyn FrequencyTracker>> {
        self.inner.tracker.as_ref()
    }
}
