//! `kvtier router`: the KV-aware router as a service.
//!
//! Ingests the KV event streams of the configured engines (vLLM/SGLang ZeroMQ publishers today;
//! kvtier's own network transport arrives with the server), keeps the global prefix index, and
//! answers `POST /query` with each instance's overlap per medium and the chosen instance.
//! `/metrics` serves Prometheus text. With `--snapshot` the index survives restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kvtier_core::HashScheme;
use kvtier_router::{LoadTable, Router, RouterBuilder, RouterService, SourceStates, VllmSource};

/// Long help of the subcommand.
pub const LONG_ABOUT: &str = "\
Run the KV-aware router: consume the KV event streams of many inference engines and answer, \
for a request, how long a prefix each engine instance already holds (per medium) and which \
instance is best.

HTTP API (JSON):
  POST /load       {\"instance\": \"<32 hex digits>\", \"load\": 3.5}   (ties, or cost with --load-weight)
  POST /query      {\"tokens\": [...], \"block_size\": 16, \"extra\": {\"model\": \"m\"}}
                   or {\"hashes\": [\"<32 hex digits>\", ...]}
                   -> {\"blocks\": n, \"best\": \"<instance>\", \"instances\": [{\"instance\", \"media\": {\"GPU\": {\"matched\", \"upper\"}}, ...}]}
  GET  /instances  the instances known, their next event id and blocks per medium
  GET  /metrics    Prometheus text (kvtier_router_*; each engine's stream counters as
                   kvtier_router_vllm_*_total{source=\"NAME\"}, each followed kvtier server's as
                   kvtier_router_kvtier_*{server=\"HOST:PORT\"})
  GET  /health

Limits: --max-connections open connections (more get 503), request headers within 10 s
(also the idle keep-alive timeout), bodies within 30 s (408) and --max-body-bytes (413; the
default fits a 1 M-token query); answers must be read within 30 s. SIGTERM or Ctrl-C stops the router within a few seconds,
closing requests still in flight, and writes the final snapshot.

A vLLM engine started with --kv-events-config '{\"enable_kv_cache_events\": true, \
\"publisher\": \"zmq\", \"endpoint\": \"tcp://*:5557\", \"replay_endpoint\": \"tcp://*:5558\"}' \
is ingested with --vllm NAME=tcp://HOST:5557@tcp://HOST:5558. Its blocks are re-hashed from \
their tokens with --hash-scheme, --block-size and --model, so queries by tokens match them. \
Give --expected-blocks-per-engine (the engines' num_gpu_blocks plus CPU offload blocks) to \
allocate the maps at start: ingestion is then faster from the first event.

A kvtier server (kvtier serve) is followed with --kvtier HOST:PORT (its binary-protocol \
address): the router subscribes to its block events, indexes its blocks by the hashes clients \
PUT them under (query them with {\"hashes\": [...]}), and reconnects after a restart.";

/// Longest snapshot interval accepted (a week): a longer one is almost surely a unit mistake.
const MAX_SNAPSHOT_EVERY_SECS: u64 = 7 * 24 * 3600;
/// Longest expiry accepted (30 days).
const MAX_EXPIRY_SECS: u64 = 30 * 24 * 3600;
/// Largest `--expected-blocks-per-engine` accepted (`1 << 26`, a billion tokens in blocks
/// of 16): a larger figure is almost surely a mistake, and the maps still grow beyond.
const MAX_EXPECTED_BLOCKS_PER_ENGINE: usize = 1 << 26;
/// Largest block size accepted.
const MAX_BLOCK_SIZE: usize = 1 << 16;

/// Arguments of `kvtier router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// HTTP listen address (port 0 picks a free port; the address is printed at start).
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: SocketAddr,
    /// An engine's event stream: `NAME=PUB_ENDPOINT[@REPLAY_ENDPOINT]`. Repeat for more engines.
    #[arg(long = "vllm", value_name = "NAME=ENDPOINT[@REPLAY]")]
    vllm: Vec<String>,
    /// A kvtier server to follow: its binary-protocol address (`kvtier serve --listen`); the
    /// router subscribes to its block events and reconnects when it restarts. Repeat for more.
    #[arg(long = "kvtier", value_name = "ADDR")]
    kvtier: Vec<String>,
    /// Block size of the engines' events when they do not state one (1 to 65536).
    #[arg(long, default_value_t = 16, value_parser = parse_block_size)]
    block_size: usize,
    /// Model name mixed into the block hashes (must match what queries send in extra.model).
    #[arg(long)]
    model: Option<String>,
    /// How block hashes chain: kvtier (default), or dynamo (xxh3, seeds 0 and 1337).
    #[arg(long, default_value = "kvtier", value_parser = ["kvtier", "dynamo"])]
    hash_scheme: String,
    /// How much load counts against overlap when choosing an instance (0: load only breaks
    /// ties; finite, not negative). Loads come from `POST /load`; with load in blocks of
    /// queued work, 1 minimises "blocks to prefill + blocks queued".
    #[arg(long, default_value_t = 0.0, value_parser = parse_load_weight)]
    load_weight: f64,
    /// Forget an instance silent for this many seconds (0: never; at most 30 days).
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_EXPIRY_SECS))]
    expiry_secs: u64,
    /// Keep the index in this file: loaded at start if present (a damaged or unreadable file
    /// is reported and the router starts empty), written periodically and at exit. The
    /// engines' stream positions go beside it in `<FILE>.sources`, so a restarted router
    /// resumes each stream where the snapshot left it.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Seconds between snapshots (1 to 604800).
    #[arg(long, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SNAPSHOT_EVERY_SECS))]
    snapshot_every_secs: u64,
    /// How many blocks each engine holds at once, on all its media (vLLM's `num_gpu_blocks`
    /// plus its CPU offload blocks; 0: unknown, at most 67108864). Each engine's hash map and
    /// the index (for this many blocks times the engines) are then allocated at start,
    /// ~50 and 43–85 bytes per block, instead of growing while the engines warm up: ingestion
    /// is faster from the first event. They still grow beyond.
    #[arg(long, default_value_t = 0, value_parser = parse_expected_blocks)]
    expected_blocks_per_engine: usize,
    /// Most open HTTP connections; more are answered 503 (1 to 1000000).
    #[arg(long, default_value_t = kvtier_router::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_max_connections)]
    max_connections: usize,
    /// Largest request body in bytes; larger ones are answered 413 (1024 to 1 GiB).
    #[arg(long, default_value_t = kvtier_router::DEFAULT_MAX_BODY_BYTES,
          value_parser = parse_max_body)]
    max_body_bytes: usize,
}

/// Parses an integer within `lo..=hi`, naming the range in the error.
fn parse_in_range(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number from {lo} to {hi}"))?;
    if !(lo..=hi).contains(&n) {
        return Err(format!("{n} is outside {lo}..={hi}"));
    }
    Ok(n)
}

fn parse_block_size(s: &str) -> Result<usize, String> {
    parse_in_range(s, 1, MAX_BLOCK_SIZE)
}

fn parse_expected_blocks(s: &str) -> Result<usize, String> {
    parse_in_range(s, 0, MAX_EXPECTED_BLOCKS_PER_ENGINE)
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    parse_in_range(s, 1, 1_000_000)
}

fn parse_max_body(s: &str) -> Result<usize, String> {
    parse_in_range(s, 1024, 1 << 30)
}

fn parse_load_weight(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(w),
        _ => Err(format!("{s:?} is not a finite, non-negative number")),
    }
}

fn parse_source(spec: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--vllm {spec:?}: expected NAME=ENDPOINT[@REPLAY]"))?;
    if name.is_empty() {
        bail!("--vllm {spec:?}: the name is empty");
    }
    let (pub_ep, replay) = match rest.split_once('@') {
        Some((p, r)) => (p.to_string(), Some(r.to_string())),
        None => (rest.to_string(), None),
    };
    Ok((name.to_string(), pub_ep, replay))
}

/// The router from `--snapshot` when there is a readable one, else an empty one; a damaged
/// or unreadable snapshot is reported on stderr (the index is a cache of what the engines
/// hold, not the source of truth: it fills again from their streams).
fn restore_router(args: &RouterArgs, builder: impl Fn() -> RouterBuilder) -> Router {
    let Some(path) = &args.snapshot else {
        return builder().build();
    };
    match Router::restore_or_empty(builder(), path) {
        (r, None) => {
            eprintln!(
                "loaded snapshot {}: {} instances, {} blocks",
                path.display(),
                r.stats().instances,
                r.stats().blocks
            );
            r
        }
        (r, Some(e)) if e.is_missing() => r,
        (r, Some(e)) => {
            eprintln!(
                "warning: snapshot {} is damaged or unreadable ({e}); starting empty",
                path.display()
            );
            r
        }
    }
}

/// The engines' saved stream positions beside the snapshot; a damaged file is reported and
/// the engines' streams start fresh.
fn restore_source_states(args: &RouterArgs) -> SourceStates {
    let Some(path) = &args.snapshot else {
        return SourceStates::default();
    };
    let path = SourceStates::path_for(path);
    if !path.exists() {
        return SourceStates::default();
    }
    SourceStates::load(&path).unwrap_or_else(|e| {
        eprintln!(
            "warning: {} is damaged or unreadable ({e}); the engines' streams start fresh",
            path.display()
        );
        SourceStates::default()
    })
}

/// Runs the router until Ctrl-C or SIGTERM.
pub fn run(args: &RouterArgs) -> anyhow::Result<()> {
    let scheme = match args.hash_scheme.as_str() {
        "dynamo" => HashScheme::dynamo(),
        _ => HashScheme::default(),
    };
    let loads = LoadTable::default();
    let builder = || {
        Router::builder()
            .with_hash_scheme(scheme)
            .with_load_signal(Arc::new(loads.clone()))
            .with_load_weight(args.load_weight)
            .with_expiry((args.expiry_secs > 0).then(|| Duration::from_secs(args.expiry_secs)))
            .with_expected_blocks(
                args.expected_blocks_per_engine
                    .saturating_mul(args.vllm.len()),
            )
    };
    let mut sources = Vec::new();
    for spec in &args.vllm {
        let (name, endpoint, replay) = parse_source(spec)?;
        if sources.iter().any(|(n, _)| *n == name) {
            bail!("--vllm {spec:?}: another engine is called {name:?} already");
        }
        let mut b = VllmSource::builder(name.clone(), endpoint)
            .with_hash_scheme(scheme)
            .with_default_block_size(args.block_size)
            .with_expected_blocks(args.expected_blocks_per_engine);
        if let Some(r) = replay {
            b = b.with_replay_endpoint(r);
        }
        if let Some(m) = &args.model {
            b = b.with_model(m.clone());
        }
        // Checked here, before anything starts; the service builds it again to run it.
        b.clone()
            .build()
            .with_context(|| format!("--vllm {spec:?}"))?;
        sources.push((name, b));
    }
    let router = restore_router(args, builder);
    let states = restore_source_states(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Install the handlers before announcing readiness: a SIGTERM sent as soon as the
        // "listening" line appears must stop the router cleanly (final snapshot included).
        let stop = shutdown_signal()?;
        let followers: Vec<(String, Arc<crate::follow::FollowStats>)> = args
            .kvtier
            .iter()
            .map(|addr| (addr.clone(), Arc::default()))
            .collect();
        let mut service = RouterService::builder(router)
            .with_collector(Box::new(crate::follow::FollowersCollector {
                followers: followers.clone(),
            }))
            .with_listen(args.listen)
            .with_load_table(loads.clone())
            .with_source_states(states)
            .with_max_connections(args.max_connections)
            .with_max_body_bytes(args.max_body_bytes);
        if let Some(path) = &args.snapshot {
            service =
                service.with_snapshot(path.clone(), Duration::from_secs(args.snapshot_every_secs));
        }
        let service = service
            .start()
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        for (name, b) in sources {
            service
                .add_vllm(name.clone(), b)
                .with_context(|| format!("starting engine {name:?}"))?;
        }
        for (addr, stats) in followers {
            tokio::spawn(crate::follow::follow(
                addr,
                service.events(),
                Arc::clone(service.router()),
                stats,
            ));
        }
        println!("kvtier router listening on http://{}", service.local_addr());
        stop.await;
        service.stop().await.context("stopping the router")?;
        anyhow::Ok(())
    })
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM; on Unix both handlers are installed
/// when this returns.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_range_checked() {
        assert_eq!(parse_block_size("16"), Ok(16));
        assert!(parse_block_size("0").is_err());
        assert!(parse_block_size("-1").is_err());
        assert!(parse_block_size("99999999999").is_err());
        assert_eq!(parse_load_weight("1.5"), Ok(1.5));
        for bad in ["-1", "NaN", "inf", "x"] {
            assert!(parse_load_weight(bad).is_err(), "{bad}");
        }
        assert!(parse_max_connections("0").is_err());
        assert!(parse_max_body("10").is_err());
        assert_eq!(parse_expected_blocks("0"), Ok(0));
        assert_eq!(parse_expected_blocks("2000000"), Ok(2_000_000));
        assert!(parse_expected_blocks("67108865").is_err());
        assert!(parse_expected_blocks("-5").is_err());
    }

    #[test]
    fn source_specs_parse() {
        let (n, p, r) = parse_source("a=tcp://h:1@tcp://h:2").unwrap();
        assert_eq!(
            (n.as_str(), p.as_str(), r.as_deref()),
            ("a", "tcp://h:1", Some("tcp://h:2"))
        );
        let (_, _, r) = parse_source("b=tcp://h:1").unwrap();
        assert!(r.is_none());
        assert!(parse_source("tcp://h:1").is_err());
        assert!(parse_source("=tcp://h:1").is_err());
    }
}
