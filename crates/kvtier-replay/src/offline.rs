//! Offline bounds: [`Belady`]'s optimum under the manager's constraints, and [`infinite`].
//!
//! # The constraints Belady is held to
//! They are the block manager's, so that the gap between an online policy and this bound is
//! the policy's own doing:
//! - no prefetch: a block enters the cache only when a request asks for it;
//! - all blocks of the request being served are resident together (they are pinned), and every
//!   resident block counts against the capacity;
//! - a request with more blocks than the capacity has its hits counted and caches nothing
//!   (the manager replay skips it the same way);
//! - the victim is the unpinned block whose next use is furthest in the future, ties broken
//!   deepest position first (then by key number, for determinism).
//!
//! Because an id implies its prefix, a block's next use is never earlier than its parent's, and
//! the deepest-first tie break keeps the cache prefix-closed: a cached block's parent is cached.
//! So "blocks present" equals "leading run of hits".
//!
//! # When it is the optimum
//! When no request is longer than the capacity, furthest-next-use is optimal for this metric
//! (the tests check it against an exhaustive search). An oversized request reads without
//! caching, which breaks the exchange argument: keeping a block for an oversized reader can
//! be worth a miss elsewhere (`tests/optimality.rs` has a five-request example). With
//! oversized requests the result is a strong heuristic that can sit slightly below the true
//! optimum; replay reports count them (`oversized`) so such rows can be told apart.
//!
//! The victim order is a `BTreeSet` of `(next use, position, key)`; each served block is
//! removed while pinned and re-inserted with its new next use, so a request costs
//! O(blocks · log cached).

use std::collections::BTreeSet;
use std::time::Instant;

use crate::row::{Counts, Ticker};
use crate::{Chains, ReplayRow};

/// "Never used again".
const NEVER: u32 = u32::MAX;

/// Belady's offline optimum (MIN) for one trace, reusable across capacities.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Belady, Chains, ParseMode, Trace};
///
/// let text = "{\"hash_ids\": [0, 1]}\n{\"hash_ids\": [2]}\n{\"hash_ids\": [3]}\n{\"hash_ids\": [0, 1]}\n";
/// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
/// let belady = Belady::new(&chains);
/// // With room for three blocks, [3] evicts [2] (never used again), not the older [0, 1].
/// let row = belady.run(3);
/// assert_eq!(row.hit_blocks, 2);
/// assert_eq!(row.policy, "belady");
/// ```
#[derive(Debug)]
pub struct Belady<'a> {
    chains: &'a Chains,
    /// For flat key slot `k` of request `r`: the next request after `r` that asks for the same
    /// key, or [`NEVER`].
    next_use: Vec<u32>,
}

impl<'a> Belady<'a> {
    /// Precomputes every block's next use (not part of the timed loop).
    ///
    /// # Panics
    ///
    /// When the trace has `u32::MAX` or more requests.
    pub fn new(chains: &'a Chains) -> Self {
        assert!(chains.len() < NEVER as usize, "too many requests");
        let mut next_use = vec![NEVER; chains.total_blocks() as usize];
        let mut last = vec![NEVER; chains.unique()];
        for r in (0..chains.len()).rev() {
            let off = chains.offset(r);
            let dense = chains.dense_chain(r);
            for (i, &d) in dense.iter().enumerate() {
                next_use[off + i] = last[d as usize];
            }
            for &d in dense {
                last[d as usize] = r as u32;
            }
        }
        Self { chains, next_use }
    }

    /// Replays the trace at `capacity` blocks.
    pub fn run(&self, capacity: usize) -> ReplayRow {
        self.run_with_progress(capacity, &mut |_| {})
    }

    /// As [`run`](Self::run), calling `progress(n)` after every `n` requests served
    /// (every [`PROGRESS_EVERY`](crate::PROGRESS_EVERY)).
    pub fn run_with_progress(&self, capacity: usize, progress: &mut dyn FnMut(u64)) -> ReplayRow {
        let chains = self.chains;
        // Current (next use) of each cached key; `cached[d]` says whether it is resident.
        let mut next_of = vec![NEVER; chains.unique()];
        let mut cached = vec![false; chains.unique()];
        let mut resident = 0usize;
        let mut order: BTreeSet<(u32, u32, u32)> = BTreeSet::new();
        let mut counts = Counts::default();
        let mut ticker = Ticker::new(progress);

        let start = Instant::now();
        for r in 0..chains.len() {
            let dense = chains.dense_chain(r);
            let next = &self.next_use[chains.offset(r)..chains.offset(r) + dense.len()];
            let hits = dense.iter().take_while(|&&d| cached[d as usize]).count();
            counts.requests += 1;
            counts.total_blocks += dense.len() as u64;
            counts.hit_blocks += hits as u64;

            // Pin the request's resident blocks: out of the victim order.
            let mut present = 0usize;
            for (i, &d) in dense.iter().enumerate() {
                if cached[d as usize] {
                    order.remove(&(next_of[d as usize], i as u32, d));
                    present += 1;
                }
            }
            if dense.len() > capacity {
                counts.oversized += 1;
                // Nothing is cached for it, but its resident blocks were used: re-key them.
                for (i, &d) in dense.iter().enumerate() {
                    if cached[d as usize] {
                        next_of[d as usize] = next[i];
                        order.insert((next[i], i as u32, d));
                    }
                }
                ticker.tick();
                continue;
            }
            let missing = dense.len() - present;
            while resident + missing > capacity {
                let (_, _, victim) = order
                    .pop_last()
                    .expect("capacity >= request length leaves an unpinned victim");
                cached[victim as usize] = false;
                resident -= 1;
            }
            for (i, &d) in dense.iter().enumerate() {
                if !cached[d as usize] {
                    cached[d as usize] = true;
                    resident += 1;
                }
                next_of[d as usize] = next[i];
                order.insert((next[i], i as u32, d));
            }
            ticker.tick();
        }
        let wall = start.elapsed();
        ticker.finish();
        counts.into_row("belady", Some(capacity), wall)
    }
}

/// The infinite-capacity bound: every block ever requested stays cached. Its row has
/// `capacity: None` and policy `infinite`.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Chains, ParseMode, Trace, infinite};
///
/// let text = "{\"hash_ids\": [0, 1]}\n{\"hash_ids\": [0, 2]}\n";
/// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
/// let row = infinite(&chains);
/// assert_eq!((row.hit_blocks, row.total_blocks), (1, 4));
/// assert_eq!(row.capacity, None);
/// ```
pub fn infinite(chains: &Chains) -> ReplayRow {
    let mut seen = vec![false; chains.unique()];
    let mut counts = Counts::default();
    let start = Instant::now();
    for r in 0..chains.len() {
        let dense = chains.dense_chain(r);
        let hits = dense.iter().take_while(|&&d| seen[d as usize]).count();
        counts.requests += 1;
        counts.total_blocks += dense.len() as u64;
        counts.hit_blocks += hits as u64;
        for &d in dense {
            seen[d as usize] = true;
        }
    }
    counts.into_row("infinite", None, start.elapsed())
}
