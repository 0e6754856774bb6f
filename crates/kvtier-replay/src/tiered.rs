//! [`TieredReplay`]: a trace replayed through two tiers, G2 (the real block manager) above G3 (a
//! logical model of the disk tier), with a [`WritePolicy`] deciding what reaches G3.
//!
//! Per request, with `chain` its keys:
//!
//! ```text
//! g2   = match_blocks(chain)                    leading run cached in G2 (the G2-alone hits)
//! g3   = leading run of chain[g2..] held in     continued below: onboarded from G3
//!        G3 or G2                               (registered in G2); a block G2 still holds past
//!                                               the gap (a policy that is not prefix closed)
//!                                               counts too, as a lookup across tiers would
//! hits = g2 + g3                                combined hits
//! gate.on_hit(each of the g2 + g3 hits)         selective: copy down at the k-th hit
//! allocate + register chain[g2..] in G2         one batch, onboarded blocks and misses alike
//!     evictions  -> gate.on_evicted             write_back candidates
//!     new blocks -> gate.on_registered          write_through candidates
//! release in ReleaseOrder
//! ```
//!
//! A candidate is written to G3 unless G3 already holds it (the real offload path checks
//! presence the same way). G3 evicts FIFO by write order, as [`DiskTier`] does (`slots.rs`:
//! reads do not reorder, a write to a full tier evicts the block written longest ago).
//!
//! # Why G2 is the same under every write policy
//! G2 sees exactly the operations of a G2-alone replay ([`ManagerReplay`](crate::ManagerReplay)
//! with the default policy): the same match, then one allocation and registration of the rest of
//! the chain, whether those blocks come from G3 or are computed. So the G2 hits, G2 evictions and
//! G2 registrations do not depend on G3 or on the policy, and combined ≥ G2 alone holds request
//! by request. (The engine still saves the G3 hits' compute; G2 just cannot tell them apart.)
//!
//! A request longer than G2 (`oversized`) counts its G2 and G3 hits, is not onboarded and
//! registers nothing, as in the G2-alone replay.
//!
//! Deterministic: one thread, the manager's observer events drained after every call.
//!
//! [`DiskTier`]: kvtier_storage::disk::DiskTier

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use kvtier_core::{
    BlockManager, BlockObserver, DuplicationPolicy, G2, ImmutableBlock, SequenceHash,
};
use kvtier_storage::layout::{BlockLayout, Dtype, ModelLayout};
use kvtier_storage::offload::{WriteGate, WritePolicy, WritePolicyError};
use serde::{Deserialize, Serialize};

use crate::{Chains, ManagerReplay, REPLAY_BLOCK_SIZE, ReleaseOrder, ReplayError, infinite};

/// The model whose block size the byte figures assume by default: Llama-3.1-8B (32 layers,
/// 8 KV heads of 128, bf16) with the trace's 512-token blocks, K and V:
/// 2 × 32 × 512 × 8 × 128 × 2 bytes = 64 MiB per block.
pub const DEFAULT_MODEL: ModelLayout = ModelLayout::new(32, REPLAY_BLOCK_SIZE, 8, 128, Dtype::Bf16);

/// Most distinct blocks the selective gate of a tiered replay counts hits for: 2^22 (32 MiB of
/// sketch), whatever the capacities asked for.
pub const MAX_TRACKED_HITS: usize = 1 << 22;

/// Bytes of one block of [`DEFAULT_MODEL`].
pub fn default_block_bytes() -> u64 {
    BlockLayout::from_model(&DEFAULT_MODEL).map_or(0, |l| l.block_bytes() as u64)
}

/// Why a tiered replay could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TieredError {
    /// The G2 manager could not be built.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The write policy or its hit gate was rejected.
    #[error(transparent)]
    Policy(#[from] WritePolicyError),
    /// A zero G3 capacity.
    #[error("G3 capacity must be at least 1 block")]
    ZeroG3,
}

/// One result of a tiered replay: a write policy at one G2 and G3 capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TieredRow {
    /// The write policy (`write_through`, `write_through_selective:K`, `write_back`).
    pub write_policy: String,
    /// Blocks in G2 (the block manager).
    pub g2_capacity: usize,
    /// Blocks in G3 (FIFO by write order).
    pub g3_capacity: usize,
    /// Bytes of one block (what a G3 write costs).
    pub block_bytes: u64,
    /// Requests replayed.
    pub requests: u64,
    /// Blocks requested.
    pub total_blocks: u64,
    /// Hits in G2 alone (the leading run found in G2).
    pub g2_hit_blocks: u64,
    /// Hits of G2 and G3 together (the leading run of blocks found in either).
    pub combined_hit_blocks: u64,
    /// Hits of a cache that keeps every block.
    pub infinite_hit_blocks: u64,
    /// `g2_hit_blocks / total_blocks`.
    pub g2_hit_rate: f64,
    /// `combined_hit_blocks / total_blocks`.
    pub combined_hit_rate: f64,
    /// `infinite_hit_blocks / total_blocks`.
    pub infinite_hit_rate: f64,
    /// Blocks written to G3.
    pub g3_blocks_written: u64,
    /// `g3_blocks_written × block_bytes`.
    pub g3_bytes_written: u64,
    /// Blocks G3 evicted to make room.
    pub g3_evictions: u64,
    /// Blocks G2 evicted (the same under every policy).
    pub g2_evictions: u64,
    /// Blocks registered in G2 (the same under every policy).
    pub g2_registrations: u64,
    /// Bytes written to G3 per hit G3 added (`None` when G3 added no hit).
    pub bytes_per_hit_gained: Option<f64>,
    /// Requests longer than G2: hits counted, nothing onboarded or registered.
    pub oversized: u64,
}

/// A G2 event, as the observer saw it.
#[derive(Clone, Copy, Debug)]
enum Event {
    Registered(SequenceHash),
    Removed(SequenceHash),
}

/// Records G2's observer events for the replay loop to drain in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn take(&self, into: &mut Vec<Event>) {
        let mut events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut events);
    }
}

impl BlockObserver for Recorder {
    fn registered(&self, hash: SequenceHash) {
        self.registered_many(&[hash]);
    }

    fn registered_many(&self, hashes: &[SequenceHash]) {
        let mut events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        events.extend(hashes.iter().map(|&h| Event::Registered(h)));
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        let mut events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        events.extend(hashes.iter().map(|&h| Event::Removed(h)));
    }
}

/// G3's logical model: presence, and FIFO eviction by write order.
#[derive(Debug)]
struct FifoTier {
    capacity: usize,
    present: HashSet<SequenceHash>,
    order: VecDeque<SequenceHash>,
    written: u64,
    evictions: u64,
}

impl FifoTier {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            present: HashSet::new(),
            order: VecDeque::new(),
            written: 0,
            evictions: 0,
        }
    }

    /// Writes `hash` unless it is held; evicts the oldest write when full.
    fn write(&mut self, hash: SequenceHash) {
        if self.present.contains(&hash) {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.present.remove(&old);
            self.evictions += 1;
        }
        self.present.insert(hash);
        self.order.push_back(hash);
        self.written += 1;
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.present.contains(&hash)
    }
}

/// A G2 + G3 replay session under one write policy.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Chains, TieredReplay, SyntheticConfig};
/// use kvtier_storage::offload::WritePolicy;
///
/// let trace = SyntheticConfig { requests: 500, ..SyntheticConfig::default() }.generate();
/// let chains = Chains::from_trace(&trace);
/// let row = TieredReplay::new(200, 2_000, WritePolicy::WriteThrough)?.run(&chains);
/// assert!(row.combined_hit_blocks >= row.g2_hit_blocks);
/// assert!(row.combined_hit_blocks <= row.infinite_hit_blocks);
/// # Ok::<(), kvtier_replay::TieredError>(())
/// ```
#[derive(Debug)]
pub struct TieredReplay {
    g2: BlockManager<G2>,
    recorder: Arc<Recorder>,
    g3: FifoTier,
    gate: WriteGate,
    g2_capacity: usize,
    release: ReleaseOrder,
    block_bytes: u64,
}

impl TieredReplay {
    /// G2 of `g2_capacity` blocks (the block manager in its default configuration, `Reject`
    /// duplicates), G3 of `g3_capacity` blocks, blocks of [`default_block_bytes`], tail-first
    /// release. The selective gate tracks `g2_capacity + g3_capacity` blocks, at most
    /// [`MAX_TRACKED_HITS`].
    ///
    /// G2 gets exactly `g2_capacity` slots (about a hundred bytes each): for a capacity that
    /// comes from a user, use [`for_chains`](Self::for_chains).
    ///
    /// # Errors
    ///
    /// [`TieredError::ZeroG3`]; [`TieredError::Replay`] when G2 cannot be built (zero
    /// capacity); [`TieredError::Policy`] for an invalid selective threshold.
    pub fn new(
        g2_capacity: usize,
        g3_capacity: usize,
        policy: WritePolicy,
    ) -> Result<Self, TieredError> {
        Self::build(g2_capacity, g2_capacity, g3_capacity, policy)
    }

    /// Like [`new`](Self::new), for replaying `chains`: G2 gets at most the trace's distinct
    /// blocks as slots ([`ManagerReplay::effective_capacity`]: with that many nothing is ever
    /// evicted, so a larger G2 replays identically), and rows still report `g2_capacity`. The
    /// numbers are those of `new` at the clamped capacity (the selective gate is sized from it
    /// too); G3 allocates nothing up front.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn for_chains(
        g2_capacity: usize,
        g3_capacity: usize,
        policy: WritePolicy,
        chains: &Chains,
    ) -> Result<Self, TieredError> {
        let slots = ManagerReplay::effective_capacity(g2_capacity, chains);
        Self::build(g2_capacity, slots, g3_capacity, policy)
    }

    fn build(
        g2_capacity: usize,
        slots: usize,
        g3_capacity: usize,
        policy: WritePolicy,
    ) -> Result<Self, TieredError> {
        if g3_capacity == 0 {
            return Err(TieredError::ZeroG3);
        }
        let tracked = slots.saturating_add(g3_capacity).clamp(1, MAX_TRACKED_HITS);
        let gate = WriteGate::new(policy, tracked)?;
        let recorder = Arc::new(Recorder::default());
        let g2 = BlockManager::<G2>::builder()
            .with_block_count(slots)
            .with_block_size(REPLAY_BLOCK_SIZE)
            .with_duplication_policy(DuplicationPolicy::Reject)
            .with_observer(recorder.clone())
            .build()
            .map_err(|source| ReplayError::Build {
                capacity: g2_capacity,
                source,
            })?;
        Ok(Self {
            g2,
            recorder,
            g3: FifoTier::new(g3_capacity),
            gate,
            g2_capacity,
            release: ReleaseOrder::TailFirst,
            block_bytes: default_block_bytes(),
        })
    }

    /// Bytes of one block, for the byte figures. Default: [`default_block_bytes`].
    pub fn with_block_bytes(mut self, block_bytes: u64) -> Self {
        self.block_bytes = block_bytes;
        self
    }

    /// Release order of a request's blocks in G2. Default: [`ReleaseOrder::TailFirst`].
    pub fn with_release(mut self, release: ReleaseOrder) -> Self {
        self.release = release;
        self
    }

    /// The G2 manager (for inspection).
    pub fn g2(&self) -> &BlockManager<G2> {
        &self.g2
    }

    /// Whether G3 holds `hash` now.
    pub fn g3_contains(&self, hash: SequenceHash) -> bool {
        self.g3.contains(hash)
    }

    /// Replays every chain in order and reports the totals.
    pub fn run(mut self, chains: &Chains) -> TieredRow {
        let mut c = Totals::default();
        let mut events = Vec::new();
        for chain in chains.iter() {
            self.serve(chain, &mut c, &mut events);
        }
        let bound = infinite(chains);
        let rate = |n: u64| {
            if bound.total_blocks == 0 {
                0.0
            } else {
                n as f64 / bound.total_blocks as f64
            }
        };
        let gained = c.combined - c.g2;
        let bytes = self.g3.written.saturating_mul(self.block_bytes);
        TieredRow {
            write_policy: self.gate.policy().to_string(),
            g2_capacity: self.g2_capacity,
            g3_capacity: self.g3.capacity,
            block_bytes: self.block_bytes,
            requests: bound.requests,
            total_blocks: bound.total_blocks,
            g2_hit_blocks: c.g2,
            combined_hit_blocks: c.combined,
            infinite_hit_blocks: bound.hit_blocks,
            g2_hit_rate: rate(c.g2),
            combined_hit_rate: rate(c.combined),
            infinite_hit_rate: bound.hit_rate,
            g3_blocks_written: self.g3.written,
            g3_bytes_written: bytes,
            g3_evictions: self.g3.evictions,
            g2_evictions: c.g2_evictions,
            g2_registrations: c.g2_registrations,
            bytes_per_hit_gained: (gained > 0).then(|| bytes as f64 / gained as f64),
            oversized: c.oversized,
        }
    }

    /// Serves one request (see the module docs).
    fn serve(&mut self, chain: &[SequenceHash], c: &mut Totals, events: &mut Vec<Event>) {
        let mut hit = self.g2.match_blocks(chain);
        let g2_hits = hit.len();
        let g3_hits = chain[g2_hits..]
            .iter()
            .take_while(|&&h| self.g3.contains(h) || self.g2.contains(h))
            .count();
        c.g2 += g2_hits as u64;
        c.combined += (g2_hits + g3_hits) as u64;
        for &h in &chain[..g2_hits + g3_hits] {
            if self.gate.on_hit(h) {
                self.g3.write(h);
            }
        }
        let mut fresh = Vec::new();
        if chain.len() > self.g2_capacity {
            c.oversized += 1;
        } else if g2_hits < chain.len() {
            let tail = &chain[g2_hits..];
            // Cannot fail: one request at a time, everything else released, len <= capacity.
            if let Ok(blocks) = self.g2.allocate_blocks(tail.len()) {
                let block_size = self.g2.block_size();
                let staged = blocks
                    .into_iter()
                    .zip(tail)
                    .filter_map(|(b, &h)| b.stage(h, block_size).ok())
                    .collect();
                fresh = self.g2.register_blocks(staged).unwrap_or_default();
            }
        }
        self.apply_events(c, events);
        self.release(&mut hit, &mut fresh);
        // Releasing can remove blocks too (a policy that drops on release).
        self.apply_events(c, events);
    }

    /// Drains G2's observer events in order through the gate into G3.
    fn apply_events(&mut self, c: &mut Totals, events: &mut Vec<Event>) {
        self.recorder.take(events);
        for e in events.drain(..) {
            match e {
                Event::Registered(h) => {
                    c.g2_registrations += 1;
                    if self.gate.on_registered(h) {
                        self.g3.write(h);
                    }
                }
                Event::Removed(h) => {
                    c.g2_evictions += 1;
                    if self.gate.on_evicted(h) {
                        self.g3.write(h);
                    }
                }
            }
        }
    }

    fn release(&self, prefix: &mut Vec<ImmutableBlock<G2>>, tail: &mut Vec<ImmutableBlock<G2>>) {
        let (prefix, tail) = (std::mem::take(prefix), std::mem::take(tail));
        match self.release {
            ReleaseOrder::TailFirst => self
                .g2
                .release_blocks(tail.into_iter().rev().chain(prefix.into_iter().rev())),
            ReleaseOrder::RootFirst => self.g2.release_blocks(prefix.into_iter().chain(tail)),
        }
    }
}

/// Counters of one tiered replay.
#[derive(Debug, Default)]
struct Totals {
    g2: u64,
    combined: u64,
    g2_evictions: u64,
    g2_registrations: u64,
    oversized: u64,
}
