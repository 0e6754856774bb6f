//! Prometheus exposition of a shared router's counters and the service's own
//! (`kvtier_router_*`); the sources' counters are `sources.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::Router;

/// Reads the router's stats at scrape time, so the numbers always agree with the index.
#[derive(Debug)]
pub(crate) struct RouterCollector {
    pub(crate) router: Arc<RwLock<Router>>,
    pub(crate) service: Arc<ServiceCounters>,
}

/// The service's own counters.
#[derive(Debug, Default)]
pub(crate) struct ServiceCounters {
    /// Snapshots written.
    pub(crate) snapshots: AtomicU64,
    /// Snapshots that failed (serialisation or I/O).
    pub(crate) snapshot_failures: AtomicU64,
}

impl ServiceCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.router.read().stats();
        let counters: [(&str, &str, u64); 18] = [
            (
                "kvtier_router_messages",
                "Event messages received.",
                s.messages,
            ),
            (
                "kvtier_router_creates",
                "Block creations applied.",
                s.creates,
            ),
            (
                "kvtier_router_removes",
                "Block removals applied.",
                s.removes,
            ),
            (
                "kvtier_router_unknown_removes",
                "Removals of blocks the instance was not known to hold.",
                s.unknown_removes,
            ),
            (
                "kvtier_router_duplicates",
                "Messages already applied (ignored).",
                s.duplicates,
            ),
            (
                "kvtier_router_stale",
                "Messages of retired instances and stale dumps (ignored).",
                s.stale,
            ),
            (
                "kvtier_router_rejected",
                "Messages of new instances refused for lack of slots.",
                s.rejected,
            ),
            (
                "kvtier_router_gaps_detected",
                "Gaps in instances' event ids.",
                s.gaps_detected,
            ),
            (
                "kvtier_router_gaps_repaired_by_replay",
                "Gaps closed by replay.",
                s.repaired_by_replay,
            ),
            (
                "kvtier_router_gaps_repaired_by_dump",
                "Gaps closed by a dump.",
                s.repaired_by_dump,
            ),
            (
                "kvtier_router_gaps_skipped",
                "Gaps skipped with nothing to repair them from.",
                s.gaps_skipped,
            ),
            (
                "kvtier_router_repairs_failed",
                "Gap repairs (replay, then dump) that failed.",
                s.repairs_failed,
            ),
            (
                "kvtier_router_bad_event_ids",
                "Messages and dumps refused for an event id outside 1..u64::MAX.",
                s.bad_event_ids,
            ),
            (
                "kvtier_router_shutdowns",
                "Instances that shut down.",
                s.shutdowns,
            ),
            (
                "kvtier_router_expired",
                "Instances forgotten after silence.",
                s.expired,
            ),
            ("kvtier_router_queries", "Queries answered.", s.queries),
            (
                "kvtier_router_snapshots",
                "Snapshots written.",
                self.service.snapshots.load(Ordering::Relaxed),
            ),
            (
                "kvtier_router_snapshot_failures",
                "Snapshots that could not be written.",
                self.service.snapshot_failures.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            let d = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(d)?;
        }
        let gauges: [(&str, &str, u64); 3] = [
            ("kvtier_router_instances", "Instances known.", s.instances),
            (
                "kvtier_router_blocks",
                "Distinct block hashes indexed.",
                s.blocks,
            ),
            (
                "kvtier_router_entries",
                "(block, instance, medium) entries indexed.",
                s.entries,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v as i64);
            let d = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(d)?;
        }
        Ok(())
    }
}
