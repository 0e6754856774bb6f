//! [`ManagerReplay`]: replays chains through a real [`BlockManager`], one request at a time.
//!
//! Per request, the way an inference engine drives its prefix cache:
//!
//! ```text
//! hits  = match_blocks(chain)                 leading run found (resurrected to active)
//! if chain.len() > capacity:                  "oversized": count hits, allocate nothing
//!     release(hits)
//! else:
//!     new = allocate_blocks(len - hits)       reset pool first, then policy evictions
//!           .stage(key).register()            DuplicationPolicy::Reject: a key still registered
//!                                             after the gap reuses the existing block
//!     release(hits + new) in ReleaseOrder     last strong reference dropped -> inactive pool
//! ```
//!
//! The manager is built in the block manager's default configuration (its default shard
//! count, which a policy needing a global view forces to 1), so a replay reports what a
//! deployment gets; [`ManagerReplayBuilder::with_shards`] picks another shard count (1 gives the
//! policy's exact single eviction order). Rows name the shard count the manager was built with
//! ([`ReplayRow::shards`]). [`ManagerReplayBuilder::with_slots_for`] sizes the manager by the
//! trace: a cache with room for every distinct block of the trace never evicts, so any larger
//! capacity replays exactly like that one and memory follows the trace, not the capacity asked
//! for. All handles are released before the next request, so after a replay every slot is free
//! or inactive (`available_blocks() == total_blocks()`).

use std::time::Instant;

use kvtier_core::{BlockManager, DuplicationPolicy, G1, ImmutableBlock, MAX_SHARDS, SequenceHash};

use crate::row::{Counts, Ticker};
use crate::{Chains, NamedPolicy, ReplayRow};

/// Tokens per block of the replay manager (Mooncake traces use 512-token blocks). Block size
/// does not change hit rates; it is recorded so staged blocks match the manager.
pub const REPLAY_BLOCK_SIZE: usize = 512;

/// In which order a request's blocks are released (become evictable) after it is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleaseOrder {
    /// Deepest block first, root last (the default). This is what vLLM does: a request's last
    /// block is rarely reused, so it should be the first to become evictable, and shared
    /// roots stay the most recently released.
    #[default]
    TailFirst,
    /// Root first, deepest last: the naive order, which makes order-by-release policies evict
    /// shared prefixes before their private tails.
    RootFirst,
}

impl ReleaseOrder {
    /// `tail-first` or `root-first`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TailFirst => "tail-first",
            Self::RootFirst => "root-first",
        }
    }
}

impl std::str::FromStr for ReleaseOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tail-first" => Ok(Self::TailFirst),
            "root-first" => Ok(Self::RootFirst),
            other => Err(format!(
                "unknown release order {other:?} (expected tail-first or root-first)"
            )),
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The manager could not be built (for example a zero capacity).
    #[error("cannot build a {capacity}-block manager: {source}")]
    Build {
        /// Requested capacity.
        capacity: usize,
        /// The builder's error.
        #[source]
        source: kvtier_core::BuildError,
    },
    /// The shard count asked for is outside what the block manager accepts.
    #[error("shard count {shards} is outside 1..={max} (the block manager's MAX_SHARDS)")]
    InvalidShards {
        /// Requested shard count.
        shards: usize,
        /// Largest accepted count ([`MAX_SHARDS`]).
        max: usize,
    },
}

/// What serving one request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// Leading run of the chain found cached.
    pub hits: usize,
    /// Whether the request exceeded the capacity (nothing was allocated).
    pub oversized: bool,
}

/// Chooses the manager a [`ManagerReplay`] drives: policy, capacity, release order, shard
/// count, and whether the slots are clamped to a trace's distinct blocks.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Chains, ManagerReplay, ParseMode, ReleaseOrder, Trace, policy};
///
/// let text = "{\"hash_ids\": [0, 1, 2]}\n{\"hash_ids\": [0, 1, 3]}\n";
/// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
/// let mut replay = ManagerReplay::builder(&policy("lru").unwrap(), 8)
///     .with_release(ReleaseOrder::RootFirst)
///     .with_shards(2)
///     .build()
///     .unwrap();
/// assert_eq!(replay.shards(), 2);
/// let row = replay.run(&chains);
/// assert_eq!((row.hit_blocks, row.shards), (2, Some(2)));
///
/// let err = ManagerReplay::builder(&policy("lru").unwrap(), 8).with_shards(0).build();
/// assert!(err.is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ManagerReplayBuilder {
    policy: NamedPolicy,
    capacity: usize,
    slots: usize,
    release: ReleaseOrder,
    shards: Option<usize>,
}

impl ManagerReplayBuilder {
    /// Release order of a request's blocks. Default [`ReleaseOrder::TailFirst`].
    pub fn with_release(mut self, release: ReleaseOrder) -> Self {
        self.release = release;
        self
    }

    /// Shard count of the manager, in `1..=MAX_SHARDS` (the block manager rounds it up to a
    /// power of two, caps it by the capacity, and forces 1 for a policy that needs a global
    /// view). Default: the block manager's own default
    /// ([`BlockManagerBuilder::with_shards`](kvtier_core::BlockManagerBuilder::with_shards)).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Sizes the manager for replaying `chains`: it gets
    /// [`effective_capacity`](ManagerReplay::effective_capacity) slots (never more than the
    /// trace's distinct blocks) while rows still report the capacity asked for. Use it when the
    /// capacity comes from a user: `capacity = 1_000_000_000` then costs what the trace costs.
    /// Default: exactly `capacity` slots.
    pub fn with_slots_for(mut self, chains: &Chains) -> Self {
        self.slots = ManagerReplay::effective_capacity(self.capacity, chains);
        self
    }

    /// Builds the manager (`Reject` duplication) with a fresh factory from the policy.
    ///
    /// # Errors
    ///
    /// [`ReplayError::InvalidShards`] for a shard count outside `1..=MAX_SHARDS`;
    /// [`ReplayError::Build`] when the manager rejects the configuration (zero capacity).
    pub fn build(self) -> Result<ManagerReplay, ReplayError> {
        if let Some(shards) = self.shards
            && !(1..=MAX_SHARDS).contains(&shards)
        {
            return Err(ReplayError::InvalidShards {
                shards,
                max: MAX_SHARDS,
            });
        }
        let mut builder = BlockManager::<G1>::builder()
            .with_block_count(self.slots)
            .with_block_size(REPLAY_BLOCK_SIZE)
            .with_policy(self.policy.factory(self.slots))
            .with_duplication_policy(DuplicationPolicy::Reject);
        if let Some(shards) = self.shards {
            builder = builder.with_shards(shards);
        }
        let manager = builder.build().map_err(|source| ReplayError::Build {
            capacity: self.capacity,
            source,
        })?;
        Ok(ManagerReplay {
            manager,
            policy: self.policy.name().to_string(),
            capacity: self.capacity,
            release: self.release,
        })
    }
}

/// A replay session over one freshly built manager.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Chains, ManagerReplay, ParseMode, ReleaseOrder, Trace, policy};
///
/// let text = "{\"hash_ids\": [0, 1, 2]}\n{\"hash_ids\": [0, 1, 3]}\n";
/// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
/// let mut replay = ManagerReplay::new(&policy("lru").unwrap(), 8, ReleaseOrder::TailFirst).unwrap();
/// let row = replay.run(&chains);
/// assert_eq!((row.hit_blocks, row.total_blocks), (2, 6));
/// assert_eq!(row.shards, Some(replay.shards()));
/// assert_eq!(replay.manager().available_blocks(), 8); // nothing leaked
/// ```
#[derive(Debug)]
pub struct ManagerReplay {
    manager: BlockManager<G1>,
    policy: String,
    capacity: usize,
    release: ReleaseOrder,
}

impl ManagerReplay {
    /// A builder for a manager of `capacity` blocks evicting with `policy`; every other setting
    /// at its default (tail-first release, the block manager's default shard count, exactly
    /// `capacity` slots).
    pub fn builder(policy: &NamedPolicy, capacity: usize) -> ManagerReplayBuilder {
        ManagerReplayBuilder {
            policy: policy.clone(),
            capacity,
            slots: capacity,
            release: ReleaseOrder::default(),
            shards: None,
        }
    }

    /// Builds a `Reject`-duplication manager of `capacity` blocks in the block manager's default
    /// shard configuration, with a fresh factory from `policy`: shorthand for
    /// [`builder`](Self::builder)`(policy, capacity).with_release(release).build()`.
    ///
    /// The manager holds `capacity` slots (about a hundred bytes each) whatever the trace: for a
    /// capacity that comes from a user, use [`for_chains`](Self::for_chains).
    ///
    /// # Errors
    ///
    /// [`ReplayError::Build`] when the manager rejects the configuration (zero capacity).
    pub fn new(
        policy: &NamedPolicy,
        capacity: usize,
        release: ReleaseOrder,
    ) -> Result<Self, ReplayError> {
        Self::builder(policy, capacity)
            .with_release(release)
            .build()
    }

    /// Like [`new`](Self::new), for replaying `chains`: the manager gets
    /// [`effective_capacity`](Self::effective_capacity) slots (never more than the trace's
    /// distinct blocks), and rows still report `capacity`
    /// ([`ManagerReplayBuilder::with_slots_for`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_replay::{Chains, ManagerReplay, ParseMode, ReleaseOrder, Trace, policy};
    ///
    /// let text = "{\"hash_ids\": [0, 1, 2]}\n{\"hash_ids\": [0, 1, 3]}\n";
    /// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
    /// let lru = policy("lru").unwrap();
    /// let mut huge =
    ///     ManagerReplay::for_chains(&lru, 1_000_000_000, ReleaseOrder::TailFirst, &chains).unwrap();
    /// assert_eq!(huge.manager().total_blocks(), 4); // the trace's distinct blocks
    /// let row = huge.run(&chains);
    /// assert_eq!(row.capacity, Some(1_000_000_000));
    /// assert_eq!(row.hit_blocks, 2);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn for_chains(
        policy: &NamedPolicy,
        capacity: usize,
        release: ReleaseOrder,
        chains: &Chains,
    ) -> Result<Self, ReplayError> {
        Self::builder(policy, capacity)
            .with_release(release)
            .with_slots_for(chains)
            .build()
    }

    /// The slots a replay of `chains` at `capacity` needs: `capacity`, but at most the number of
    /// distinct blocks of the trace (at least 1). With that many slots nothing is ever evicted
    /// (a request is never longer than the trace's distinct blocks, and without evictions the
    /// cached blocks plus a request's missing tail are distinct blocks of the trace), so a
    /// larger cache replays identically.
    pub fn effective_capacity(capacity: usize, chains: &Chains) -> usize {
        if capacity == 0 {
            return 0;
        }
        capacity.min(chains.unique().max(1))
    }

    /// The manager being driven (for inspection: metrics, available blocks).
    pub fn manager(&self) -> &BlockManager<G1> {
        &self.manager
    }

    /// The shard count the manager was built with (after rounding, capping and the policy's
    /// own constraint), as rows report it.
    pub fn shards(&self) -> usize {
        self.manager.shard_count()
    }

    /// Serves one request whose chain is `chain` and releases it. See the module docs.
    pub fn serve(&mut self, chain: &[SequenceHash]) -> Served {
        let m = &self.manager;
        let mut hit = m.match_blocks(chain);
        let hits = hit.len();
        if chain.len() > self.capacity {
            self.release_all(&mut hit, &mut Vec::new());
            return Served {
                hits,
                oversized: true,
            };
        }
        let tail = &chain[hits..];
        let mut fresh = Vec::new();
        if !tail.is_empty() {
            // Cannot fail: one request at a time, everything else released, len <= capacity.
            if let Ok(blocks) = m.allocate_blocks(tail.len()) {
                let block_size = m.block_size();
                let staged = blocks
                    .into_iter()
                    .zip(tail)
                    .filter_map(|(b, &h)| b.stage(h, block_size).ok())
                    .collect();
                // Our own blocks: registration cannot be refused.
                fresh = m.register_blocks(staged).unwrap_or_default();
            }
        }
        self.release_all(&mut hit, &mut fresh);
        Served {
            hits,
            oversized: false,
        }
    }

    /// Releases the handles of one request in one batch: `prefix` (matched) then `tail` (new)
    /// is the chain order.
    fn release_all(
        &self,
        prefix: &mut Vec<ImmutableBlock<G1>>,
        tail: &mut Vec<ImmutableBlock<G1>>,
    ) {
        let (prefix, tail) = (std::mem::take(prefix), std::mem::take(tail));
        match self.release {
            ReleaseOrder::TailFirst => self
                .manager
                .release_blocks(tail.into_iter().rev().chain(prefix.into_iter().rev())),
            ReleaseOrder::RootFirst => self.manager.release_blocks(prefix.into_iter().chain(tail)),
        }
    }

    /// Replays every chain in order.
    pub fn run(&mut self, chains: &Chains) -> ReplayRow {
        self.run_with_progress(chains, &mut |_| {})
    }

    /// As [`run`](Self::run), calling `progress(n)` after every `n` requests served
    /// (every [`PROGRESS_EVERY`](crate::PROGRESS_EVERY)). Only this loop is timed.
    pub fn run_with_progress(
        &mut self,
        chains: &Chains,
        progress: &mut dyn FnMut(u64),
    ) -> ReplayRow {
        let mut counts = Counts::default();
        let mut ticker = Ticker::new(progress);
        let start = Instant::now();
        for chain in chains.iter() {
            let s = self.serve(chain);
            counts.requests += 1;
            counts.total_blocks += chain.len() as u64;
            counts.hit_blocks += s.hits as u64;
            counts.oversized += u64::from(s.oversized);
            ticker.tick();
        }
        let wall = start.elapsed();
        ticker.finish();
        let mut row = counts.into_row(&self.policy, Some(self.capacity), wall);
        row.shards = Some(self.shards());
        row
    }
}
