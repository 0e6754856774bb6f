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
use kvtier_router::{LoadTable, Router, RouterService, VllmSource};

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
  GET  /metrics    Prometheus text (kvtier_router_*)
  GET  /health

A vLLM engine started with --kv-events-config '{\"enable_kv_cache_events\": true, \
\"publisher\": \"zmq\", \"endpoint\": \"tcp://*:5557\", \"replay_endpoint\": \"tcp://*:5558\"}' \
is ingested with --vllm NAME=tcp://HOST:5557@tcp://HOST:5558. Its blocks are re-hashed from \
their tokens with --hash-scheme, --block-size and --model, so queries by tokens match them.";

/// Arguments of `kvtier router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// HTTP listen address (port 0 picks a free port; the address is printed at start).
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: SocketAddr,
    /// An engine's event stream: `NAME=PUB_ENDPOINT[@REPLAY_ENDPOINT]`. Repeat for more engines.
    #[arg(long = "vllm", value_name = "NAME=ENDPOINT[@REPLAY]")]
    vllm: Vec<String>,
    /// Block size of the engines' events when they do not state one.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Model name mixed into the block hashes (must match what queries send in extra.model).
    #[arg(long)]
    model: Option<String>,
    /// How block hashes chain: kvtier (default), or dynamo (xxh3, seeds 0 and 1337).
    #[arg(long, default_value = "kvtier", value_parser = ["kvtier", "dynamo"])]
    hash_scheme: String,
    /// How much load counts against overlap when choosing an instance (0: load only breaks
    /// ties). Loads come from `POST /load`; with load in blocks of queued work, 1 minimises
    /// "blocks to prefill + blocks queued".
    #[arg(long, default_value_t = 0.0)]
    load_weight: f64,
    /// Forget an instance silent for this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    expiry_secs: u64,
    /// Keep the index in this file: loaded at start if present, written periodically and at
    /// exit.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Seconds between snapshots.
    #[arg(long, default_value_t = 60)]
    snapshot_every_secs: u64,
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

/// Runs the router until Ctrl-C or SIGTERM.
pub fn run(args: &RouterArgs) -> anyhow::Result<()> {
    let scheme = match args.hash_scheme.as_str() {
        "dynamo" => HashScheme::dynamo(),
        _ => HashScheme::default(),
    };
    let loads = LoadTable::default();
    let builder = Router::builder()
        .with_hash_scheme(scheme)
        .with_load_signal(Arc::new(loads.clone()))
        .with_load_weight(args.load_weight)
        .with_expiry((args.expiry_secs > 0).then(|| Duration::from_secs(args.expiry_secs)));
    let router = match &args.snapshot {
        Some(path) if path.exists() => {
            let r = Router::load_snapshot(builder, path)
                .with_context(|| format!("loading snapshot {}", path.display()))?;
            eprintln!(
                "loaded snapshot {}: {} instances, {} blocks",
                path.display(),
                r.stats().instances,
                r.stats().blocks
            );
            r
        }
        _ => builder.build(),
    };
    let mut sources = Vec::new();
    for spec in &args.vllm {
        let (name, endpoint, replay) = parse_source(spec)?;
        let mut b = VllmSource::builder(name, endpoint)
            .with_hash_scheme(scheme)
            .with_default_block_size(args.block_size);
        if let Some(r) = replay {
            b = b.with_replay_endpoint(r);
        }
        if let Some(m) = &args.model {
            b = b.with_model(m.clone());
        }
        sources.push(b.build().with_context(|| format!("--vllm {spec:?}"))?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Install the handlers before announcing readiness: a SIGTERM sent as soon as the
        // "listening" line appears must stop the router cleanly (final snapshot included).
        let stop = shutdown_signal()?;
        let mut service = RouterService::builder(router)
            .with_listen(args.listen)
            .with_load_table(loads);
        if let Some(path) = &args.snapshot {
            service =
                service.with_snapshot(path.clone(), Duration::from_secs(args.snapshot_every_secs));
        }
        let service = service
            .start()
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let handles: Vec<_> = sources.into_iter().map(|s| service.spawn_vllm(s)).collect();
        println!("kvtier router listening on http://{}", service.local_addr());
        stop.await;
        for h in handles {
            h.shutdown().await;
        }
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
