//! `kvtier bench`: load a server with a mix of block PUTs, GETs and MATCHes and print what it
//! sustained: ops/s, GB/s of block bytes, latency percentiles.
//!
//! Targets: any Redis server (`--target redis://HOST:PORT`: redis-server, or kvtier's RESP
//! port), and plain loopback TCP (`--raw-tcp`, a server inside this process doing the same
//! exchanges with nothing but the kernel in between: the ceiling). The same workload runs
//! against each, so their figures compare directly.
//!
//! Modules: [`workload`] (mix, keys, block stamps), [`conn`] (the connection seam),
//! [`resp`] and [`raw`] (the targets), [`driver`] (threads, pipelining, histograms),
//! [`report`] (the printed and JSON results).

mod conn;
mod driver;
mod raw;
mod report;
mod resp;
mod workload;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use self::driver::Settings;
use self::raw::{RawConn, RawServer};
use self::report::Report;
use self::resp::RespConn;
use self::workload::{MAX_BLOCK_BYTES, Mix, default_keyspace};

/// Long help of `kvtier bench`.
pub const LONG_ABOUT: &str = "\
Load a server with block PUTs, GETs and MATCHes and print ops/s, GB/s of block bytes moved, \
and p50/p99/p999 latency.

Targets:
  --target redis://HOST:PORT   any Redis server (redis-server, or kvtier's RESP port): PUT is \
SET, GET is GET, on keys kvbench:N
  --raw-tcp                    plain loopback TCP to a server inside this process that does the \
same exchanges with no parsing or storage: the ceiling

Each connection runs on its own thread and keeps --pipeline requests in flight. Before the \
run, the keys a GET may name are stored (so GETs move bytes); every GET reply is checked \
against the block stored under its key. Requests answered during --warmup are not counted.

Examples:
  kvtier bench --raw-tcp --block-bytes 256KiB --connections 4 --mix 0:1:0
  kvtier bench --target redis://127.0.0.1:6379 --block-bytes 256KiB --connections 4 \
--mix 0:1:0 --format json";

/// Arguments of `kvtier bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: `redis://HOST:PORT` (any Redis server, or kvtier's RESP port).
    #[arg(long, value_name = "URL", required_unless_present = "raw_tcp")]
    target: Option<String>,

    /// Measure plain loopback TCP doing the same exchanges (the ceiling) instead of a server.
    #[arg(long, conflicts_with = "target")]
    raw_tcp: bool,

    /// Connections, one thread each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pipeline: u32,

    /// Bytes per block: a number, or with a suffix K/KiB, M/MiB (binary), up to 64 MiB.
    #[arg(long, default_value = "256KiB", value_parser = parse_bytes)]
    block_bytes: usize,

    /// Operation weights `put:get:match` (MATCH: a 32-hash prefix lookup; not on Redis).
    #[arg(long, default_value = "1:1:0")]
    mix: Mix,

    /// Distinct blocks the requests name. Default: 10,000, or fewer so that they fit in 1 GiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keyspace: Option<u64>,

    /// Measured seconds.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    duration: f64,

    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0, value_parser = parse_warmup)]
    warmup: f64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A readable summary.
    Table,
    /// One JSON object.
    Json,
}

/// `256KiB`, `1M`, `4096`.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use K, KiB, M or MiB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(scale)
        .filter(|b| (1..=MAX_BLOCK_BYTES).contains(b))
        .ok_or_else(|| format!("{s:?}: block size must be 1 B ..= 64 MiB"))?;
    Ok(bytes)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?}: seconds must be in (0, 86400]")),
    }
}

fn parse_warmup(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=3_600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: seconds must be in [0, 3600]")),
    }
}

/// `redis://HOST:PORT[/DB]` → a socket address.
fn redis_addr(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("--target {url:?}: expected redis://HOST:PORT"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let with_port = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("--target {url:?}: cannot resolve {with_port}"))?
        .next()
        .with_context(|| format!("--target {url:?}: {with_port} resolves to nothing"))
}

/// Runs `kvtier bench`.
///
/// # Errors
///
/// Bad arguments, an unreachable target, a failed prefill, or a run with errors (after its
/// report is printed).
pub fn run(args: &BenchArgs) -> Result<()> {
    let settings = Settings {
        connections: args.connections as usize,
        pipeline: args.pipeline as usize,
        block_bytes: args.block_bytes,
        mix: args.mix,
        keyspace: args
            .keyspace
            .unwrap_or_else(|| default_keyspace(args.block_bytes)),
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
    };
    let progress = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let bar = progress_bar(args);
    let (target, run) = std::thread::scope(|scope| {
        let ticker = scope.spawn(|| tick(&bar, &progress, &done));
        let result = measure(args, &settings, &progress);
        done.store(true, Ordering::Release);
        let _ = ticker.join();
        result
    })?;
    bar.finish_and_clear();
    let report = Report::new(&target, &settings, &run);
    match args.format {
        Format::Table => print!("{report}"),
        Format::Json => println!("{}", serde_json::to_string(&report)?),
    }
    if report.errors > 0 {
        bail!(
            "{} requests failed; first: {}",
            report.errors,
            report.first_errors.first().map_or("?", String::as_str)
        );
    }
    Ok(())
}

/// Connects to the target and runs; returns the target's name and the run.
fn measure(
    args: &BenchArgs,
    settings: &Settings,
    progress: &AtomicU64,
) -> Result<(String, driver::Run)> {
    let bytes = settings.block_bytes;
    if args.raw_tcp {
        let server = RawServer::start().context("starting the raw TCP server")?;
        let addr = server.addr();
        let run = driver::run(settings, |_| RawConn::connect(addr, bytes), progress)
            .context("raw TCP run")?;
        return Ok(("raw-tcp".to_string(), run));
    }
    let url = args.target.as_deref().unwrap_or_default();
    let addr = redis_addr(url)?;
    if settings.mix.matches > 0 {
        bail!(
            "--mix {}: MATCH has no Redis command; use a put:get:0 mix with --target redis://",
            settings.mix
        );
    }
    RespConn::connect(addr, bytes)
        .and_then(|mut c| c.ping())
        .with_context(|| format!("{url}: no Redis server answers PING"))?;
    let run = driver::run(settings, |_| RespConn::connect(addr, bytes), progress)
        .with_context(|| format!("{url}: run"))?;
    Ok((url.to_string(), run))
}

fn progress_bar(args: &BenchArgs) -> ProgressBar {
    if args.format == Format::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let tenths = ((args.warmup + args.duration) * 10.0).ceil() as u64;
    let bar = ProgressBar::new(tenths);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {elapsed_precise} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Advances the bar every 100 ms with the requests answered so far.
fn tick(bar: &ProgressBar, progress: &AtomicU64, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        bar.inc(1);
        bar.set_message(format!("{} requests", progress.load(Ordering::Relaxed)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("256KiB"), Ok(256 << 10));
        assert_eq!(parse_bytes("4M"), Ok(4 << 20));
        for bad in [
            "",
            "0",
            "65M",
            "1G",
            "12 parsecs",
            "-1",
            "99999999999999999999",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redis_urls_resolve_and_bad_ones_are_errors() {
        assert_eq!(
            redis_addr("redis://127.0.0.1:7000/0").unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(redis_addr("redis://127.0.0.1").unwrap().port(), 6379);
        assert!(redis_addr("http://127.0.0.1:7000").is_err());
        assert!(redis_addr("redis://").is_err());
    }
}
