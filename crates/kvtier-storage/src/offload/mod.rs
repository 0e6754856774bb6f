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
//! This module moves no bytes itself: the sink does (a [`DiskTier`](crate::disk::DiskTier) put
//! of bytes read from the arena, for G2 → G3).

mod observer;
mod policy;
mod queue;

pub use observer::OffloadObserver;
pub use policy::{
    DEFAULT_SELECTIVE_HITS, MAX_SELECTIVE_HITS, WriteGate, WritePolicy, WritePolicyError,
};
pub use queue::{MAX_BATCH, OffloadQueue, OffloadQueueError, OffloadSink, OffloadStats};
