//! `kvtier replay --g3-capacity N`: the tiered replay. G2 is the block manager (default
//! configuration) of each `--capacity`, G3 a FIFO model of the disk tier of `--g3-capacity`
//! blocks, and each `--write-policy` decides what reaches G3. Prints, per policy and G2
//! capacity, G2-alone, combined and infinite-cache hit rates, what was written to G3 and the
//! bytes written per hit G3 added, as a table or one JSON array of
//! [`TieredRow`](kvtier_replay::TieredRow)s.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Result, bail};
use kvtier_replay::{Chains, DEFAULT_MODEL, ReleaseOrder, TieredReplay, TieredRow};
use kvtier_storage::offload::WritePolicy;

/// What the tiered replay needs from the command line.
pub(crate) struct TieredArgs<'a> {
    /// Name of the trace, for the table's header.
    pub(crate) name: &'a str,
    /// G2 capacities, in blocks.
    pub(crate) capacities: &'a [usize],
    /// G3 capacity, in blocks.
    pub(crate) g3_capacity: usize,
    /// `--write-policy` values as given.
    pub(crate) policies: &'a [String],
    /// Bytes per block.
    pub(crate) block_bytes: u64,
    /// G2 release order.
    pub(crate) release: ReleaseOrder,
    /// JSON instead of a table.
    pub(crate) json: bool,
}

/// Resolves `--write-policy` values: `all`, or policy names.
pub(crate) fn parse_policies(values: &[String]) -> Result<Vec<WritePolicy>> {
    let mut out: Vec<WritePolicy> = Vec::new();
    for v in values {
        let picked: Vec<WritePolicy> = if v.trim().eq_ignore_ascii_case("all") {
            WritePolicy::ALL.to_vec()
        } else {
            vec![v.parse().map_err(anyhow::Error::new)?]
        };
        for p in picked {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        out = WritePolicy::ALL.to_vec();
    }
    Ok(out)
}

/// Runs the tiered replay and prints its table or JSON.
pub(crate) fn run(args: &TieredArgs<'_>, chains: &Chains) -> Result<()> {
    if args.g3_capacity == 0 {
        bail!("--g3-capacity must be at least 1 block");
    }
    if args.block_bytes == 0 {
        bail!("--block-bytes must be at least 1");
    }
    let policies = parse_policies(args.policies)?;
    let mut rows = Vec::new();
    for &g2 in args.capacities {
        for &p in &policies {
            let replay = TieredReplay::for_chains(g2, args.g3_capacity, p, chains)?
                .with_block_bytes(args.block_bytes)
                .with_release(args.release);
            rows.push(replay.run(chains));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(args, chains, &rows))?;
    }
    Ok(())
}

/// `64.0 MiB`, `1.23 TiB`.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn table(args: &TieredArgs<'_>, chains: &Chains, rows: &[TieredRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "trace: {}: {} requests, {} blocks ({} distinct), longest request {} blocks",
        args.name,
        chains.len(),
        chains.total_blocks(),
        chains.unique(),
        chains.max_len()
    );
    let _ = writeln!(
        s,
        "tiers: G2 = block manager (default configuration), G3 = {} blocks, FIFO by write order \
         (as the disk tier); release: {}",
        args.g3_capacity,
        args.release.as_str()
    );
    let model = if args.block_bytes == kvtier_replay::default_block_bytes() {
        format!(
            " (default: {} layers x {} tokens x {} KV heads x {} x {}, K and V)",
            DEFAULT_MODEL.num_layers,
            DEFAULT_MODEL.block_size,
            DEFAULT_MODEL.num_kv_heads,
            DEFAULT_MODEL.head_dim,
            DEFAULT_MODEL.dtype.name()
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "block: {}{model}; hits = leading run of a request's blocks found (G2, then any tier)\n",
        bytes(args.block_bytes as f64)
    );
    let _ = writeln!(
        s,
        "{:<27}{:>6}{:>10}{:>9}{:>10}{:>11}{:>12}{:>9}{:>18}",
        "write policy",
        "G2",
        "G2 alone",
        "G2+G3",
        "infinite",
        "G3 writes",
        "G3 bytes",
        "G3 hits",
        "bytes/hit gained"
    );
    for r in rows {
        let per_hit = r
            .bytes_per_hit_gained
            .map_or_else(|| "-".to_string(), bytes);
        let _ = writeln!(
            s,
            "{:<27}{:>6}{:>10}{:>9}{:>10}{:>11}{:>12}{:>9}{:>18}",
            r.write_policy,
            r.g2_capacity,
            pct(r.g2_hit_rate),
            pct(r.combined_hit_rate),
            pct(r.infinite_hit_rate),
            r.g3_blocks_written,
            bytes(r.g3_bytes_written as f64),
            r.combined_hit_blocks - r.g2_hit_blocks,
            per_hit
        );
    }
    for &c in args.capacities {
        if let Some(r) = rows.iter().find(|r| r.g2_capacity == c && r.oversized > 0) {
            let _ = writeln!(
                s,
                "note: {} requests exceed G2's {c} blocks: their hits are counted, nothing is onboarded or cached",
                r.oversized
            );
        }
    }
    s
}
