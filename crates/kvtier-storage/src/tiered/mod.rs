//! A composition of tiers, fastest first, with a policy: [`TieredStore`].
//!
//! Modelled on Pingora's tiered cache storage (learned from, not copied). What it does:
//!
//! - **Byte gates.** Each tier has a gate ([`TierConfig::with_gate_bytes`]): a block larger
//!   than the gate never stays there. A write ([`TieredStore::writer`]) fans out to every tier
//!   at once, and a tier is dropped mid-stream as soon as the bytes written pass its gate (its
//!   miss handler is dropped unfinished: nothing is written there) without failing the others.
//! - **Promotion on hit** ([`Promotion`]): a block read from a slower tier is, once it was read
//!   whole and verified, written into every faster tier: into the fastest synchronously, into
//!   the others asynchronously through a bounded queue per tier served by a worker thread
//!   started on first use. A full queue drops the promotion; a failed one is counted. Neither
//!   changes what the caller gets.
//! - **Single-flight.** Concurrent misses on one block in the fastest tier share one fetch
//!   from the slower tiers; the others wait for it and get the same bytes.
//! - **Faults stay inside the tier.** A tier configured with a deadline
//!   ([`TierConfig::with_timeout`]) is called on its own worker threads and abandoned at the
//!   deadline; a failing tier is skipped; bytes read from any tier but the first are checked
//!   against the xxh3 digest recorded when the block was written through this store (a block
//!   with no recorded digest, e.g. after a restart, relies on the tier's own checksum) and a
//!   mismatch is a miss there (the copy is purged). Every such event is counted
//!   ([`TieredStore::metrics`]). The digests live in memory, bounded
//!   ([`TieredStoreBuilder::with_digest_capacity`], default [`DEFAULT_DIGEST_CAPACITY`]):
//!   beyond the bound the oldest recorded are forgotten first, and those blocks fall back to
//!   their tier's own checksum. A tier without a deadline is called on the caller's thread:
//!   give every tier that can stall (disk, network) a deadline.
//! - **Prefixes.** [`TieredStore::locate_prefix`] answers which leading blocks of a hash list
//!   are available, and in which tier each lives; [`TieredStore::fetch_prefix_into_host`]
//!   brings such a prefix into G2 with one [`Storage::get_batch`] per source tier.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use kvtier_core::{BlockManager, G2, SequenceHash};
//! use kvtier_storage::arena::HostArena;
//! use kvtier_storage::disk::{DiskConfig, DiskTier};
//! use kvtier_storage::layout::BlockLayout;
//! use kvtier_storage::tier::{disk::DiskStorage, host::HostStorage};
//! use kvtier_storage::tiered::{Promotion, TierConfig, TieredStore};
//!
//! let manager = BlockManager::<G2>::builder().with_block_count(8).build()?;
//! let arena = Arc::new(HostArena::new(&manager, BlockLayout::from_bytes(4096)?)?);
//! let dir = tempfile::tempdir()?;
//! let disk = Arc::new(DiskTier::open(dir.path(), DiskConfig::new("doc", 4096, 64))?);
//! let store = TieredStore::builder()
//!     .host(HostStorage::new(arena), TierConfig::default())
//!     .tier(Arc::new(DiskStorage::new(disk)), TierConfig::default())
//!     .promotion(Promotion::OnStreamCommitAtFinish)
//!     .build();
//!
//! let hash = SequenceHash::root(1);
//! let report = store.put(hash, &[3u8; 4096])?;
//! assert_eq!(report.stored, vec![0, 1]); // in G2 and G3
//! store.tier(0).unwrap().purge(hash)?; // gone from G2 ...
//! let mut out = vec![0u8; 4096];
//! assert_eq!(store.get(hash, &mut out)?, Some(1)); // ... served from G3, promoted to G2
//! assert!(store.tier(0).unwrap().contains(hash));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod digests;
mod flight;
mod metrics;
mod prefix;
mod runner;
mod write;

use std::sync::Arc;
use std::time::Duration;

use kvtier_core::{G2, SequenceHash};
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64;

pub use metrics::{TierMetrics, TieredMetrics};
pub use prefix::{Onboarded, PrefixLocation};
pub use write::{TieredWriter, WriteReport};

use crate::tier::buffered::BufferedHit;
use crate::tier::host::HostStorage;
use crate::tier::{HitHandler, Storage, StorageError, get_block, put_block};
use digests::Digests;
use flight::{Fetched, Flights, Role};
use metrics::{TierCounters, inc};
use runner::{Pool, RunError};

/// When a block read from a slower tier is copied into the faster ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Promotion {
    /// Never: reads leave the tiers as they are.
    Never,
    /// Once the block was read whole and verified: synchronously into the fastest tier,
    /// asynchronously into the others above the source.
    #[default]
    OnStreamCommitAtFinish,
}

/// How a [`TieredStore`] treats one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierConfig {
    gate_bytes: Option<usize>,
    timeout: Option<Duration>,
    workers: usize,
    queue_depth: usize,
}

impl Default for TierConfig {
    /// No gate, no deadline (called on the caller's thread), 2 call workers, a promotion queue
    /// of 64 blocks.
    fn default() -> Self {
        Self {
            gate_bytes: None,
            timeout: None,
            workers: 2,
            queue_depth: 64,
        }
    }
}

impl TierConfig {
    /// The tier takes only blocks of at most `bytes` bytes.
    pub fn with_gate_bytes(mut self, bytes: usize) -> Self {
        self.gate_bytes = Some(bytes);
        self
    }

    /// Calls into the tier run on its worker threads and are abandoned after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Worker threads for calls with a deadline (at least 1; started on first use).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Promotions (and calls with a deadline) that may wait for the tier's workers; more are
    /// dropped (promotions) or refused as timed out (calls).
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    fn admits(&self, bytes: usize) -> bool {
        self.gate_bytes.is_none_or(|g| bytes <= g)
    }
}

struct Entry {
    storage: Arc<dyn Storage>,
    name: String,
    config: TierConfig,
    calls: Pool,
    promoter: Pool,
    counters: Arc<TierCounters>,
}

/// Digests a [`TieredStore`] keeps unless told otherwise (with their eviction queue, about
/// 35 MiB of memory when full).
pub const DEFAULT_DIGEST_CAPACITY: usize = 1 << 18;

/// Builds a [`TieredStore`].
pub struct TieredStoreBuilder {
    host: Option<HostStorage<G2>>,
    host_config: TierConfig,
    tiers: Vec<(Arc<dyn Storage>, TierConfig)>,
    promotion: Promotion,
    digest_capacity: usize,
}

impl Default for TieredStoreBuilder {
    fn default() -> Self {
        Self {
            host: None,
            host_config: TierConfig::default(),
            tiers: Vec::new(),
            promotion: Promotion::default(),
            digest_capacity: DEFAULT_DIGEST_CAPACITY,
        }
    }
}

impl std::fmt::Debug for TieredStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStoreBuilder")
            .field("host", &self.host.is_some())
            .field("tiers", &self.tiers.len())
            .field("promotion", &self.promotion)
            .finish()
    }
}

impl TieredStoreBuilder {
    /// The G2 host tier: always tier 0, and the target of
    /// [`TieredStore::fetch_prefix_into_host`].
    pub fn host(mut self, host: HostStorage<G2>, config: TierConfig) -> Self {
        self.host = Some(host);
        self.host_config = config;
        self
    }

    /// Adds a tier below those added before (slower).
    pub fn tier(mut self, storage: Arc<dyn Storage>, config: TierConfig) -> Self {
        self.tiers.push((storage, config));
        self
    }

    /// The promotion policy (default [`Promotion::OnStreamCommitAtFinish`]).
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.promotion = promotion;
        self
    }

    /// How many block digests the store keeps (default [`DEFAULT_DIGEST_CAPACITY`]; the
    /// oldest recorded are forgotten first; 0 keeps none and leaves every check to the tiers).
    /// Size it to the blocks the lower tiers hold to keep the extra check on all of them.
    pub fn with_digest_capacity(mut self, capacity: usize) -> Self {
        self.digest_capacity = capacity;
        self
    }

    /// The store.
    pub fn build(self) -> TieredStore {
        let mut list: Vec<(Arc<dyn Storage>, TierConfig)> = Vec::new();
        if let Some(host) = &self.host {
            list.push((Arc::new(host.clone()), self.host_config));
        }
        list.extend(self.tiers);
        let tiers = list
            .into_iter()
            .enumerate()
            .map(|(i, (storage, config))| {
                let name = storage.name().to_owned();
                Entry {
                    calls: Pool::new(format!("t{i}-{name}"), config.workers, config.queue_depth),
                    promoter: Pool::new(format!("p{i}-{name}"), 1, config.queue_depth),
                    storage,
                    name,
                    config,
                    counters: Arc::default(),
                }
            })
            .collect();
        TieredStore {
            tiers,
            host: self.host,
            promotion: self.promotion,
            flights: Flights::default(),
            digests: Mutex::new(Digests::new(self.digest_capacity)),
            fetches: Default::default(),
            flight_waits: Default::default(),
            scratch: Mutex::default(),
        }
    }
}

/// Tiers composed fastest first; see the [module documentation](self).
pub struct TieredStore {
    tiers: Vec<Entry>,
    host: Option<HostStorage<G2>>,
    promotion: Promotion,
    flights: Flights,
    digests: Mutex<Digests>,
    fetches: std::sync::atomic::AtomicU64,
    flight_waits: std::sync::atomic::AtomicU64,
    /// The read buffer of [`fetch_prefix_into_host`](Self::fetch_prefix_into_host), kept
    /// (faulted in) between calls: as large as the largest prefix fetched.
    scratch: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field(
                "tiers",
                &self.tiers.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("promotion", &self.promotion)
            .finish()
    }
}

/// A block found by [`TieredStore::lookup`]: the tier it came from and its bytes, streaming.
pub struct TieredHit {
    /// Index of the tier that served the block (0: the fastest).
    pub tier: usize,
    /// The block's bytes.
    pub handler: Box<dyn HitHandler>,
}

impl std::fmt::Debug for TieredHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredHit")
            .field("tier", &self.tier)
            .field("len", &self.handler.len())
            .finish()
    }
}

impl TieredStore {
    /// A builder with no tier.
    pub fn builder() -> TieredStoreBuilder {
        TieredStoreBuilder::default()
    }

    /// Number of tiers.
    pub fn tier_count(&self) -> usize {
        self.tiers.len()
    }

    /// Tier `i` (0: the fastest), if there is one.
    pub fn tier(&self, i: usize) -> Option<&Arc<dyn Storage>> {
        self.tiers.get(i).map(|t| &t.storage)
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> TieredMetrics {
        use std::sync::atomic::Ordering::Relaxed;
        TieredMetrics {
            tiers: self
                .tiers
                .iter()
                .map(|t| t.counters.snapshot(&t.name))
                .collect(),
            fetches: self.fetches.load(Relaxed),
            flight_waits: self.flight_waits.load(Relaxed),
        }
    }

    /// Runs `f` against tier `i`: on the caller's thread, or on the tier's workers within its
    /// deadline. Counts timeouts (and refusals of a stuck tier) as timeouts.
    fn call<R: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce(&dyn Storage) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, StorageError> {
        let entry = &self.tiers[i];
        let Some(timeout) = entry.config.timeout else {
            return f(&*entry.storage);
        };
        let storage = Arc::clone(&entry.storage);
        match entry.calls.call(timeout, move || f(&*storage)) {
            Ok(r) => r,
            Err(RunError::Busy | RunError::Timeout) => {
                inc(&entry.counters.timeouts);
                Err(StorageError::Timeout(timeout))
            }
            Err(RunError::Lost) => Err(StorageError::backend("tier call lost (worker panicked)")),
        }
    }

    /// Counts a failed call to tier `i` (timeouts are counted by [`call`](Self::call)).
    fn count_error(&self, i: usize, e: &StorageError) {
        let c = &self.tiers[i].counters;
        match e {
            StorageError::Timeout(_) => {}
            StorageError::Corrupt { .. } => inc(&c.corrupt),
            _ => inc(&c.errors),
        }
    }

    /// Block digests kept now (at most the builder's digest capacity).
    pub fn digests_kept(&self) -> usize {
        self.digests.lock().len()
    }

    /// Whether `bytes` match the digest recorded for `hash` (true when none is recorded).
    fn verify(&self, hash: SequenceHash, bytes: &[u8]) -> bool {
        let expected = self.digests.lock().get(hash.as_u128());
        expected.is_none_or(|d| d == xxh3_64(bytes))
    }

    fn record_digest(&self, hash: SequenceHash, digest: u64) {
        self.digests.lock().insert(hash.as_u128(), digest);
    }

    /// Reads the whole block from tier `i`, verified; counts what happened.
    fn read_tier(&self, i: usize, hash: SequenceHash) -> Option<Vec<u8>> {
        let c = &self.tiers[i].counters;
        match self.call(i, move |s| get_block(s, hash)) {
            Ok(Some(bytes)) if self.verify(hash, &bytes) => {
                inc(&c.hits);
                Some(bytes)
            }
            Ok(Some(_)) => {
                inc(&c.corrupt);
                let _ = self.call(i, move |s| s.purge(hash));
                None
            }
            Ok(None) => {
                inc(&c.misses);
                None
            }
            Err(e) => {
                self.count_error(i, &e);
                None
            }
        }
    }

    /// The block from the tiers below the first (one fetch for concurrent callers), promoted
    /// per the policy.
    fn fetch_lower(&self, hash: SequenceHash) -> Option<Fetched> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.flights.join(hash) {
            Role::Follower(fetched) => {
                self.flight_waits.fetch_add(1, Relaxed);
                fetched
            }
            Role::Leader(leader) => {
                self.fetches.fetch_add(1, Relaxed);
                let fetched = (1..self.tiers.len()).find_map(|i| {
                    self.read_tier(i, hash).map(|bytes| Fetched {
                        bytes: Arc::new(bytes),
                        tier: i,
                    })
                });
                if let Some(f) = &fetched {
                    self.promote(hash, f);
                }
                leader.finish(fetched.clone());
                fetched
            }
        }
    }

    /// Copies a fetched block into the tiers above its source (best effort, counted).
    fn promote(&self, hash: SequenceHash, fetched: &Fetched) {
        if self.promotion == Promotion::Never {
            return;
        }
        for i in 0..fetched.tier {
            let entry = &self.tiers[i];
            let c = Arc::clone(&entry.counters);
            if !entry.config.admits(fetched.bytes.len()) {
                inc(&c.gate_drops);
                continue;
            }
            if i == 0 {
                let bytes = Arc::clone(&fetched.bytes);
                match self.call(0, move |s| put_block(s, hash, &bytes)) {
                    Ok(()) => {
                        inc(&c.promotions);
                        inc(&c.writes);
                    }
                    Err(_) => inc(&c.promotion_failures),
                }
                continue;
            }
            let storage = Arc::clone(&entry.storage);
            let bytes = Arc::clone(&fetched.bytes);
            let counters = Arc::clone(&c);
            let queued = entry
                .promoter
                .submit(move || match put_block(&*storage, hash, &bytes) {
                    Ok(()) => {
                        inc(&counters.promotions);
                        inc(&counters.writes);
                    }
                    Err(_) => inc(&counters.promotion_failures),
                });
            match queued {
                Ok(()) => {}
                Err(RunError::Busy) => inc(&c.promotions_dropped),
                Err(_) => inc(&c.promotion_failures),
            }
        }
    }

    /// The block, from the fastest tier that holds it, as a streaming handler. A hit in tier 0
    /// (without a deadline) streams straight from it (for G2: holding the block's guard);
    /// a hit below is read whole, verified, promoted per the policy, then streamed from memory.
    /// Faults of a tier make it count as a miss there.
    ///
    /// # Errors
    ///
    /// None today: faults are counted, not returned. The `Result` is kept for tiers whose
    /// failure the caller must see.
    pub fn lookup(&self, hash: SequenceHash) -> Result<Option<TieredHit>, StorageError> {
        let Some(first) = self.tiers.first() else {
            return Ok(None);
        };
        if first.config.timeout.is_none() {
            match first.storage.lookup(hash) {
                Ok(Some(handler)) => {
                    inc(&first.counters.hits);
                    return Ok(Some(TieredHit { tier: 0, handler }));
                }
                Ok(None) => inc(&first.counters.misses),
                Err(e) => self.count_error(0, &e),
            }
        } else if let Some(bytes) = self.read_tier(0, hash) {
            return Ok(Some(TieredHit {
                tier: 0,
                handler: Box::new(BufferedHit::new(bytes)),
            }));
        }
        Ok(self.fetch_lower(hash).map(|f| TieredHit {
            tier: f.tier,
            handler: Box::new(BufferedHit::new(f.bytes.to_vec())),
        }))
    }

    /// Copies the block into `out` from the fastest tier that holds it; returns that tier, or
    /// `None` on a miss everywhere (`out` is then untouched).
    ///
    /// # Errors
    ///
    /// [`StorageError::WrongSize`] if `out` is not the block's length.
    pub fn get(&self, hash: SequenceHash, out: &mut [u8]) -> Result<Option<usize>, StorageError> {
        let Some(mut hit) = self.lookup(hash)? else {
            return Ok(None);
        };
        if hit.handler.len() != out.len() {
            return Err(StorageError::WrongSize {
                expected: hit.handler.len(),
                got: out.len(),
            });
        }
        match hit.handler.read_all(out) {
            Ok(()) => Ok(Some(hit.tier)),
            Err(e) => {
                self.count_error(hit.tier, &e);
                Ok(None)
            }
        }
    }

    /// Writes the block to every tier whose gate admits it; see [`TieredStore::writer`].
    ///
    /// # Errors
    ///
    /// As [`TieredWriter::write_chunk`] and [`TieredWriter::finish`].
    pub fn put(&self, hash: SequenceHash, bytes: &[u8]) -> Result<WriteReport, StorageError> {
        let mut w = self.writer(hash, bytes.len());
        w.write_chunk(bytes)?;
        w.finish()
    }

    /// Removes the block from every tier; returns whether any held it. Tier faults are counted
    /// and skipped.
    pub fn purge(&self, hash: SequenceHash) -> bool {
        self.digests.lock().remove(hash.as_u128());
        let mut any = false;
        for i in 0..self.tiers.len() {
            match self.call(i, move |s| s.purge(hash)) {
                Ok(held) => any |= held,
                Err(e) => self.count_error(i, &e),
            }
        }
        any
    }
}
