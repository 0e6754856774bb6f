//! `vs-kvbm`: kvtier and NVIDIA Dynamo's kvbm-logical 1.6.1 side by side, in one process, on the
//! same workloads and the same precomputed chains.
//!
//! Workloads (4096 blocks × 16 tokens; those of the anchor harness
//! `shared/anchors/kvbm-logical-bench`, so kvbm's figures compare with its README):
//!
//! - (a) allocate + stage + register + drop a fresh N-chain on a full manager (every
//!   allocation evicts), N = 8, 32, 128 — ns/block;
//! - (b) `match_blocks` on an active N-prefix, result released — ns/block;
//! - (c) `match_blocks` on an inactive N-prefix (resurrect + release) — ns/block;
//! - (d) churn: `--requests` Zipf(1.0) requests over 1,000 prefixes of 4..=64 blocks, 1 thread —
//!   requests/s and the block hit rate;
//! - (e) the same from 2 threads sharing one manager, and the 2-thread ÷ 1-thread scaling
//!   (median over repetitions of the per-repetition ratio).
//!
//! Systems (see `--systems`):
//!
//! - kvbm-logical `lru` and `lineage` with the TinyLFU tracker (the anchors' configuration), and
//!   `lru` without it (`kvbm/lru (no TinyLFU)`); kvbm drops handles one by one (it has no batch
//!   release).
//! - kvtier, every backend kvtier-core exports, in the default `BlockManager` configuration
//!   (default shard count) with handles dropped one by one: the headline rows.
//! - Extra kvtier rows, labelled: `@1` (one shard asked for: the exact single eviction order,
//!   whose hit rate the default configuration should keep) and `+batch` (`release_blocks`,
//!   kvtier's batch release, which kvbm lacks).
//!
//! Every kvtier row names its policy and the shard count its manager was built with. Repetitions
//! are interleaved (each repetition runs every system once, the starting system rotating), so
//! a noisy machine slows everyone alike; ratios pair the systems' results repetition by
//! repetition and report the median.
//!
//! ```text
//! cargo run --release -p kvtier-bench --features kvbm --bin vs-kvbm -- --reps 5
//! cargo run --release -p kvtier-bench --features kvbm --bin vs-kvbm -- --quick
//! ```
//!
//! Options: `--reps N` (default 5), `--requests N` churn requests (default 200000), `--quick`
//! (tiny sizes: a smoke run), `--json` (print a JSON document instead of markdown), `--out FILE`
//! (also write the markdown there), `--systems LABEL,...` (only these systems, by label, e.g.
//! `kvtier/lru,kvbm/lru`; kvbm's comparison rows need their kvbm systems), `--no-extra` (only
//! kvbm and the headline kvtier rows), `--workloads abcde` (only these workloads; d and e run
//! together). Progress goes to stderr. The report layout is described in `vs_kvbm/report.rs`.

#[path = "vs_kvbm/report.rs"]
mod report;

use std::time::{SystemTime, UNIX_EPOCH};

use kvtier_bench::{
    AllocRegister, CAPACITY, ChurnRun, ChurnWorkload, KvbmBackend, KvbmFactory, KvtierFactory,
    ManagerFactory, MatchPrefix, Release, Sizes, churn_run, kvtier_backends,
};
use report::{Cell, ChurnSummary, Report, Row, SystemInfo};

struct Opts {
    reps: usize,
    requests: usize,
    quick: bool,
    json: bool,
    out: Option<String>,
    systems: Option<Vec<String>>,
    extra: bool,
    workloads: String,
}

const USAGE: &str = "usage: vs-kvbm [--reps N] [--requests N] [--quick] [--json] [--out FILE] \
                     [--systems kvtier/lru,kvbm/lru] [--no-extra] [--workloads abcde]";

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        requests: 200_000,
        quick: false,
        json: false,
        out: None,
        systems: None,
        extra: true,
        workloads: "abcde".into(),
    };
    let mut requests_set = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--reps" => {
                o.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--requests" => {
                o.requests = value("--requests")?
                    .parse()
                    .map_err(|e| format!("--requests: {e}"))?;
                requests_set = true;
            }
            "--quick" => o.quick = true,
            "--json" => o.json = true,
            "--out" => o.out = Some(value("--out")?),
            "--systems" => {
                o.systems = Some(value("--systems")?.split(',').map(str::to_string).collect());
            }
            "--no-extra" => o.extra = false,
            "--workloads" => o.workloads = value("--workloads")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if o.requests == 0 {
        return Err("--requests must be at least 1".into());
    }
    if o.quick && !requests_set {
        o.requests = 5_000;
    }
    Ok(o)
}

/// How a system is built.
#[derive(Clone, Copy)]
enum Factory {
    Kvbm(KvbmFactory),
    Kvtier(KvtierFactory),
}

/// One system under test and what the report says about it.
struct System {
    factory: Factory,
    info: SystemInfo,
}

impl System {
    fn kvbm(f: KvbmFactory) -> Self {
        Self {
            factory: Factory::Kvbm(f),
            info: SystemInfo {
                label: f.label(),
                kvbm: true,
                backend: f.backend.label().to_string(),
                tiny_lfu: f.tracker,
                shards: None,
                default_shards: false,
                release: "per handle".into(),
                headline: true,
            },
        }
    }

    fn kvtier(f: KvtierFactory) -> Self {
        Self {
            factory: Factory::Kvtier(f),
            info: SystemInfo {
                label: f.label(),
                kvbm: false,
                backend: f.backend().to_string(),
                tiny_lfu: false,
                shards: Some(f.built_shards(CAPACITY)),
                default_shards: f.shards().is_none(),
                release: f.release().label().to_string(),
                headline: f.shards().is_none() && f.release() == Release::PerHandle,
            },
        }
    }

    /// kvbm (lru, lru without TinyLFU, lineage), every kvtier backend in the default
    /// configuration, then (with `extra`) the 1-shard and batch-release rows of the default
    /// policy and of `lru`.
    fn all(extra: bool) -> Vec<System> {
        let mut v = vec![
            System::kvbm(KvbmFactory::new(KvbmBackend::Lru)),
            System::kvbm(KvbmFactory::new(KvbmBackend::Lru).without_tracker()),
            System::kvbm(KvbmFactory::new(KvbmBackend::Lineage)),
        ];
        let backends = kvtier_backends();
        v.extend(backends.iter().map(|f| System::kvtier(*f)));
        if extra {
            for f in backends
                .iter()
                .filter(|f| matches!(f.backend(), "freqlease" | "lru"))
            {
                v.push(System::kvtier(f.with_shards(1)));
            }
            for f in backends
                .iter()
                .filter(|f| matches!(f.backend(), "freqlease" | "lru"))
            {
                v.push(System::kvtier(f.with_release(Release::Batch)));
            }
        }
        v
    }

    /// A repetition closure for micro workload `id` (a, b or c).
    fn micro(&self, id: char, n: usize, sizes: Sizes) -> Box<dyn FnMut() -> f64> {
        fn make<F: ManagerFactory>(
            f: &F,
            id: char,
            n: usize,
            sizes: Sizes,
        ) -> Box<dyn FnMut() -> f64>
        where
            F::M: 'static,
        {
            match id {
                'a' => {
                    let mut w = AllocRegister::new(f, n, sizes);
                    Box::new(move || w.run())
                }
                _ => {
                    let mut w = MatchPrefix::new(f, n, id == 'b', sizes);
                    Box::new(move || w.run())
                }
            }
        }
        match &self.factory {
            Factory::Kvbm(f) => make(f, id, n, sizes),
            Factory::Kvtier(f) => make(f, id, n, sizes),
        }
    }

    fn churn(&self, w: &ChurnWorkload, threads: usize) -> ChurnRun {
        match &self.factory {
            Factory::Kvbm(f) => churn_run(f, w, threads),
            Factory::Kvtier(f) => churn_run(f, w, threads),
        }
    }
}

/// Runs `reps` interleaved repetitions of one micro workload over every system.
fn micro_row(systems: &[System], id: char, n: usize, sizes: Sizes, reps: usize) -> Row {
    eprintln!("({id}) {}, N = {n} ...", report::workload_name(id));
    let mut runners: Vec<Box<dyn FnMut() -> f64>> =
        systems.iter().map(|s| s.micro(id, n, sizes)).collect();
    let mut samples = vec![Vec::with_capacity(reps); systems.len()];
    for rep in 0..reps {
        for k in 0..systems.len() {
            let i = (k + rep) % systems.len();
            samples[i].push(runners[i]());
        }
    }
    Row::new(
        id,
        Some(n),
        "ns/block",
        systems
            .iter()
            .zip(samples)
            .map(|(s, v)| Cell::new(&s.info.label, v))
            .collect(),
    )
}

/// Runs `reps` interleaved repetitions of churn, 1 and 2 threads back to back per system.
fn churn_rows(systems: &[System], w: &ChurnWorkload, reps: usize) -> (Row, Row, Vec<ChurnSummary>) {
    eprintln!(
        "(d)/(e) churn, {} requests, 1 and 2 threads ...",
        w.requests.len()
    );
    let k = systems.len();
    let mut one: Vec<Vec<ChurnRun>> = vec![Vec::new(); k];
    let mut two: Vec<Vec<ChurnRun>> = vec![Vec::new(); k];
    for rep in 0..reps {
        for j in 0..k {
            let i = (j + rep) % k;
            // Alternate which thread count goes first, so neither always runs on a warmer cache.
            if rep % 2 == 0 {
                one[i].push(systems[i].churn(w, 1));
                two[i].push(systems[i].churn(w, 2));
            } else {
                two[i].push(systems[i].churn(w, 2));
                one[i].push(systems[i].churn(w, 1));
            }
        }
        eprintln!("  rep {}/{reps} done", rep + 1);
    }
    let row = |id: char, runs: &[Vec<ChurnRun>]| {
        Row::new(
            id,
            None,
            "requests/s",
            systems
                .iter()
                .zip(runs)
                .map(|(s, v)| Cell::new(&s.info.label, v.iter().map(|r| r.req_per_s).collect()))
                .collect(),
        )
    };
    let summary = systems
        .iter()
        .zip(one.iter().zip(&two))
        .map(|(s, (one, two))| ChurnSummary::new(&s.info.label, one, two))
        .collect();
    (row('d', &one), row('e', &two), summary)
}

fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM` (UTC) from the system clock (civil-from-days, no date crate).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let sizes = if o.quick { Sizes::QUICK } else { Sizes::FULL };
    let mut systems = System::all(o.extra);
    if let Some(keep) = &o.systems {
        systems.retain(|s| keep.contains(&s.info.label));
    }
    if systems.is_empty() {
        eprintln!("--systems matched no system");
        std::process::exit(2);
    }
    let load_start = loadavg();
    let date_utc = utc_now();
    let mut rows = Vec::new();
    for id in ['a', 'b', 'c']
        .into_iter()
        .filter(|c| o.workloads.contains(*c))
    {
        for n in [8, 32, 128] {
            rows.push(micro_row(&systems, id, n, sizes, o.reps));
        }
    }
    let mut churn = Vec::new();
    if o.workloads.contains('d') || o.workloads.contains('e') {
        let w = ChurnWorkload::standard(o.requests);
        let (d, e, summary) = churn_rows(&systems, &w, o.reps);
        rows.push(d);
        rows.push(e);
        churn = summary;
    }
    let mut report = Report {
        date_utc,
        machine: machine_info(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        reps: o.reps,
        requests: o.requests,
        quick: o.quick,
        load_start,
        load_end: loadavg(),
        systems: systems.into_iter().map(|s| s.info).collect(),
        rows,
        churn,
        ratios: Vec::new(),
    };
    report.summarize();
    let md = report.markdown();
    if let Some(path) = &o.out
        && let Err(e) = std::fs::write(path, &md)
    {
        eprintln!("cannot write {path}: {e}");
    }
    if o.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot serialize the report: {e}");
                std::process::exit(1);
            }
        }
    } else {
        print!("{md}");
    }
}
