//! `kvtier replay`: load a trace (a file, stdin, the embedded sample or a synthetic one), replay
//! it through the real block manager for each policy, shard count and capacity, add Belady's
//! optimum and the infinite bound, and print a table or one JSON array.
//!
//! The manager is the default `BlockManager` configuration (its default shard count) unless
//! `--shards` asks for others; every manager row names the shard count it was built with.
//!
//! Only the replay loops are timed (`requests_per_sec`); parsing and chain building are not.
//! The progress bar goes to stderr and only when stderr is a terminal and the output is a
//! table, so piped and JSON output stay clean.
//!
//! Bounded whatever the input: a trace is read under `--max-line-bytes` and `--max-trace-bytes`
//! (an endless stdin or a line without a newline ends with an error), a synthetic trace has at
//! most [`MAX_SYNTHETIC_REQUESTS`] requests, and a capacity above the trace's distinct blocks is
//! replayed with that many slots (identical results, memory that follows the trace).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kvtier_core::MAX_SHARDS;
use kvtier_replay::{
    Belady, Chains, ManagerReplay, NamedPolicy, OFFLINE_POLICIES, ParseMode, Parsed, ReadLimits,
    ReleaseOrder, ReplayRow, SyntheticConfig, Trace, TraceError, infinite, policies,
};

use crate::tiered::TieredArgs;

/// The sample trace shipped in the repository (see `data/NOTICE`), embedded so that
/// `kvtier replay` works from any directory.
const SAMPLE_TRACE: &[u8] = include_bytes!("../../../data/mooncake_conversation.jsonl");

/// Name the embedded sample is reported under.
const SAMPLE_NAME: &str = "data/mooncake_conversation.jsonl (embedded)";

/// Most requests `--synthetic-requests` accepts: about 0.9 GB peak for the trace and its
/// chains at the default settings (measured: 92 MB at 100,000 requests).
pub const MAX_SYNTHETIC_REQUESTS: u64 = 1_000_000;

/// Malformed lines reported one by one before the rest are summarised.
const MAX_REPORTED_ERRORS: usize = 20;

/// `kvtier replay --help`.
pub const LONG_ABOUT: &str = "\
Replay a prefix-cache trace through kvtier's block manager and print hit rates per eviction \
policy and capacity, next to Belady's offline optimum and the infinite-capacity bound.

Trace format: Mooncake FAST'25 JSONL, one request per line with `hash_ids` (prefix block ids, \
512 tokens per block); `timestamp`, `input_length`, `output_length` are optional. With no TRACE \
the sample trace shipped with kvtier (Mooncake conversation trace, 12,031 requests) is used; \
`-` reads stdin.

Metric: per request, hits = the leading run of its blocks found cached (the first miss ends \
it); hit rate = total hits / total blocks requested. Keys are chained: an id means the same \
block only under the same prefix. requests/s is the wall time of the replay loop alone.

Each request is served the way an engine does: match the cached prefix, allocate and register \
the missing blocks, then release them (tail-first by default: the deepest block becomes \
evictable first). The block manager runs in its default configuration, default shard count \
included, unless --shards asks for others (1 = the policy's exact single eviction order); the \
shards column (JSON: `shards`) gives the count each manager was built with. A request longer than the capacity counts its hits and caches nothing \
(reported as `oversized`). Belady evicts the block whose next use is furthest away (deepest \
first on ties), under the same constraints.

A malformed line is reported on stderr with its line number and skipped; --strict aborts \
instead (exit status 1).

Tiers: with --g3-capacity N the replay is tiered. G2 is the block manager in its default \
configuration at each --capacity; G3 holds N blocks and evicts the oldest write first, as the \
disk tier does. A request's prefix continues from G2 into G3 (and G2 past a gap); blocks found \
there are onboarded (registered in G2). --write-policy picks what reaches G3: write_through \
(on registration in G2), write_through_selective[:K] (at a block's K-th hit, default 2), \
write_back (on eviction from G2), or all. The table gives G2-alone, G2+G3 and infinite-cache \
hit rates, blocks and bytes written to G3 (--block-bytes, default 64 MiB), and bytes written \
per hit G3 added.

Limits: a trace (file or stdin) is read up to --max-trace-bytes (default 1 GiB) with lines up \
to --max-line-bytes (default 16 MiB); past either, the replay stops with an error (exit status \
1): raise the limit to read more. A capacity at or above the trace's distinct blocks replays \
exactly like that number of blocks (nothing is ever evicted), so it is clamped to it, and the \
table says so.";

/// Arguments of `kvtier replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Mooncake JSONL trace; `-` reads stdin. Default: the embedded sample trace.
    #[arg(value_name = "TRACE", conflicts_with = "synthetic")]
    trace: Option<PathBuf>,

    /// Cache capacities in blocks (comma-separated or repeated).
    #[arg(
        long = "capacity",
        value_name = "N",
        value_delimiter = ',',
        default_values_t = [1000usize, 5000, 20000],
        value_parser = clap::value_parser!(usize)
    )]
    capacities: Vec<usize>,

    /// Policies to replay (comma-separated or repeated): built-in eviction policies, `belady`,
    /// `infinite`. Default: every built-in policy plus `belady` and `infinite`.
    #[arg(long = "policy", value_name = "P", value_delimiter = ',')]
    policies: Vec<String>,

    /// Shard counts of the block manager (comma-separated or repeated), each in 1..=MAX_SHARDS;
    /// every policy is replayed at each. Default: the block manager's default shard count.
    #[arg(long = "shards", value_name = "N", value_delimiter = ',', value_parser = parse_shards)]
    shards: Vec<usize>,

    /// Order in which a request's blocks are released after it is served.
    #[arg(long, value_enum, default_value_t = Release::TailFirst)]
    release: Release,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Abort on the first malformed trace line instead of skipping it.
    #[arg(long)]
    strict: bool,

    /// Replay a synthetic multi-turn chat trace instead of a file.
    #[arg(long)]
    synthetic: bool,

    /// Seed of the synthetic trace.
    #[arg(long, default_value_t = 42, requires = "synthetic")]
    seed: u64,

    /// Requests in the synthetic trace (at most 1,000,000).
    #[arg(
        long,
        default_value_t = 10_000,
        requires = "synthetic",
        value_parser = clap::value_parser!(u64).range(1..=MAX_SYNTHETIC_REQUESTS)
    )]
    synthetic_requests: u64,

    /// Longest trace line read, in bytes (newline excluded); a longer one is an error.
    #[arg(long, value_name = "BYTES", default_value_t = ReadLimits::DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,

    /// Most bytes of trace read (file or stdin); a longer input is an error. Raise it for
    /// traces above 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = ReadLimits::DEFAULT_MAX_TOTAL_BYTES)]
    max_trace_bytes: u64,

    /// Replay each policy and capacity this many times and report the median requests/s
    /// (hit counts are deterministic; a shared machine's timing is not).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,

    /// Leave out Belady's offline optimum.
    #[arg(long)]
    no_belady: bool,

    /// Also write the replayed trace to this file as Mooncake JSONL (for example a synthetic one).
    #[arg(long, value_name = "PATH")]
    write_trace: Option<PathBuf>,

    /// Tiered replay: G2 is the block manager (default configuration) at each --capacity, above
    /// a G3 of N blocks (FIFO by write order, as the disk tier); prints G2-alone, G2+G3 and
    /// infinite hit rates and the bytes written to G3 per write policy.
    #[arg(long, value_name = "N", conflicts_with_all = ["policies", "shards"])]
    g3_capacity: Option<usize>,

    /// Write policies of the tiered replay (comma-separated or repeated): write_through,
    /// write_through_selective[:K] (K hits, default 2), write_back, or all. Default: all.
    #[arg(
        long,
        value_name = "P",
        value_delimiter = ',',
        requires = "g3_capacity"
    )]
    write_policy: Vec<String>,

    /// Bytes of one block for the tiered replay's byte figures. Default: 64 MiB (Llama-3.1-8B,
    /// bf16, 512-token blocks: 2 x 32 layers x 512 x 8 KV heads x 128 x 2 bytes).
    #[arg(long, value_name = "BYTES", requires = "g3_capacity")]
    block_bytes: Option<u64>,
}

/// Parses one `--shards` value: an integer in `1..=MAX_SHARDS`.
fn parse_shards(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a shard count (an integer in 1..={MAX_SHARDS})"))?;
    if (1..=MAX_SHARDS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is outside 1..={MAX_SHARDS} (the block manager's MAX_SHARDS)"
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Release {
    /// Deepest block first (what vLLM does).
    TailFirst,
    /// Root first.
    RootFirst,
}

impl From<Release> for ReleaseOrder {
    fn from(r: Release) -> Self {
        match r {
            Release::TailFirst => ReleaseOrder::TailFirst,
            Release::RootFirst => ReleaseOrder::RootFirst,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table: policies by capacities.
    Table,
    /// One JSON array of result rows.
    Json,
}

/// What to replay, resolved from `--policy` and `--no-belady`.
struct Selection {
    online: Vec<NamedPolicy>,
    belady: bool,
    infinite: bool,
}

fn select(args: &ReplayArgs) -> Result<Selection> {
    let builtin = policies();
    if args.policies.is_empty() {
        return Ok(Selection {
            online: builtin,
            belady: !args.no_belady,
            infinite: true,
        });
    }
    let mut sel = Selection {
        online: Vec::new(),
        belady: false,
        infinite: false,
    };
    for name in &args.policies {
        let lower = name.trim().to_ascii_lowercase();
        if let Some(p) = builtin.iter().find(|p| p.name() == lower) {
            if !sel.online.iter().any(|q| q.name() == p.name()) {
                sel.online.push(p.clone());
            }
        } else if lower == "belady" {
            sel.belady = !args.no_belady;
        } else if lower == "infinite" {
            sel.infinite = true;
        } else {
            let known: Vec<&str> = builtin
                .iter()
                .map(NamedPolicy::name)
                .chain(OFFLINE_POLICIES)
                .collect();
            bail!(
                "unknown policy {name:?}; known policies: {}",
                known.join(", ")
            );
        }
    }
    Ok(sel)
}

/// Names the flag that raises a limit the reader hit.
fn with_hint(e: TraceError) -> anyhow::Error {
    let hint = match &e {
        TraceError::LineTooLong { .. } => Some("--max-line-bytes"),
        TraceError::TooLarge { .. } => Some("--max-trace-bytes"),
        _ => None,
    };
    match hint {
        Some(flag) => anyhow::anyhow!("{e}; raise {flag} to read more"),
        None => anyhow::Error::new(e),
    }
}

fn load(args: &ReplayArgs, mode: ParseMode) -> Result<(String, Parsed)> {
    let limits = ReadLimits::default()
        .with_max_line_bytes(args.max_line_bytes)
        .with_max_total_bytes(args.max_trace_bytes);
    if args.synthetic {
        // Within MAX_SYNTHETIC_REQUESTS (clap checked), hence within usize.
        let requests = usize::try_from(args.synthetic_requests)
            .context("--synthetic-requests does not fit this platform")?;
        let cfg = SyntheticConfig {
            seed: args.seed,
            requests,
            ..SyntheticConfig::default()
        };
        let name = format!(
            "synthetic (seed {}, {} requests)",
            args.seed, args.synthetic_requests
        );
        let mut parsed = Parsed::default();
        parsed.trace = cfg.generate();
        return Ok((name, parsed));
    }
    match &args.trace {
        None => Ok((
            SAMPLE_NAME.to_string(),
            Trace::parse_slice(SAMPLE_TRACE, mode).context("parsing the embedded sample trace")?,
        )),
        Some(path) if path.as_os_str() == "-" => {
            let parsed = Trace::from_reader_with_limits(std::io::stdin().lock(), mode, limits)
                .map_err(with_hint)
                .context("reading the trace from stdin")?;
            Ok(("<stdin>".to_string(), parsed))
        }
        Some(path) => {
            let file = File::open(path)
                .with_context(|| format!("cannot open trace {}", path.display()))?;
            let reader = BufReader::with_capacity(1 << 20, file);
            let parsed = Trace::from_reader_with_limits(reader, mode, limits)
                .map_err(with_hint)
                .with_context(|| format!("reading trace {}", path.display()))?;
            Ok((path.display().to_string(), parsed))
        }
    }
}

/// Runs `kvtier replay`.
pub fn run(args: &ReplayArgs) -> Result<()> {
    let sel = select(args)?;
    if args.capacities.contains(&0) {
        bail!("--capacity must be at least 1 block");
    }
    let mode = if args.strict {
        ParseMode::Strict
    } else {
        ParseMode::Lenient
    };
    let (name, parsed) = load(args, mode)?;
    report_skipped(&name, &parsed);
    if let Some(path) = &args.write_trace {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        parsed.trace.write_jsonl(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let chains = Chains::from_trace(&parsed.trace);
    if let Some(g3_capacity) = args.g3_capacity {
        let tiered = TieredArgs {
            name: &name,
            capacities: &args.capacities,
            g3_capacity,
            policies: &args.write_policy,
            block_bytes: args
                .block_bytes
                .unwrap_or_else(kvtier_replay::default_block_bytes),
            release: ReleaseOrder::from(args.release),
            json: args.format == Format::Json,
        };
        return crate::tiered::run(&tiered, &chains);
    }

    let reps = args.reps as usize;
    // `None`: the block manager's default shard count.
    let shard_choices: Vec<Option<usize>> = if args.shards.is_empty() {
        vec![None]
    } else {
        args.shards.iter().copied().map(Some).collect()
    };
    let runs = (sel.online.len() * shard_choices.len() + usize::from(sel.belady))
        * args.capacities.len()
        * reps;
    let bar = progress_bar(args, (runs * chains.len()) as u64);
    let mut tick = |n: u64| bar.inc(n);
    let release = ReleaseOrder::from(args.release);

    let mut rows: Vec<ReplayRow> = Vec::new();
    for p in &sel.online {
        for &shards in &shard_choices {
            for &capacity in &args.capacities {
                let asked = shards.map_or_else(|| "default".to_string(), |n| n.to_string());
                bar.set_message(format!("{} @ {capacity}, {asked} shards", p.name()));
                let mut runs = Vec::with_capacity(reps);
                for _ in 0..reps {
                    let mut builder = ManagerReplay::builder(p, capacity)
                        .with_release(release)
                        .with_slots_for(&chains);
                    if let Some(n) = shards {
                        builder = builder.with_shards(n);
                    }
                    runs.push(builder.build()?.run_with_progress(&chains, &mut tick));
                }
                rows.push(median(runs));
            }
        }
    }
    if sel.belady {
        let belady = Belady::new(&chains);
        for &capacity in &args.capacities {
            bar.set_message(format!("belady @ {capacity}"));
            let slots = ManagerReplay::effective_capacity(capacity, &chains);
            let runs = (0..reps)
                .map(|_| {
                    let mut row = belady.run_with_progress(slots, &mut tick);
                    row.capacity = Some(capacity);
                    row
                })
                .collect();
            rows.push(median(runs));
        }
    }
    if sel.infinite {
        rows.push(infinite(&chains));
    }
    bar.finish_and_clear();
    if args.format == Format::Json {
        for note in clamp_notes(&chains, &args.capacities) {
            eprintln!("note: {note}");
        }
    }

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Table => {
            write!(out, "{}", table(&name, &chains, args, &rows))?;
        }
    }
    Ok(())
}

/// The run with the median requests/s (hit counts are the same in every run of a
/// deterministic manager).
fn median(mut runs: Vec<ReplayRow>) -> ReplayRow {
    runs.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn report_skipped(name: &str, parsed: &Parsed) {
    for e in parsed.errors.iter().take(MAX_REPORTED_ERRORS) {
        eprintln!("warning: {name}: skipped {e}");
    }
    if parsed.skipped_lines > MAX_REPORTED_ERRORS {
        eprintln!(
            "warning: {name}: {} more malformed lines skipped",
            parsed.skipped_lines - MAX_REPORTED_ERRORS
        );
    }
}

fn progress_bar(args: &ReplayArgs, total: u64) -> ProgressBar {
    if args.format == Format::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests {msg} [{elapsed_precise}]")
    {
        bar.set_style(style);
    }
    bar
}

/// One line per capacity that was replayed with fewer slots than asked for.
fn clamp_notes(chains: &Chains, capacities: &[usize]) -> Vec<String> {
    capacities
        .iter()
        .filter_map(|&c| {
            let slots = ManagerReplay::effective_capacity(c, chains);
            (slots < c).then(|| {
                format!(
                    "capacity {c} is at least the trace's {slots} distinct blocks: replayed with \
                     {slots} slots (nothing is ever evicted, so the results are the same)"
                )
            })
        })
        .collect()
}

/// `1,8,64`.
fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `12.3%` style hit rate.
fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// Compact requests per second: `812k/s`, `1.45M/s`.
fn rate(rps: f64) -> String {
    if rps >= 1e6 {
        format!("{:.2}M/s", rps / 1e6)
    } else if rps >= 1e3 {
        format!("{:.0}k/s", rps / 1e3)
    } else {
        format!("{rps:.0}/s")
    }
}

fn table(name: &str, chains: &Chains, args: &ReplayArgs, rows: &[ReplayRow]) -> String {
    const CELL: usize = 19;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "trace: {name}: {} requests, {} blocks ({} distinct), longest request {} blocks",
        chains.len(),
        chains.total_blocks(),
        chains.unique(),
        chains.max_len()
    );
    let _ = writeln!(
        s,
        "metric: hits = leading run of each request's blocks found cached; hit rate = hits / blocks requested"
    );
    let _ = writeln!(
        s,
        "release: {}; shards: {} (each manager's count as built); cells: hit rate, replay requests/s\n",
        ReleaseOrder::from(args.release).as_str(),
        if args.shards.is_empty() {
            "the block manager's default".to_string()
        } else {
            format!("--shards {}", join(&args.shards))
        }
    );
    let _ = write!(s, "{:<10}{:>7}", "policy", "shards");
    for c in &args.capacities {
        let _ = write!(s, "{:>CELL$}", format!("{c} blocks"));
    }
    s.push('\n');

    // Rows come one configuration (policy and shard count, or Belady) at a time, one row per
    // capacity in `--capacity` order.
    let per_capacity: Vec<&ReplayRow> = rows.iter().filter(|r| r.capacity.is_some()).collect();
    for group in per_capacity.chunks(args.capacities.len().max(1)) {
        let mut built: Vec<usize> = group.iter().filter_map(|r| r.shards).collect();
        built.dedup();
        let shards = if built.is_empty() {
            "-".to_string()
        } else {
            built
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("/")
        };
        let _ = write!(s, "{:<10}{shards:>7}", group[0].policy);
        for r in group {
            let cell = format!("{:>7} {:>8}", pct(r.hit_rate), rate(r.requests_per_sec));
            let _ = write!(s, "{cell:>CELL$}");
        }
        s.push('\n');
    }
    if let Some(r) = rows.iter().find(|r| r.capacity.is_none()) {
        let _ = writeln!(
            s,
            "{:<10}{:>7}{:>CELL$}  (every block kept: the bound at any capacity)",
            r.policy,
            "-",
            pct(r.hit_rate)
        );
    }
    for note in clamp_notes(chains, &args.capacities) {
        let _ = writeln!(s, "note: {note}");
    }
    for &c in &args.capacities {
        if let Some(r) = rows
            .iter()
            .find(|r| r.capacity == Some(c) && r.oversized > 0)
        {
            let _ = writeln!(
                s,
                "note: {} requests exceed {c} blocks: their hits are counted, nothing is cached",
                r.oversized
            );
        }
    }
    s
}
