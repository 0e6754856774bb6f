//! `kvtier`: the command-line tool of kvtier.
//!
//! Subcommands, one module each:
//! - `replay` ([`replay`]): hit rates of eviction policies on a prefix-cache trace, against
//!   Belady's offline optimum and the infinite-capacity bound; with `--g3-capacity`, the
//!   tiered replay of G2 above G3 under each write policy ([`tiered`]).
//! - `router` ([`router`]): the KV-aware router service (event ingestion, prefix index, HTTP
//!   queries).
//! - `serve` ([`serve`]): the kvtier block server ([`kvtier_node::Node`]) until SIGINT/SIGTERM.
//! - `bench` ([`bench`]): a load generator for block servers (any Redis server, plain loopback
//!   TCP as the ceiling): ops/s, GB/s, latency percentiles.
//!
//! Errors are reported on stderr as `error: ...` with the whole cause chain, and the process
//! exits with status 1 (clap's own usage errors exit with 2).

mod bench;
mod follow;
mod replay;
mod router;
mod serve;
mod tiered;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kvtier: a KV-cache manager for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "kvtier", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a prefix-cache trace and print hit rates per policy and capacity.
    #[command(long_about = replay::LONG_ABOUT)]
    Replay(replay::ReplayArgs),
    /// Run the KV-aware router: ingest engines' KV events, answer prefix-overlap queries.
    #[command(long_about = router::LONG_ABOUT)]
    Router(router::RouterArgs),
    /// Run the kvtier block server (binary protocol, Redis-compatible port, /metrics).
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(Box<serve::ServeArgs>),
    /// Load a server with block PUTs/GETs/MATCHes; print ops/s, GB/s and latency percentiles.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(&args),
        Command::Router(args) => router::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`kvtier replay --format json | head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
