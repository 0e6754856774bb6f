//! Manager metrics: exact counters kept inside the shards, a [`MetricsSnapshot`] view, and a
//! Prometheus collector ([`BlockManager::register_metrics`](crate::BlockManager::register_metrics)).
//!
//! Counters that change under a shard lock live in that shard ([`ShardCounters`]); counters of
//! lock-free paths (staging, match requests) live in per-thread stripes. Nothing here is a single
//! shared atomic, so metrics never make threads contend. Gauges are derived from the pools when a
//! snapshot is taken, so they always agree with the pools:
//!
//! ```text
//! total = reset + inactive + inflight_mutable + active
//! ```

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::manager::store::Shared;
use crate::sync::{Arc, Ordering};

/// Counters kept by one shard under its lock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShardCounters {
    pub(crate) evictions: u64,
    pub(crate) registrations: u64,
    pub(crate) primaries_created: u64,
    pub(crate) duplicates: u64,
    pub(crate) dedups: u64,
    pub(crate) resurrections: u64,
    pub(crate) released_to_reset: u64,
    /// Slots that became Mutable/Staged here minus those that left that state here.
    pub(crate) mutable_delta: i64,
}

/// A coherent view of a manager's counters and pool sizes.
///
/// Taken by locking each shard in turn; exact when no other thread is using the manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Slots handed out by `allocate_blocks` (counted on success).
    pub allocations: u64,
    /// Of those, slots taken from the reset pool (the rest were evicted).
    pub allocations_from_reset: u64,
    /// Inactive blocks evicted (to satisfy an allocation or by `reset_inactive_pool`).
    pub evictions: u64,
    /// Staged blocks registered (every outcome).
    pub registrations: u64,
    /// Registrations that created a new primary.
    pub primaries_created: u64,
    /// Registrations kept as duplicates (`DuplicationPolicy::Allow`).
    pub duplicates: u64,
    /// Registrations answered with the existing primary (`DuplicationPolicy::Reject`).
    pub dedups: u64,
    /// Inactive blocks brought back to active by a match, registration or upgrade.
    pub resurrections: u64,
    /// Blocks whose last reference returned their slot straight to the reset pool.
    pub released_to_reset: u64,
    /// Victims the eviction policy returned that were not inactive blocks it held (a policy
    /// breaking its contract); they were ignored.
    pub policy_violations: u64,
    /// Eviction-policy calls that panicked. Each panic reached the caller of the manager call
    /// that made it; the manager then replaced its policy instance with a fresh one from the
    /// factory (the blocks the old one held stay cached and are evicted after the new one's).
    pub policy_panics: u64,
    /// `stage` calls.
    pub stagings: u64,
    /// Hashes passed to `match_blocks`.
    pub match_hashes_requested: u64,
    /// Blocks returned by `match_blocks`.
    pub match_blocks_returned: u64,
    /// Hashes passed to `scan_matches`.
    pub scan_hashes_requested: u64,
    /// Blocks returned by `scan_matches`.
    pub scan_blocks_returned: u64,
    /// Gauge: slots in the reset (free) pool.
    pub reset_pool_size: u64,
    /// Gauge: registered blocks in the inactive (evictable) pool.
    pub inactive_pool_size: u64,
    /// Gauge: slots held by `MutableBlock` / `CompleteBlock` guards.
    pub inflight_mutable: u64,
    /// Gauge: registered blocks with at least one strong reference (primaries and duplicates).
    pub inflight_immutable: u64,
    /// Gauge: primaries in the index (active or inactive).
    pub registered: u64,
    /// Gauge: slots in the manager.
    pub total_blocks: u64,
}

impl MetricsSnapshot {
    pub(crate) fn collect(shared: &Shared) -> MetricsSnapshot {
        let mut m = MetricsSnapshot {
            total_blocks: shared.total_blocks as u64,
            ..Default::default()
        };
        let mut mutable: i64 = 0;
        (m.policy_panics, m.policy_violations) = shared.policy_faults();
        for s in 0..shared.shard_count() {
            let (free, inactive, registered, c) = shared.shard_view(s);
            m.reset_pool_size += free as u64;
            m.inactive_pool_size += inactive as u64;
            m.registered += registered as u64;
            m.evictions += c.evictions;
            m.registrations += c.registrations;
            m.primaries_created += c.primaries_created;
            m.duplicates += c.duplicates;
            m.dedups += c.dedups;
            m.resurrections += c.resurrections;
            m.released_to_reset += c.released_to_reset;
            mutable += c.mutable_delta;
        }
        for st in shared.stripes.iter() {
            m.stagings += st.stagings.load(Ordering::Relaxed);
            m.allocations += st.allocations.load(Ordering::Relaxed);
            m.allocations_from_reset += st.allocations_from_reset.load(Ordering::Relaxed);
            m.match_hashes_requested += st.match_requested.load(Ordering::Relaxed);
            m.match_blocks_returned += st.match_returned.load(Ordering::Relaxed);
            m.scan_hashes_requested += st.scan_requested.load(Ordering::Relaxed);
            m.scan_blocks_returned += st.scan_returned.load(Ordering::Relaxed);
        }
        m.inflight_mutable = mutable.max(0) as u64;
        m.inflight_immutable = m
            .total_blocks
            .saturating_sub(m.reset_pool_size + m.inactive_pool_size + m.inflight_mutable);
        m
    }
}

/// Prometheus collector over one manager (label `pool` = tier name, plus extra labels).
pub(crate) struct ManagerCollector {
    pub(crate) shared: Arc<Shared>,
    pub(crate) labels: Vec<(String, String)>,
}

impl fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerCollector")
            .field("labels", &self.labels)
            .finish()
    }
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let m = MetricsSnapshot::collect(&self.shared);
        let counters: [(&str, &str, u64); 16] = [
            (
                "kvtier_allocations",
                "Slots handed out by allocate_blocks.",
                m.allocations,
            ),
            (
                "kvtier_allocations_from_reset",
                "Allocated slots taken from the reset pool.",
                m.allocations_from_reset,
            ),
            ("kvtier_evictions", "Inactive blocks evicted.", m.evictions),
            (
                "kvtier_registrations",
                "Staged blocks registered.",
                m.registrations,
            ),
            (
                "kvtier_primaries_created",
                "Registrations that created a primary.",
                m.primaries_created,
            ),
            (
                "kvtier_duplicates",
                "Registrations kept as duplicates.",
                m.duplicates,
            ),
            (
                "kvtier_dedups",
                "Registrations answered with the existing primary.",
                m.dedups,
            ),
            (
                "kvtier_resurrections",
                "Inactive blocks made active again.",
                m.resurrections,
            ),
            ("kvtier_stagings", "Blocks staged.", m.stagings),
            (
                "kvtier_match_hashes_requested",
                "Hashes passed to match_blocks.",
                m.match_hashes_requested,
            ),
            (
                "kvtier_match_blocks_returned",
                "Blocks returned by match_blocks.",
                m.match_blocks_returned,
            ),
            (
                "kvtier_scan_hashes_requested",
                "Hashes passed to scan_matches.",
                m.scan_hashes_requested,
            ),
            (
                "kvtier_scan_blocks_returned",
                "Blocks returned by scan_matches.",
                m.scan_blocks_returned,
            ),
            (
                "kvtier_policy_violations",
                "Eviction victims ignored because they were not inactive blocks.",
                m.policy_violations,
            ),
            (
                "kvtier_policy_panics",
                "Eviction-policy calls that panicked (the policy instance was replaced).",
                m.policy_panics,
            ),
            (
                "kvtier_released_to_reset",
                "Blocks whose last release freed the slot without caching it.",
                m.released_to_reset,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            let mut d = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(d.encode_family(&self.labels)?)?;
        }
        let gauges: [(&str, &str, u64); 6] = [
            (
                "kvtier_inflight_mutable",
                "Slots held by mutable or staged guards.",
                m.inflight_mutable,
            ),
            (
                "kvtier_inflight_immutable",
                "Registered blocks with a strong reference.",
                m.inflight_immutable,
            ),
            (
                "kvtier_reset_pool_size",
                "Slots in the reset pool.",
                m.reset_pool_size,
            ),
            (
                "kvtier_inactive_pool_size",
                "Blocks in the inactive pool.",
                m.inactive_pool_size,
            ),
            (
                "kvtier_registered_blocks",
                "Primaries in the index.",
                m.registered,
            ),
            (
                "kvtier_total_blocks",
                "Slots in the manager.",
                m.total_blocks,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v as i64);
            let mut d = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(d.encode_family(&self.labels)?)?;
        }
        Ok(())
    }
}
