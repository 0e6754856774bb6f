//! `kvtier serve`: runs a kvtier node (the block server) until SIGINT or SIGTERM.
//!
//! Settings come from, lowest to highest precedence: the defaults (the embedded default: host
//! memory plus a local-disk tier under `./kvtier-data`, every port on 127.0.0.1), the TOML file
//! given with `--config`, `KVTIER_*` environment variables, and flags. Every key of the file
//! is also a flag (`block_bytes` ↔ `--block-bytes` ↔ `KVTIER_BLOCK_BYTES`; `[resp] shards` ↔
//! `--resp-shards` ↔ `KVTIER_RESP_SHARDS`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use kvtier_node::{ByteSize, IoBackend, Node, NodeConfig};

/// Long help of `kvtier serve`.
pub(crate) const LONG_ABOUT: &str = "\
Run the kvtier block server: kvtier's binary protocol, a Redis-compatible port (RESP2) and \
HTTP /metrics + /health, serving blocks from host memory (G2) and a local-disk tier (G3).

With no configuration it runs the embedded default: 1 GiB of host memory and 8 GiB of disk \
under ./kvtier-data, 256 KiB blocks, binary protocol on 127.0.0.1:7400, RESP on \
127.0.0.1:7401, metrics on 127.0.0.1:7402.

Settings, lowest to highest precedence: defaults, the --config TOML file, KVTIER_* environment \
variables, flags. Every file key is a flag: block_bytes = \"1MiB\" is --block-bytes 1MiB or \
KVTIER_BLOCK_BYTES=1MiB; keys of the [resp] table take a resp- prefix (--resp-memory-budget). Sizes take B, KiB, MiB, GiB, TiB (powers of 1024). An address flag \
takes `off` to turn its port off.

SIGINT or SIGTERM stops it gracefully: no new connections, requests in flight answered, \
blocks still being copied to disk written, exit 0. Blocks PUT with the durable flag are on \
disk before they are acknowledged and survive kill -9.

Logs go to stderr; KVTIER_LOG sets the filter (default info), --log-format json makes them \
JSON lines.";

/// Arguments of `kvtier serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML file with any of the keys below (snake_case: block_bytes, data_dir, ...).
    #[arg(long, env = "KVTIER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the binary protocol [default: 127.0.0.1:7400].
    #[arg(long, env = "KVTIER_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the Redis-compatible port, or `off` [default: 127.0.0.1:7401].
    #[arg(long, env = "KVTIER_REDIS_LISTEN", value_name = "ADDR|off", value_parser = optional_addr)]
    redis_listen: Option<OptionalAddr>,
    /// Address of HTTP /metrics and /health, or `off` [default: 127.0.0.1:7402].
    #[arg(long, env = "KVTIER_METRICS_LISTEN", value_name = "ADDR|off", value_parser = optional_addr)]
    metrics_listen: Option<OptionalAddr>,
    /// Directory of the disk tier [default: ./kvtier-data].
    #[arg(long, env = "KVTIER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Bytes per block; every block of the binary protocol has this size [default: 256KiB].
    #[arg(long, env = "KVTIER_BLOCK_BYTES", value_name = "SIZE")]
    block_bytes: Option<ByteSize>,
    /// Host memory (G2) for blocks, allocated at start [default: 1GiB].
    #[arg(long, env = "KVTIER_HOST_BYTES", value_name = "SIZE")]
    host_bytes: Option<ByteSize>,
    /// Disk (G3) for blocks; 0 turns the disk tier off [default: 8GiB].
    #[arg(long, env = "KVTIER_DISK_BYTES", value_name = "SIZE")]
    disk_bytes: Option<ByteSize>,
    /// When blocks are copied to disk: write_through, write_through_selective[:k] or
    /// write_back [default: write_through].
    #[arg(long, env = "KVTIER_WRITE_POLICY", value_name = "POLICY")]
    write_policy: Option<String>,
    /// Blocks waiting to be copied to disk before more are skipped [default: 4096].
    #[arg(long, env = "KVTIER_OFFLOAD_QUEUE", value_name = "N")]
    offload_queue: Option<usize>,
    /// Milliseconds a PUT that evicts waits for the disk to take blocks still needing a copy
    /// before skipping them; 0 never waits [default: 0].
    #[arg(long, env = "KVTIER_OFFLOAD_WAIT_MS", value_name = "MS")]
    offload_wait_ms: Option<u64>,
    /// Token every binary connection must present in HELLO [default: none].
    #[arg(
        long,
        env = "KVTIER_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    auth_token: Option<String>,
    /// IO backend: auto, uring or epoll [default: auto].
    #[arg(long, env = "KVTIER_IO_BACKEND", value_name = "BACKEND")]
    io_backend: Option<IoBackend>,
    /// IO threads; 0 picks one per core [default: 0].
    #[arg(long, env = "KVTIER_IO_THREADS", value_name = "N")]
    io_threads: Option<usize>,
    /// Worker threads; 0 picks one per core [default: 0].
    #[arg(long, env = "KVTIER_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// Largest frame a client may send [default: 65MiB].
    #[arg(long, env = "KVTIER_MAX_FRAME_BYTES", value_name = "SIZE")]
    max_frame_bytes: Option<ByteSize>,
    /// Most blocks in one request [default: 16384].
    #[arg(long, env = "KVTIER_MAX_BLOCKS_PER_REQUEST", value_name = "N")]
    max_blocks_per_request: Option<u32>,
    /// Most open connections [default: 4096].
    #[arg(long, env = "KVTIER_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Most requests in flight per connection before it is paused [default: 128].
    #[arg(long, env = "KVTIER_MAX_IN_FLIGHT_PER_CONN", value_name = "N")]
    max_in_flight_per_conn: Option<usize>,
    /// Event messages kept for SUBSCRIBE replay [default: 4096].
    #[arg(long, env = "KVTIER_EVENT_REPLAY", value_name = "N")]
    event_replay: Option<usize>,
    /// TCP congestion control of loopback connections (for example cubic); `system` keeps
    /// the host's default [default: system].
    #[arg(long, env = "KVTIER_LOOPBACK_CONGESTION", value_name = "NAME")]
    loopback_congestion: Option<String>,
    /// Largest value (and key) on the RESP port; a larger one closes the connection with a
    /// protocol error (`[resp] max_value_bytes` in the file) [default: 512MiB].
    #[arg(long, env = "KVTIER_RESP_MAX_VALUE_BYTES", value_name = "SIZE")]
    resp_max_value_bytes: Option<ByteSize>,
    /// Host memory for the RESP port's keys and values; past it the least recently read
    /// keys are evicted (`[resp] memory_budget`) [default: 1GiB].
    #[arg(long, env = "KVTIER_RESP_MEMORY_BUDGET", value_name = "SIZE")]
    resp_memory_budget: Option<ByteSize>,
    /// Lock shards of the RESP keyspace (`[resp] shards`) [default: 64].
    #[arg(long, env = "KVTIER_RESP_SHARDS", value_name = "N")]
    resp_shards: Option<usize>,
    /// Log format on stderr: text or json.
    #[arg(long, env = "KVTIER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print the resulting configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// An address, or `off`.
#[derive(Clone, Copy, Debug)]
struct OptionalAddr(Option<SocketAddr>);

fn optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("`{s}` is not an address (HOST:PORT or off): {e}"))
}

impl ServeArgs {
    /// The configuration: defaults, then the file, then env and flags.
    fn config(&self) -> Result<NodeConfig> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_toml_file(path)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    c.$field = v.clone();
                }
            )*};
        }
        set!(
            listen,
            data_dir,
            block_bytes,
            host_bytes,
            disk_bytes,
            write_policy,
            offload_queue,
            offload_wait_ms,
            io_backend,
            io_threads,
            workers,
            max_frame_bytes,
            max_blocks_per_request,
            max_connections,
            max_in_flight_per_conn,
            event_replay,
            loopback_congestion
        );
        if let Some(v) = self.resp_max_value_bytes {
            c.resp.max_value_bytes = v;
        }
        if let Some(v) = self.resp_memory_budget {
            c.resp.memory_budget = v;
        }
        if let Some(v) = self.resp_shards {
            c.resp.shards = v;
        }
        if let Some(token) = &self.auth_token {
            c.auth_token = Some(token.clone());
        }
        if let Some(OptionalAddr(a)) = self.redis_listen {
            c.redis_listen = a;
        }
        if let Some(OptionalAddr(a)) = self.metrics_listen {
            c.metrics_listen = a;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `kvtier serve`.
pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    init_logs(&args.log_format);
    let config = args.config()?;
    if args.check_config {
        println!("{config:#?}");
        return Ok(());
    }
    let summary = format!(
        "block {} | host {} | disk {} in {} ({})",
        config.block_bytes,
        config.host_bytes,
        config.disk_bytes,
        config.data_dir.display(),
        config.write_policy
    );
    let node = Node::start(config).context("starting the node")?;
    let off = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    eprintln!(
        "kvtier serve: binary {} | redis {} | metrics {} | io {}\n  {summary}\n  stop with Ctrl-C (SIGINT) or SIGTERM",
        node.addr(),
        off(node.redis_addr()),
        node.metrics_addr()
            .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
        node.backend().name(),
    );
    node.run_until_signal().context("serving")?;
    eprintln!("kvtier serve: stopped");
    Ok(())
}

fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KVTIER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Fails only when a subscriber is already installed (tests running `run` twice).
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
