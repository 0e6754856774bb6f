//! The `vs-kvbm` report: the measurements (one [`Row`] per workload, every repetition kept),
//! the ratios against kvbm, and their markdown layout.
//!
//! Markdown layout, in order:
//!
//! ```text
//! header          date, machine, command, repetitions, load at start and end, how to read rows
//! (a) (b) (c)     one table per micro workload: | system | shards | release | N = 8 | N = 32 | N = 128 |
//!                 cells: median ns/block ± half the min..max spread (% of the median)
//! (d)/(e)         churn: | system | shards | release | 1 thread req/s | hit rate 1T |
//!                 2 threads req/s | hit rate 2T | 2T ÷ 1T | alloc failures |
//! summary         | kvtier system | shards | release | versus | (a) | (b) | (c) | (d) 1T | (e) 2T |
//!                 three lines per kvtier system: the best kvbm with TinyLFU (per workload and N),
//!                 the namesake kvbm backend (when there is one), kvbm's LRU without TinyLFU
//! ```
//!
//! Ratios are throughput ratios (kvtier ÷ kvbm; > 1: kvtier faster), paired by repetition (the
//! systems ran interleaved, so repetition i of both saw the same background), the median of the
//! per-repetition ratios; for (a)–(c) the summary gives the range over N.

use std::fmt::Write as _;

use kvtier_bench::{ChurnRun, Stat};
use serde::Serialize;

/// What the report says about one system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemInfo {
    /// Row label (`kvbm/lru`, `kvbm/lru (no TinyLFU)`, `kvtier/lru`, `kvtier/lru@1`,
    /// `kvtier/lru +batch`).
    pub label: String,
    /// kvbm-logical (true) or kvtier (false).
    pub kvbm: bool,
    /// Eviction backend / policy name.
    pub backend: String,
    /// kvbm only: whether the registry has the TinyLFU frequency tracker.
    pub tiny_lfu: bool,
    /// kvtier only: shard count of the managers as built.
    pub shards: Option<usize>,
    /// kvtier only: whether that is the manager's default shard count.
    pub default_shards: bool,
    /// `per handle` (one drop per handle) or `batch` (kvtier's `release_blocks`).
    pub release: String,
    /// kvbm rows and kvtier's default configuration with per-handle release.
    pub headline: bool,
}

impl SystemInfo {
    fn shards_cell(&self) -> String {
        match (self.shards, self.default_shards) {
            (None, _) => "–".into(),
            (Some(n), true) => format!("{n} (default)"),
            (Some(n), false) => n.to_string(),
        }
    }
}

/// One system's repetitions of one workload.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// System label.
    pub system: String,
    /// Median, min, max.
    pub stat: Stat,
    /// Every repetition, in order (repetition i of every system ran in the same round).
    pub values: Vec<f64>,
}

impl Cell {
    /// A cell of `values` for `system`.
    pub fn new(system: &str, values: Vec<f64>) -> Self {
        Self {
            system: system.to_string(),
            stat: Stat::from_values(values.clone()),
            values,
        }
    }
}

/// The long name of workload `id`.
pub fn workload_name(id: char) -> &'static str {
    match id {
        'a' => "allocate + stage + register + drop",
        'b' => "match_blocks, active prefix",
        'c' => "match_blocks, inactive prefix (resurrect + release)",
        'd' => "churn, 1 thread",
        _ => "churn, 2 threads sharing one manager",
    }
}

/// One workload (at one N) over every system.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Workload id: a, b, c, d or e.
    pub id: char,
    /// Chain length N of the micro workloads.
    pub n: Option<usize>,
    /// Workload name.
    pub workload: String,
    /// `ns/block` (lower is better) or `requests/s` (higher is better).
    pub unit: &'static str,
    /// One cell per system.
    pub cells: Vec<Cell>,
}

impl Row {
    /// A row of workload `id` at chain length `n`.
    pub fn new(id: char, n: Option<usize>, unit: &'static str, cells: Vec<Cell>) -> Self {
        let workload = match n {
            Some(n) => format!("{}, N = {n}", workload_name(id)),
            None => workload_name(id).to_string(),
        };
        Self {
            id,
            n,
            workload,
            unit,
            cells,
        }
    }

    fn get(&self, system: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.system == system)
    }

    /// Throughput of `a` ÷ throughput of `b` from two measurements in this row's unit.
    fn speedup(&self, a: f64, b: f64) -> f64 {
        if self.unit == "ns/block" {
            b / a
        } else {
            a / b
        }
    }

    /// Median over repetitions of throughput(`a`) ÷ throughput(`b`).
    fn paired_ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        let ratios: Vec<f64> = a
            .values
            .iter()
            .zip(&b.values)
            .map(|(&x, &y)| self.speedup(x, y))
            .collect();
        (!ratios.is_empty()).then(|| Stat::from_values(ratios).median)
    }

    /// The fastest (by median) of `candidates` measured in this row.
    fn fastest<'a>(&self, candidates: &[&'a str]) -> Option<&'a str> {
        candidates
            .iter()
            .filter_map(|&c| self.get(c).map(|cell| (c, cell.stat.median)))
            .reduce(|best, x| {
                if self.speedup(x.1, best.1) > 1.0 {
                    x
                } else {
                    best
                }
            })
            .map(|(c, _)| c)
    }
}

/// Churn details of one system: speed and hit rate at 1 and 2 threads.
#[derive(Debug, Serialize)]
pub struct ChurnSummary {
    /// System label.
    pub system: String,
    /// Requests/s, 1 thread.
    pub req_per_s_1t: Stat,
    /// Requests/s, 2 threads sharing one manager.
    pub req_per_s_2t: Stat,
    /// Median over repetitions of (2-thread req/s ÷ 1-thread req/s).
    pub scaling_2t_over_1t: Stat,
    /// Block hit rate, 1 thread (min ≠ max: the manager is not deterministic).
    pub hit_rate_1t: Stat,
    /// Block hit rate, 2 threads.
    pub hit_rate_2t: Stat,
    /// Requests whose tail could not be allocated, over every run.
    pub alloc_failures: u64,
}

impl ChurnSummary {
    /// The summary of `system`'s 1-thread and 2-thread runs (same repetition count).
    pub fn new(system: &str, one: &[ChurnRun], two: &[ChurnRun]) -> Self {
        let stat =
            |v: &[ChurnRun], f: fn(&ChurnRun) -> f64| Stat::from_values(v.iter().map(f).collect());
        Self {
            system: system.to_string(),
            req_per_s_1t: stat(one, |r| r.req_per_s),
            req_per_s_2t: stat(two, |r| r.req_per_s),
            scaling_2t_over_1t: Stat::from_values(
                one.iter()
                    .zip(two)
                    .map(|(a, b)| b.req_per_s / a.req_per_s)
                    .collect(),
            ),
            hit_rate_1t: stat(one, |r| r.hit_rate),
            hit_rate_2t: stat(two, |r| r.hit_rate),
            alloc_failures: one.iter().chain(two).map(|r| r.alloc_failures).sum(),
        }
    }
}

/// A kvtier system against one kvbm baseline on one workload.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// kvtier system label.
    pub system: String,
    /// `best kvbm (TinyLFU)`, `namesake` or `kvbm LRU without TinyLFU`.
    pub versus: &'static str,
    /// The kvbm label(s) compared with (the best may differ between N).
    pub baseline: String,
    /// Workload id.
    pub workload: char,
    /// Smallest ratio over N (the only one for churn).
    pub min: f64,
    /// Largest ratio over N.
    pub max: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `YYYY-MM-DD HH:MM` UTC at start.
    pub date_utc: String,
    /// Cores and CPU model.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// Interleaved repetitions.
    pub reps: usize,
    /// Churn requests.
    pub requests: usize,
    /// Whether `--quick` sizes were used.
    pub quick: bool,
    /// `/proc/loadavg` at start.
    pub load_start: String,
    /// `/proc/loadavg` at end.
    pub load_end: String,
    /// The systems, in row order.
    pub systems: Vec<SystemInfo>,
    /// One row per workload and N.
    pub rows: Vec<Row>,
    /// Churn details per system.
    pub churn: Vec<ChurnSummary>,
    /// kvtier ÷ kvbm ratios (filled by [`Report::summarize`]).
    pub ratios: Vec<Ratio>,
}

/// `714`, `35.9`, `1.23 M`, `54.2 k`.
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

/// `64.24%`, or `64.10–64.31%` when repetitions differ.
fn fmt_rate(s: &Stat) -> String {
    if (s.max - s.min).abs() < 1e-12 {
        format!("{:.2}%", s.median * 100.0)
    } else {
        format!("{:.2}–{:.2}%", s.min * 100.0, s.max * 100.0)
    }
}

/// `1.46×`, or `1.46–1.60×`.
fn fmt_ratio(min: f64, max: f64) -> String {
    if (max - min).abs() < 0.005 {
        format!("{min:.2}×")
    } else {
        format!("{min:.2}–{max:.2}×")
    }
}

impl Report {
    fn system(&self, label: &str) -> Option<&SystemInfo> {
        self.systems.iter().find(|s| s.label == label)
    }

    /// Computes [`ratios`](Self::ratios): every kvtier system against the best kvbm with
    /// TinyLFU, its namesake kvbm backend, and kvbm's LRU without TinyLFU.
    pub fn summarize(&mut self) {
        let tracked: Vec<&str> = self
            .systems
            .iter()
            .filter(|s| s.kvbm && s.tiny_lfu)
            .map(|s| s.label.as_str())
            .collect();
        let lru_plain = self
            .systems
            .iter()
            .find(|s| s.kvbm && !s.tiny_lfu && s.backend == "lru")
            .map(|s| s.label.as_str());
        let mut ratios = Vec::new();
        for t in self.systems.iter().filter(|s| !s.kvbm) {
            let namesake = self
                .systems
                .iter()
                .find(|s| s.kvbm && s.tiny_lfu && s.backend == t.backend)
                .map(|s| s.label.as_str());
            for id in ['a', 'b', 'c', 'd', 'e'] {
                let rows: Vec<&Row> = self.rows.iter().filter(|r| r.id == id).collect();
                if rows.is_empty() {
                    continue;
                }
                let mut push = |versus: &'static str, pick: &dyn Fn(&Row) -> Option<String>| {
                    let mut baselines: Vec<String> = Vec::new();
                    let mut values = Vec::new();
                    for r in &rows {
                        let Some(b) = pick(r) else { continue };
                        if let Some(x) = r.paired_ratio(&t.label, &b) {
                            values.push(x);
                            if !baselines.contains(&b) {
                                baselines.push(b);
                            }
                        }
                    }
                    if !values.is_empty() {
                        ratios.push(Ratio {
                            system: t.label.clone(),
                            versus,
                            baseline: baselines.join(" / "),
                            workload: id,
                            min: values.iter().copied().fold(f64::INFINITY, f64::min),
                            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        });
                    }
                };
                push("best kvbm (TinyLFU)", &|r: &Row| {
                    r.fastest(&tracked).map(str::to_string)
                });
                if let Some(n) = namesake {
                    push("namesake", &|_: &Row| Some(n.to_string()));
                }
                if let Some(l) = lru_plain {
                    push("kvbm LRU without TinyLFU", &|_: &Row| Some(l.to_string()));
                }
            }
        }
        self.ratios = ratios;
    }

    /// The report as markdown (layout in the module docs).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        for id in ['a', 'b', 'c'] {
            self.micro_table(&mut s, id);
        }
        self.churn_table(&mut s);
        self.summary_table(&mut s);
        s
    }

    fn header(&self, s: &mut String) {
        let _ = writeln!(s, "# kvtier vs kvbm-logical 1.6.1\n");
        let _ = writeln!(s, "- date (UTC): {}", self.date_utc);
        let _ = writeln!(s, "- machine: {}", self.machine);
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- {} interleaved repetitions{}; load average {} at start, {} at end",
            self.reps,
            if self.quick { " (--quick sizes)" } else { "" },
            self.load_start,
            self.load_end
        );
        let _ = writeln!(
            s,
            "- managers: 4096 blocks × 16 tokens, duplication `Allow`, a request's handles \
             released front to back (root first)"
        );
        let _ = writeln!(
            s,
            "- kvbm: TinyLFU tracker on (the anchors' configuration) unless the label says \
             `(no TinyLFU)`; handles dropped one by one (kvbm has no batch release)"
        );
        let _ = writeln!(
            s,
            "- kvtier: the default `BlockManager` configuration, handles dropped one by one, \
             unless the label says otherwise: `@N` = N shards asked for, `+batch` = handles \
             released with `release_blocks` (an extra row: kvbm has no equivalent). The shards \
             column gives the count each manager was built with"
        );
        let _ = writeln!(
            s,
            "- cells: median (± half the min..max spread, % of the median)\n"
        );
    }

    fn micro_table(&self, s: &mut String, id: char) {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.id == id).collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## ({id}) {} (ns/block, lower is better)\n",
            workload_name(id)
        );
        let mut hdr = String::from("| system | shards | release |");
        let mut sep = String::from("|---|---:|---|");
        for r in &rows {
            let _ = write!(hdr, " N = {} |", r.n.unwrap_or(0));
            sep.push_str("---:|");
        }
        let _ = writeln!(s, "{hdr}\n{sep}");
        for sys in &self.systems {
            let mut line = format!(
                "| {} | {} | {} |",
                sys.label,
                sys.shards_cell(),
                sys.release
            );
            for r in &rows {
                match r.get(&sys.label) {
                    Some(c) => {
                        let _ = write!(
                            line,
                            " {} ±{:.0}% |",
                            fmt_value(c.stat.median, r.unit),
                            c.stat.spread_pct()
                        );
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }

    fn churn_table(&self, s: &mut String) {
        if self.churn.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "## (d)/(e) churn: {} Zipf(1.0) requests over 1,000 prefixes of 4..=64 blocks\n\n\
             Speed and block hit rate of each configuration; 2T ÷ 1T is the median over \
             repetitions of each repetition's ratio (min..max).\n\n\
             | system | shards | release | 1 thread req/s | hit rate 1T | 2 threads req/s | \
             hit rate 2T | 2T ÷ 1T | alloc failures |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---:|",
            self.requests
        );
        for c in &self.churn {
            let (shards, release) = self
                .system(&c.system)
                .map_or(("–".into(), String::new()), |i| {
                    (i.shards_cell(), i.release.clone())
                });
            let _ = writeln!(
                s,
                "| {} | {shards} | {release} | {} ±{:.0}% | {} | {} ±{:.0}% | {} | {:.2}× ({:.2}..{:.2}) | {} |",
                c.system,
                fmt_value(c.req_per_s_1t.median, "requests/s"),
                c.req_per_s_1t.spread_pct(),
                fmt_rate(&c.hit_rate_1t),
                fmt_value(c.req_per_s_2t.median, "requests/s"),
                c.req_per_s_2t.spread_pct(),
                fmt_rate(&c.hit_rate_2t),
                c.scaling_2t_over_1t.median,
                c.scaling_2t_over_1t.min,
                c.scaling_2t_over_1t.max,
                c.alloc_failures
            );
        }
        s.push('\n');
    }

    fn summary_table(&self, s: &mut String) {
        if self.ratios.is_empty() {
            return;
        }
        let ids: Vec<char> = ['a', 'b', 'c', 'd', 'e']
            .into_iter()
            .filter(|id| self.rows.iter().any(|r| r.id == *id))
            .collect();
        let _ = writeln!(
            s,
            "## Summary: kvtier throughput ÷ kvbm throughput (> 1: kvtier faster)\n\n\
             Paired by repetition (median of the per-repetition ratios); (a)–(c) give the range \
             over N = 8, 32, 128. \"best kvbm\" is the faster of the TinyLFU kvbm backends for \
             each workload and N.\n"
        );
        let mut hdr = String::from("| kvtier system | shards | release | versus |");
        let mut sep = String::from("|---|---:|---|---|");
        for id in &ids {
            let _ = write!(
                hdr,
                " ({id}) {} |",
                match id {
                    'a' => "alloc + register",
                    'b' => "match active",
                    'c' => "match inactive",
                    'd' => "churn 1T",
                    _ => "churn 2T",
                }
            );
            sep.push_str("---:|");
        }
        let _ = writeln!(s, "{hdr}\n{sep}");
        for sys in self.systems.iter().filter(|x| !x.kvbm) {
            let mut first = true;
            for versus in [
                "best kvbm (TinyLFU)",
                "namesake",
                "kvbm LRU without TinyLFU",
            ] {
                let of: Vec<&Ratio> = self
                    .ratios
                    .iter()
                    .filter(|r| r.system == sys.label && r.versus == versus)
                    .collect();
                let Some(any) = of.first() else { continue };
                let mut line = if first {
                    format!(
                        "| {} | {} | {} |",
                        sys.label,
                        sys.shards_cell(),
                        sys.release
                    )
                } else {
                    String::from("| | | |")
                };
                first = false;
                let what = if versus == "namesake" {
                    format!("{} (namesake)", any.baseline)
                } else {
                    versus.to_string()
                };
                let _ = write!(line, " {what} |");
                for id in &ids {
                    match of.iter().find(|r| r.workload == *id) {
                        Some(r) => {
                            let _ = write!(line, " {} |", fmt_ratio(r.min, r.max));
                        }
                        None => line.push_str(" – |"),
                    }
                }
                let _ = writeln!(s, "{line}");
            }
        }
    }
}
