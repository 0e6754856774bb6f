//! `kvtier bench`: load a server with a mix of block PUTs, GETs and MATCHes and print what it
//! sustained: ops/s, GB/s of block bytes, latency percentiles.
//!
//! Targets: kvtier's binary port (`--addr HOST:PORT` or `--target kvtier://HOST:PORT`), any
//! Redis server (`--target redis://HOST:PORT`: redis-server, or kvtier's RESP port), and plain
//! loopback TCP (`--raw-tcp`, a server inside this process doing the same exchanges with
//! nothing but the kernel in between: the ceiling). The same workload runs against each, so
//! their figures compare directly.
//!
//! Modules: [`workload`] (mix, keys, block stamps), [`conn`] (the connection seam),
//! [`kvtier`], [`resp`] and [`raw`] (the targets), [`driver`] (threads, pipelining,
//! histograms), [`report`] (the printed and JSON results).

mod conn;
mod driver;
mod kvtier;
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
use self::kvtier::{DEFAULT_NAMESPACE, KvtierConn, KvtierOptions};
use self::raw::{RawConn, RawServer};
use self::report::Report;
use self::resp::RespConn;
use self::workload::{MATCH_HASHES, MAX_BLOCK_BYTES, Mix, default_keyspace};

/// Long help of `kvtier bench`.
pub const LONG_ABOUT: &str = "\
Load a server with block PUTs, GETs and MATCHes and print ops/s, GB/s of block bytes moved, \
and p50/p99/p999 latency.

Targets:
  --addr HOST:PORT             kvtier's binary port (also --target kvtier://HOST:PORT): PUT \
stores --blocks-per-request blocks, GET fetches as many, MATCH asks for the cached prefix of \
--match-len hashes; in namespace --namespace (default kvbench), with --token if the server \
wants one
  --target redis://HOST:PORT   any Redis server (redis-server, or kvtier's RESP port): PUT is \
SET, GET is GET, on keys kvbench:N
  --raw-tcp                    plain loopback TCP to a server inside this process that does the \
same exchanges with no parsing or storage: the ceiling

Each connection runs on its own thread and keeps --pipeline requests in flight. Before the \
run, the keys a GET may name are stored (so GETs move bytes); every GET reply is checked \
against the block stored under its key. Requests answered during --warmup are not counted.

Examples:
  kvtier bench --addr 127.0.0.1:7400 --block-bytes 256KiB --connections 4 --pipeline 8 \
--mix 1:4:1
  kvtier bench --raw-tcp --block-bytes 256KiB --connections 4 --mix 0:1:0
  kvtier bench --target redis://127.0.0.1:6379 --block-bytes 256KiB --connections 4 \
--mix 0:1:0 --format json";

/// Arguments of `kvtier bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: `kvtier://HOST:PORT` (kvtier's binary port) or `redis://HOST:PORT` (any
    /// Redis server, or kvtier's RESP port).
    #[arg(long, value_name = "URL", required_unless_present_any = ["raw_tcp", "addr"])]
    target: Option<String>,

    /// kvtier's binary port, `HOST:PORT` (the same as `--target kvtier://HOST:PORT`).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "target")]
    addr: Option<String>,

    /// Measure plain loopback TCP doing the same exchanges (the ceiling) instead of a server.
    #[arg(long, conflicts_with_all = ["target", "addr"])]
    raw_tcp: bool,

    /// With --raw-tcp: run the in-process server's threads on this CPU only (to measure the
    /// ceiling with the server on one core and the client, started under `taskset`, on
    /// another, as a pinned `kvtier serve` or redis-server is measured).
    #[arg(long, value_name = "CPU", requires = "raw_tcp")]
    raw_server_cpu: Option<usize>,

    /// TCP congestion control of every loopback connection the bench opens, and of the raw
    /// TCP server's (match `kvtier serve --loopback-congestion`); `system` keeps the host's
    /// default.
    #[arg(long, value_name = "NAME", default_value = "system")]
    loopback_congestion: String,

    /// kvtier target: the namespace to open at HELLO [default: kvbench].
    #[arg(long)]
    namespace: Option<String>,

    /// kvtier target: the auth token to send at HELLO.
    #[arg(long)]
    token: Option<String>,

    /// kvtier target: blocks per PUT and per GET request (consecutive keys).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16_384))]
    blocks_per_request: u32,

    /// kvtier target: hashes per MATCH request [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16_384))]
    match_len: Option<u32>,

    /// Connections, one thread each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,

    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pipeline: u32,

    /// Bytes per block: a number, or with a suffix K/KiB, M/MiB (binary), up to 64 MiB.
    #[arg(long, default_value = "256KiB", value_parser = parse_bytes)]
    block_bytes: usize,

    /// Operation weights `put:get:match` (MATCH: a prefix lookup, --match-len hashes on
    /// kvtier, 32 on raw TCP; not on Redis).
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

impl BenchArgs {
    /// The loopback congestion control to set (`None` for `system`).
    fn congestion(&self) -> Option<String> {
        (self.loopback_congestion != "system").then(|| self.loopback_congestion.clone())
    }
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

/// What `kvtier bench` loads.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// The in-process raw TCP server.
    RawTcp,
    /// A Redis server; `url` names it in the report.
    Redis { url: String, addr: SocketAddr },
    /// kvtier's binary port; `name` (`kvtier://HOST:PORT`) names it in the report.
    Kvtier { name: String, addr: SocketAddr },
}

/// The target the arguments name.
///
/// # Errors
///
/// An address that does not resolve; a kvtier-only option with another target.
fn target(args: &BenchArgs) -> Result<Target> {
    let url = args.target.as_deref().unwrap_or_default();
    let kvtier = match &args.addr {
        Some(hostport) => Some((hostport.as_str(), "--addr")),
        None => url.strip_prefix("kvtier://").map(|rest| (rest, "--target")),
    };
    if kvtier.is_none()
        && (args.namespace.is_some()
            || args.token.is_some()
            || args.blocks_per_request != 1
            || args.match_len.is_some())
    {
        bail!(
            "--namespace, --token, --blocks-per-request and --match-len apply to a kvtier target \
             (--addr HOST:PORT or --target kvtier://HOST:PORT)"
        );
    }
    if args.raw_tcp {
        return Ok(Target::RawTcp);
    }
    let Some((hostport, flag)) = kvtier else {
        return Ok(Target::Redis {
            url: url.to_string(),
            addr: redis_addr(url)?,
        });
    };
    let hostport = hostport.trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("{flag} {hostport:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("{flag} {hostport:?}: resolves to nothing"))?;
    Ok(Target::Kvtier {
        name: format!("kvtier://{hostport}"),
        addr,
    })
}

/// `redis://HOST:PORT[/DB]` → a socket address.
fn redis_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("redis://").with_context(|| {
        format!("--target {url:?}: expected redis://HOST:PORT or kvtier://HOST:PORT")
    })?;
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
    check_congestion(args.congestion().as_deref())?;
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

/// Fails clearly when the kernel does not offer the loopback congestion control asked for.
fn check_congestion(name: Option<&str>) -> Result<()> {
    if let Some(name) = name {
        kvtier_server::check_loopback_congestion(name)
            .with_context(|| format!("--loopback-congestion {name}"))?;
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
    let (url, addr) = match target(args)? {
        Target::Kvtier { name, addr } => {
            return measure_kvtier(args, settings, progress, name, addr);
        }
        Target::RawTcp => {
            let server = RawServer::start(args.raw_server_cpu, args.congestion())
                .context("starting the raw TCP server")?;
            let addr = server.addr();
            let cc = args.congestion();
            let run = driver::run(
                settings,
                |_| RawConn::connect(addr, bytes, cc.as_deref()),
                progress,
            )
            .context("raw TCP run")?;
            return Ok(("raw-tcp".to_string(), run));
        }
        Target::Redis { url, addr } => (url, addr),
    };
    if settings.mix.matches > 0 {
        bail!(
            "--mix {}: MATCH has no Redis command; use a put:get:0 mix with --target redis://",
            settings.mix
        );
    }
    let cc = args.congestion();
    RespConn::connect(addr, bytes, cc.as_deref())
        .and_then(|mut c| c.ping())
        .with_context(|| format!("{url}: no Redis server answers PING"))?;
    let run = driver::run(
        settings,
        |_| RespConn::connect(addr, bytes, cc.as_deref()),
        progress,
    )
    .with_context(|| format!("{url}: run"))?;
    Ok((url, run))
}

/// Runs against kvtier's binary port at `addr`, after one connection has checked that the
/// server accepts the session and the request shape.
fn measure_kvtier(
    args: &BenchArgs,
    settings: &Settings,
    progress: &AtomicU64,
    name: String,
    addr: SocketAddr,
) -> Result<(String, driver::Run)> {
    let options = KvtierOptions {
        namespace: args
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        token: args.token.clone(),
        block_bytes: settings.block_bytes,
        blocks_per_request: args.blocks_per_request as usize,
        match_len: args.match_len.map_or(MATCH_HASHES, |n| n as usize),
        keyspace: settings.keyspace,
        congestion: args.congestion(),
    };
    KvtierConn::connect(addr, &options)
        .with_context(|| format!("{name}: no kvtier server accepts the session"))?;
    let run = driver::run(settings, |_| KvtierConn::connect(addr, &options), progress)
        .with_context(|| format!("{name}: run"))?;
    Ok((name, run))
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

    /// `kvtier bench ARGS...` parsed as the binary parses it.
    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.bench)
    }

    #[test]
    fn targets_are_told_apart_and_kvtier_options_need_a_kvtier_target() {
        let addr: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let kvtier = Target::Kvtier {
            name: "kvtier://127.0.0.1:7400".to_string(),
            addr,
        };
        let t = |args: &[&str]| target(&parse(args).unwrap());
        assert_eq!(t(&["--addr", "127.0.0.1:7400"]).unwrap(), kvtier);
        assert_eq!(
            t(&["--target", "kvtier://127.0.0.1:7400/"]).unwrap(),
            kvtier
        );
        assert!(matches!(
            t(&["--target", "redis://127.0.0.1:7400"]).unwrap(),
            Target::Redis { .. }
        ));
        assert_eq!(t(&["--raw-tcp"]).unwrap(), Target::RawTcp);
        assert!(
            t(&[
                "--addr",
                "127.0.0.1:7400",
                "--namespace",
                "a",
                "--token",
                "b"
            ])
            .is_ok()
        );
        for kvtier_only in [
            &["--namespace", "a"][..],
            &["--token", "b"],
            &["--blocks-per-request", "2"],
            &["--match-len", "8"],
        ] {
            for other in [&["--raw-tcp"][..], &["--target", "redis://127.0.0.1:1"]] {
                let args: Vec<&str> = other.iter().chain(kvtier_only).copied().collect();
                let err = t(&args).unwrap_err().to_string();
                assert!(err.contains("apply to a kvtier target"), "{args:?}: {err}");
            }
        }
        assert!(t(&["--addr", "no-port"]).is_err());
        assert!(t(&["--target", "kvtier://"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--target", "redis://x"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--raw-tcp"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--blocks-per-request", "0"]).is_err());
    }

    #[test]
    fn a_kvtier_run_against_a_scripted_server_moves_and_checks_blocks() {
        let addr = super::kvtier::tests::peer(0, u64::MAX - 1, u64::MAX - 1);
        let addr = addr.to_string();
        let args = parse(&[
            "--addr",
            &addr,
            "--namespace",
            "bench-ns",
            "--token",
            "tok",
            "--block-bytes",
            "20000",
            "--keyspace",
            "40",
            "--connections",
            "2",
            "--pipeline",
            "4",
            "--mix",
            "1:2:1",
            "--blocks-per-request",
            "2",
            "--match-len",
            "5",
            "--duration",
            "0.3",
            "--warmup",
            "0.05",
        ])
        .unwrap();
        let settings = Settings {
            connections: 2,
            pipeline: 4,
            block_bytes: 20_000,
            mix: args.mix,
            keyspace: 40,
            duration: Duration::from_secs_f64(0.3),
            warmup: Duration::from_secs_f64(0.05),
        };
        let (name, run) = measure(&args, &settings, &AtomicU64::new(0)).unwrap();
        assert_eq!(name, format!("kvtier://{addr}"));
        let t = &run.tally;
        assert_eq!(t.errors, 0, "{:?}", t.messages);
        assert!(t.ops.iter().all(|n| *n > 0), "{:?}", t.ops);
        // Every key was prefilled: nothing misses, and each PUT or GET moved two blocks.
        assert_eq!(t.misses, 0);
        assert_eq!(t.bytes, (t.ops[0] + t.ops[1]) * 2 * 20_000);
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
