//! Offload: which blocks are copied down to the next tier, and when, without ever blocking the
//! upper tier's caller.
//!
//! - [`WritePolicy`] and [`WriteGate`] (`policy.rs`): SGLang HiCache's write policies
//!   (`write_through`, `write_through_selective` with a hit threshold counted in a bounded
//!   TinyLFU sketch, `write_back`) as a per-event decision. The trace replay
//!   (`kvtier-replay`'s tiered replay) and the real offload path share this logic.
//! - [`OffloadQueue`] and [`OffloadSink`] (`queue.rs`): a bounded queue drained by one worker
//!   thread; a full queue skips and counts, never waits.
//! - [`OffloadObserver`] (`observer.rs`): the two above installed on a
//!   [`BlockManager`](kvtier_core::BlockManager) through its observer hook.
//!
//! - [`ArenaSink`] (`sink.rs`): write-through bytes. The queue's sink that looks a batch up in
//!   G2 without touching recency, copies each block's arena bytes and writes them to a lower
//!   [`Storage`](crate::tier::Storage) (a [`DiskStorage`](crate::tier::disk::DiskStorage), a
//!   remote tier).
//! - [`WriteBack`] (`writeback.rs`): write-back bytes. A G2 manager's
//!   [`EvictionHook`](kvtier_core::EvictionHook): victims' bytes are copied, before their slots
//!   are reused, into a bounded staging pool; a worker writes them down. Pool or queue full:
//!   skipped and counted, never waited for. [`WriteBack::selective`] with
//!   [`PendingWriteThrough`] is write-through's safety net: a block G2 evicts before the
//!   queue's worker copied it is copied on its way out.
//! - Onboarding is [`TieredStore::fetch_prefix_into_host`](crate::tiered::TieredStore::fetch_prefix_into_host):
//!   a prefix that misses in G2 and hits below is read with one batched read per tier and
//!   registered in G2 in one batch.
//!
//! With write-back, install [`WriteBack`] as the eviction hook and use [`OffloadObserver`] only
//! for write-through policies (its `removed` events come after the slot is reused).

mod observer;
mod policy;
mod queue;
mod sink;
mod writeback;

pub use observer::OffloadObserver;
pub use policy::{
    DEFAULT_SELECTIVE_HITS, MAX_SELECTIVE_HITS, WriteGate, WritePolicy, WritePolicyError,
};
pub use queue::{MAX_BATCH, OffloadQueue, OffloadQueueError, OffloadSink, OffloadStats};
pub use sink::{ArenaSink, ArenaSinkStats};
pub use writeback::{PendingWriteThrough, VictimFilter, WriteBack, WriteBackError, WriteBackStats};
