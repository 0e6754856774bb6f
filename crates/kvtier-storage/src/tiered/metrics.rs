//! Counters of a [`TieredStore`](super::TieredStore): per tier, and for single-flight.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one tier (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) gate_drops: AtomicU64,
    pub(crate) promotions: AtomicU64,
    pub(crate) promotion_failures: AtomicU64,
    pub(crate) promotions_dropped: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of one tier's counters in a [`TieredStore`](super::TieredStore).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierMetrics {
    /// The tier's name.
    pub name: String,
    /// Reads the tier answered with the block.
    pub hits: u64,
    /// Reads the tier answered with a miss.
    pub misses: u64,
    /// Calls that failed with a backend error (reads, probes, purges).
    pub errors: u64,
    /// Calls abandoned at their deadline, or refused because the tier's workers were stuck.
    pub timeouts: u64,
    /// Blocks the tier served corrupt (found by the tier or by the store's digest check).
    pub corrupt: u64,
    /// Blocks written to the tier (fan-out writes and promotions).
    pub writes: u64,
    /// Writes the tier failed (the other tiers' copies are unaffected).
    pub write_errors: u64,
    /// Writes dropped for the tier because they passed its byte gate.
    pub gate_drops: u64,
    /// Promotions into the tier that completed.
    pub promotions: u64,
    /// Promotions into the tier that failed or timed out.
    pub promotion_failures: u64,
    /// Promotions not queued for the tier because its queue was full.
    pub promotions_dropped: u64,
}

impl TierCounters {
    pub(crate) fn snapshot(&self, name: &str) -> TierMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TierMetrics {
            name: name.to_owned(),
            hits: g(&self.hits),
            misses: g(&self.misses),
            errors: g(&self.errors),
            timeouts: g(&self.timeouts),
            corrupt: g(&self.corrupt),
            writes: g(&self.writes),
            write_errors: g(&self.write_errors),
            gate_drops: g(&self.gate_drops),
            promotions: g(&self.promotions),
            promotion_failures: g(&self.promotion_failures),
            promotions_dropped: g(&self.promotions_dropped),
        }
    }
}

/// A snapshot of a [`TieredStore`](super::TieredStore)'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TieredMetrics {
    /// One entry per tier, fastest first.
    pub tiers: Vec<TierMetrics>,
    /// Lower-tier fetches performed (one per single-flight group).
    pub fetches: u64,
    /// Callers that waited for another caller's fetch of the same block instead of fetching.
    pub flight_waits: u64,
}

impl TieredMetrics {
    /// Faults seen across tiers: errors, timeouts, corruptions and failed writes.
    pub fn faults(&self) -> u64 {
        self.tiers
            .iter()
            .map(|t| t.errors + t.timeouts + t.corrupt + t.write_errors)
            .sum()
    }
}
