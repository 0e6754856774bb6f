//! `vs-kvbm`: kvtier and NVIDIA Dynamo's kvbm-logical 1.6.1 side by side, in one process, on the
//! same workloads and the same precomputed chains.
//!
//! Workloads (4096 blocks × 16 tokens; those of the anchor harness
//! `shared/anchors/kvbm-logical-bench`, so kvbm's figures compare with its README):
//!
//! - (a) allocate + stage + register + drop a fresh N-chain on a full manager (every
//!   allocation evicts), N = 8, 32, 128 — ns/block;
//! - (b) `match_blocks` on an active N-prefix — ns/block;
//! - (c) `match_blocks` on an inactive N-prefix (resurrect + release) — ns/block;
//! - (d) churn: `--requests` Zipf(1.0) requests over 1,000 prefixes of 4..=64 blocks, 1 thread —
//!   requests/s;
//! - (e) the same from 2 threads sharing one manager, and the 2-thread ÷ 1-thread scaling
//!   (median over repetitions of the per-repetition ratio).
//!
//! Systems: kvbm-logical `lru` and `lineage` (TinyLFU tracker on, as in the anchors); kvtier,
//! every backend kvtier-core exports. Repetitions are interleaved (each repetition runs every
//! system once, the starting system rotating), so a noisy machine slows everyone alike. Tables
//! show medians (± half the min..max spread) and speed-ups (kvtier throughput ÷ kvbm
//! throughput: above 1 means kvtier is faster).
//!
//! ```text
//! cargo run --release -p kvtier-bench --features kvbm --bin vs-kvbm -- --reps 5
//! cargo run --release -p kvtier-bench --features kvbm --bin vs-kvbm -- --quick
//! ```
//!
//! Options: `--reps N` (default 5), `--requests N` churn requests (default 200000), `--quick`
//! (tiny sizes: a smoke run), `--json` (print a JSON document instead of markdown), `--out FILE`
//! (also write the markdown there), `--systems LABEL,...` (only these systems, e.g.
//! `kvtier/lru,kvbm/lru`), `--workloads abcde` (only these workloads; d and e run together).
//! Progress goes to stderr.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use kvtier_bench::{
    AllocRegister, ChurnRun, ChurnWorkload, KvbmBackend, KvbmFactory, KvtierFactory,
    ManagerFactory, MatchPrefix, Sizes, Stat, churn_run, kvtier_backends,
};
use serde::Serialize;

struct Opts {
    reps: usize,
    requests: usize,
    quick: bool,
    json: bool,
    out: Option<String>,
    systems: Option<Vec<String>>,
    workloads: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        requests: 200_000,
        quick: false,
        json: false,
        out: None,
        systems: None,
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
            "--workloads" => o.workloads = value("--workloads")?,
            "-h" | "--help" => {
                return Err(
                    "usage: vs-kvbm [--reps N] [--requests N] [--quick] [--json] \
                            [--out FILE] [--systems kvtier/lru,kvbm/lru] [--workloads abcde]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if o.quick && !requests_set {
        o.requests = 5_000;
    }
    Ok(o)
}

/// One system under test.
#[derive(Clone, Copy)]
enum System {
    Kvbm(KvbmFactory),
    Kvtier(KvtierFactory),
}

impl System {
    fn all() -> Vec<System> {
        let mut v: Vec<System> = KvbmBackend::ALL
            .into_iter()
            .map(|backend| System::Kvbm(KvbmFactory { backend }))
            .collect();
        v.extend(kvtier_backends().into_iter().map(System::Kvtier));
        v
    }

    fn label(&self) -> String {
        match self {
            System::Kvbm(f) => f.label(),
            System::Kvtier(f) => f.label(),
        }
    }

    fn is_kvbm(&self) -> bool {
        matches!(self, System::Kvbm(_))
    }

    fn backend(&self) -> &'static str {
        match self {
            System::Kvbm(f) => f.backend.label(),
            System::Kvtier(f) => f.backend(),
        }
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
        match self {
            System::Kvbm(f) => make(f, id, n, sizes),
            System::Kvtier(f) => make(f, id, n, sizes),
        }
    }

    fn churn(&self, w: &ChurnWorkload, threads: usize) -> ChurnRun {
        match self {
            System::Kvbm(f) => churn_run(f, w, threads),
            System::Kvtier(f) => churn_run(f, w, threads),
        }
    }
}

#[derive(Serialize)]
struct Cell {
    system: String,
    stat: Stat,
}

#[derive(Serialize)]
struct Row {
    id: String,
    workload: String,
    /// `ns/block` (lower is better) or `requests/s` (higher is better).
    unit: &'static str,
    cells: Vec<Cell>,
}

impl Row {
    fn lower_is_better(&self) -> bool {
        self.unit == "ns/block"
    }

    fn get(&self, system: &str) -> Option<&Stat> {
        self.cells
            .iter()
            .find(|c| c.system == system)
            .map(|c| &c.stat)
    }

    /// Throughput of `a` ÷ throughput of `b`.
    fn speedup(&self, a: &Stat, b: &Stat) -> f64 {
        if self.lower_is_better() {
            b.median / a.median
        } else {
            a.median / b.median
        }
    }
}

#[derive(Serialize)]
struct ChurnSummary {
    system: String,
    req_per_s_1t: Stat,
    req_per_s_2t: Stat,
    /// Median over repetitions of (2-thread req/s ÷ 1-thread req/s).
    scaling_2t_over_1t: Stat,
    hit_rate_1t: f64,
    hit_rate_2t: Stat,
    alloc_failures: u64,
}

#[derive(Serialize)]
struct Report {
    date_utc: String,
    machine: String,
    command: String,
    reps: usize,
    requests: usize,
    quick: bool,
    load_start: String,
    load_end: String,
    rows: Vec<Row>,
    churn: Vec<ChurnSummary>,
}

/// Runs `reps` interleaved repetitions of one micro workload over every system.
fn micro_row(systems: &[System], id: char, n: usize, sizes: Sizes, reps: usize) -> Row {
    let name = match id {
        'a' => "allocate + stage + register + drop",
        'b' => "match_blocks, active prefix",
        _ => "match_blocks, inactive prefix",
    };
    eprintln!("({id}) {name}, N = {n} ...");
    let mut runners: Vec<Box<dyn FnMut() -> f64>> =
        systems.iter().map(|s| s.micro(id, n, sizes)).collect();
    let mut samples = vec![Vec::with_capacity(reps); systems.len()];
    for rep in 0..reps {
        for k in 0..systems.len() {
            let i = (k + rep) % systems.len();
            samples[i].push(runners[i]());
        }
    }
    Row {
        id: id.to_string(),
        workload: format!("{name}, N = {n}"),
        unit: "ns/block",
        cells: systems
            .iter()
            .zip(samples)
            .map(|(s, v)| Cell {
                system: s.label(),
                stat: Stat::from_values(v),
            })
            .collect(),
    }
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
    let rps = |v: &[ChurnRun]| Stat::from_values(v.iter().map(|r| r.req_per_s).collect());
    let row = |id: &str, name: &str, runs: &[Vec<ChurnRun>]| Row {
        id: id.into(),
        workload: name.into(),
        unit: "requests/s",
        cells: systems
            .iter()
            .zip(runs)
            .map(|(s, v)| Cell {
                system: s.label(),
                stat: rps(v),
            })
            .collect(),
    };
    let d = row("d", "churn, 1 thread", &one);
    let e = row("e", "churn, 2 threads sharing one manager", &two);
    let summary = systems
        .iter()
        .enumerate()
        .map(|(i, s)| ChurnSummary {
            system: s.label(),
            req_per_s_1t: rps(&one[i]),
            req_per_s_2t: rps(&two[i]),
            scaling_2t_over_1t: Stat::from_values(
                one[i]
                    .iter()
                    .zip(&two[i])
                    .map(|(a, b)| b.req_per_s / a.req_per_s)
                    .collect(),
            ),
            hit_rate_1t: one[i][0].hit_rate,
            hit_rate_2t: Stat::from_values(two[i].iter().map(|r| r.hit_rate).collect()),
            alloc_failures: one[i].iter().chain(&two[i]).map(|r| r.alloc_failures).sum(),
        })
        .collect();
    (d, e, summary)
}

fn fmt_value(v: f64, unit: &str) -> String {
    if unit == "ns/block" {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.1} k", v / 1e3)
    }
}

fn markdown(r: &Report, systems: &[System]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# kvtier vs kvbm-logical 1.6.1\n");
    let _ = writeln!(s, "- date (UTC): {}", r.date_utc);
    let _ = writeln!(s, "- machine: {}", r.machine);
    let _ = writeln!(s, "- command: `{}`", r.command);
    let _ = writeln!(
        s,
        "- {} interleaved repetitions; load average {} at start, {} at end",
        r.reps, r.load_start, r.load_end
    );
    let _ = writeln!(
        s,
        "- cells: median (± half the min..max spread, % of median); speed-up = kvtier \
         throughput ÷ kvbm throughput (> 1: kvtier faster)\n"
    );
    let mut hdr = String::from("| | workload | unit |");
    let mut sep = String::from("|---|---|---|");
    for sys in systems {
        let _ = write!(hdr, " {} |", sys.label());
        sep.push_str("---:|");
    }
    let kvtier: Vec<&System> = systems.iter().filter(|s| !s.is_kvbm()).collect();
    let kvbm: Vec<&System> = systems.iter().filter(|s| s.is_kvbm()).collect();
    let pairs: Vec<(&System, &System)> = kvbm
        .iter()
        .filter_map(|b| {
            kvtier
                .iter()
                .find(|t| t.backend() == b.backend())
                .map(|t| (*t, *b))
        })
        .collect();
    for (t, _) in &pairs {
        let _ = write!(hdr, " speed-up {} |", t.backend());
        sep.push_str("---:|");
    }
    hdr.push_str(" speed-up worst kvtier vs best kvbm |");
    sep.push_str("---:|");
    let _ = writeln!(s, "{hdr}\n{sep}");
    for row in &r.rows {
        let mut line = format!("| {} | {} | {} |", row.id, row.workload, row.unit);
        for sys in systems {
            let st = row.get(&sys.label()).expect("every system measured");
            let _ = write!(
                line,
                " {} ±{:.0}% |",
                fmt_value(st.median, row.unit),
                st.spread_pct()
            );
        }
        for (t, b) in &pairs {
            let (t, b) = (row.get(&t.label()).unwrap(), row.get(&b.label()).unwrap());
            let _ = write!(line, " {:.2}× |", row.speedup(t, b));
        }
        // The fastest kvbm system: the one every other kvbm system is no faster than.
        let best_kvbm =
            kvbm.iter()
                .map(|b| row.get(&b.label()).unwrap())
                .fold(None::<&Stat>, |best, x| match best {
                    Some(b) if row.speedup(b, x) >= 1.0 => Some(b),
                    _ => Some(x),
                });
        match best_kvbm {
            Some(best) if !kvtier.is_empty() => {
                let worst = kvtier
                    .iter()
                    .map(|t| row.speedup(row.get(&t.label()).unwrap(), best))
                    .fold(f64::INFINITY, f64::min);
                let _ = write!(line, " {worst:.2}× |");
            }
            _ => line.push_str(" – |"),
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\n## Churn detail: thread scaling and hit rates\n\n\
         | system | 1 thread req/s | 2 threads req/s | scaling 2T ÷ 1T (median of pairs, min..max) | \
         hit rate 1T | hit rate 2T (median) | alloc failures |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.churn {
        let _ = writeln!(
            s,
            "| {} | {} ±{:.0}% | {} ±{:.0}% | {:.2}× ({:.2}..{:.2}) | {:.2}% | {:.2}% | {} |",
            c.system,
            fmt_value(c.req_per_s_1t.median, "requests/s"),
            c.req_per_s_1t.spread_pct(),
            fmt_value(c.req_per_s_2t.median, "requests/s"),
            c.req_per_s_2t.spread_pct(),
            c.scaling_2t_over_1t.median,
            c.scaling_2t_over_1t.min,
            c.scaling_2t_over_1t.max,
            c.hit_rate_1t * 100.0,
            c.hit_rate_2t.median * 100.0,
            c.alloc_failures
        );
    }
    s
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
    let mut systems = System::all();
    if let Some(keep) = &o.systems {
        systems.retain(|s| keep.contains(&s.label()));
    }
    if systems.is_empty() {
        eprintln!("--systems matched no system");
        std::process::exit(2);
    }
    let load_start = loadavg();
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
    let report = Report {
        date_utc: utc_now(),
        machine: machine_info(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        reps: o.reps,
        requests: o.requests,
        quick: o.quick,
        load_start,
        load_end: loadavg(),
        rows,
        churn,
    };
    let md = markdown(&report, &systems);
    if let Some(path) = &o.out
        && let Err(e) = std::fs::write(path, &md)
    {
        eprintln!("cannot write {path}: {e}");
    }
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        print!("{md}");
    }
}
