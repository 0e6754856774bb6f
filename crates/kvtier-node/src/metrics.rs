//! The Prometheus text exposition of a node: the block service's counters and tier gauges
//! ([`BlockStore::stats`](crate::store::BlockStore::stats)), the IO runtime's
//! ([`CountersSnapshot`]) and the RESP port's, each as `kvtier_<name>` with its type.

use std::fmt::Write as _;

use kvtier_server::CountersSnapshot;

use crate::counters::StoreCounters;

/// Names that are levels, not running totals.
const GAUGES: &[&str] = &[
    "g2_capacity_blocks",
    "g2_blocks",
    "g2_used_bytes",
    "g3_capacity_blocks",
    "g3_blocks",
    "offload_pending",
    "writeback_pending",
    "events_last_id",
    "connections_open",
    "response_bytes_queued",
    "resp_keys",
    "resp_used_bytes",
    "resp_budget_bytes",
];

/// Renders every `(name, value)` as one Prometheus sample (counters get `_total`).
pub(crate) fn render(stats: &[(String, u64)]) -> String {
    let mut out = String::with_capacity(stats.len() * 96);
    for (name, value) in stats {
        let gauge = GAUGES.contains(&name.as_str());
        let full = if gauge {
            format!("kvtier_{name}")
        } else {
            format!("kvtier_{name}_total")
        };
        let help = StoreCounters::help(name).unwrap_or("see docs/server.md");
        let kind = if gauge { "gauge" } else { "counter" };
        let _ = writeln!(
            out,
            "# HELP {full} {help}\n# TYPE {full} {kind}\n{full} {value}"
        );
    }
    out
}

/// The IO runtime's counters, named for [`render`].
pub(crate) fn server_stats(c: &CountersSnapshot) -> Vec<(String, u64)> {
    [
        ("connections_open", c.connections_open),
        ("connections_accepted", c.connections_accepted),
        ("connections_refused", c.connections_refused),
        ("frames_in", c.frames_in),
        ("frames_out", c.frames_out),
        ("bytes_in", c.bytes_in),
        ("bytes_out", c.bytes_out),
        ("malformed_frames", c.malformed),
        ("backpressure_pauses", c.backpressure_pauses),
        ("ring_full", c.ring_full),
        ("response_bytes_queued", c.response_bytes_queued),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_gauges_do_not() {
        let text = render(&[("requests_put".into(), 3), ("g2_blocks".into(), 7)]);
        assert!(
            text.contains(
                "# TYPE kvtier_requests_put_total counter\nkvtier_requests_put_total 3\n"
            )
        );
        assert!(text.contains("# HELP kvtier_requests_put_total PUT requests\n"));
        assert!(text.contains("# TYPE kvtier_g2_blocks gauge\nkvtier_g2_blocks 7\n"));
    }
}
