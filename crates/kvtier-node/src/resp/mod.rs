//! The Redis-compatible port: RESP2 over the same IO threads as the binary protocol, for the
//! commands a KV-cache client needs (PING, GET, SET, MGET, EXISTS, DEL, SCAN with MATCH, INFO,
//! QUIT, and what client libraries send at connect).
//!
//! Keys are arbitrary bytes in their own namespace, apart from the binary protocol's blocks
//! (LMCache's Redis backend stores `<key>kv_bytes` and `<key>metadata` pairs). Values of any
//! size up to [`RespConfig::max_value_bytes`] live in host memory, each in an allocation of
//! its own size (a 200-byte metadata value costs 200 bytes plus a small entry overhead, not a
//! block slot), under one memory budget with CLOCK eviction, like redis' `allkeys-lru`.
//! Nothing on this port is persisted (`CONFIG GET save` says so).
//!
//! Every command runs on the IO thread that read it and replies are written in command order,
//! as redis clients require for pipelining. A value of 16 KiB or more goes out with `writev`
//! straight from where it is stored.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use kvtier_node::{ByteSize, Node, NodeConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let node = Node::start(NodeConfig {
//!     listen: "127.0.0.1:0".parse()?,
//!     redis_listen: Some("127.0.0.1:0".parse()?),
//!     metrics_listen: None,
//!     data_dir: dir.path().to_path_buf(),
//!     block_bytes: ByteSize::kib(4),
//!     host_bytes: ByteSize::mib(1),
//!     disk_bytes: ByteSize(0),
//!     ..NodeConfig::default()
//! })?;
//! let mut redis = std::net::TcpStream::connect(node.redis_addr().unwrap())?;
//! redis.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nGET k\r\n")?;
//! let mut reply = [0u8; 16];
//! redis.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"+OK\r\n$5\r\nhello\r\n");
//! node.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use kvtier_proto::resp::{RespLimits, command_len};
use kvtier_server::{ConnInfo, Framer, FramingError, ListenerConfig, Response};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::ByteSize;

mod exec;
mod keyspace;
mod striped;

use keyspace::Keyspace;
use striped::Striped;

/// Bytes a command may carry beyond its value (name, key, options, framing).
const COMMAND_HEADROOM: u64 = 64 << 10;

/// The RESP port's settings (`[resp]` in the configuration file).
///
/// # Examples
///
/// ```
/// let config = kvtier_node::NodeConfig::from_toml(
///     "[resp]\nmemory_budget = \"256MiB\"\nmax_value_bytes = \"16MiB\"",
/// )?;
/// assert_eq!(config.resp.memory_budget.bytes(), 256 << 20);
/// assert_eq!(config.resp.shards, 64);
/// # Ok::<(), kvtier_node::NodeError>(())
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    /// Largest value (and key) a client may send; a larger bulk is a protocol error that closes
    /// the connection, as redis' `proto-max-bulk-len`. Default 512 MiB (redis' own).
    pub max_value_bytes: ByteSize,
    /// Host memory for keys and values; past it, the least recently read keys are evicted
    /// (CLOCK). Default 1 GiB.
    pub memory_budget: ByteSize,
    /// Lock shards of the keyspace. Default 64.
    pub shards: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            max_value_bytes: ByteSize::mib(512),
            memory_budget: ByteSize::gib(1),
            shards: 64,
        }
    }
}

impl RespConfig {
    /// Checks values that parse but cannot work, naming the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_value_bytes.bytes() == 0 {
            return Err("resp.max_value_bytes: must be at least 1".into());
        }
        if self.max_value_bytes.bytes() + COMMAND_HEADROOM > u64::from(u32::MAX) {
            return Err(format!(
                "resp.max_value_bytes: {} is over the 4 GiB frame limit",
                self.max_value_bytes
            ));
        }
        if self.shards == 0 || self.shards > 4096 {
            return Err(format!(
                "resp.shards: {} is not between 1 and 4096",
                self.shards
            ));
        }
        Ok(())
    }
}

/// Counters and gauges of the RESP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespStats {
    /// Keys stored.
    pub keys: u64,
    /// Keys with an expiry.
    pub keys_with_expiry: u64,
    /// Bytes charged against the budget (keys, values, per-entry overhead).
    pub used_bytes: u64,
    /// The memory budget.
    pub budget_bytes: u64,
    /// Keys evicted to stay within the budget.
    pub evicted: u64,
    /// Keys removed because their expiry passed.
    pub expired: u64,
    /// GET/MGET lookups that found a value.
    pub hits: u64,
    /// GET/MGET lookups that found none.
    pub misses: u64,
    /// Commands run.
    pub commands: u64,
    /// Commands answered with an error (protocol errors included).
    pub errors: u64,
}

impl RespStats {
    /// The stats as `(name, value)` pairs for STATS and `/metrics` (names `resp_*`).
    pub fn named(&self) -> Vec<(String, u64)> {
        [
            ("resp_keys", self.keys),
            ("resp_keys_with_expiry", self.keys_with_expiry),
            ("resp_used_bytes", self.used_bytes),
            ("resp_budget_bytes", self.budget_bytes),
            ("resp_evicted", self.evicted),
            ("resp_expired", self.expired),
            ("resp_hits", self.hits),
            ("resp_misses", self.misses),
            ("resp_commands", self.commands),
            ("resp_errors", self.errors),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }
}

/// Cuts RESP commands out of a connection's bytes; the length of a multibulk command is known
/// once its last bulk's length line is in, so a large SET is read straight into one buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RespFramer {
    limits: RespLimits,
}

impl Framer for RespFramer {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        command_len(buf, &self.limits).map_err(|e| FramingError::Invalid {
            reason: e.reply_text(),
        })
    }
}

/// Per-connection state of the RESP port.
#[derive(Debug)]
pub(crate) struct RespSession {
    /// `CLIENT ID`.
    id: i64,
    /// `CLIENT SETNAME`.
    name: Mutex<Option<Vec<u8>>>,
}

/// The RESP port's service: the keyspace and the counters.
#[derive(Debug)]
pub(crate) struct RespService {
    config: RespConfig,
    limits: RespLimits,
    keyspace: Keyspace,
    next_client: AtomicU64,
    hits: Striped,
    misses: Striped,
    commands: Striped,
    errors: Striped,
    started: std::time::Instant,
    /// The port clients reach (for INFO's `tcp_port`), set once bound.
    pub(crate) port: std::sync::OnceLock<u16>,
}

/// What handling one command produced.
#[derive(Debug)]
pub(crate) struct RespOutcome {
    /// The reply (empty for an empty command).
    pub(crate) response: Response,
    /// Close the connection after the reply (QUIT).
    pub(crate) close: bool,
}

impl RespService {
    /// A service with an empty keyspace.
    pub(crate) fn new(config: RespConfig) -> Self {
        let limits = RespLimits {
            max_bulk_len: usize::try_from(config.max_value_bytes.bytes()).unwrap_or(usize::MAX),
            ..RespLimits::default()
        };
        Self {
            keyspace: Keyspace::new(config.shards, config.memory_budget.bytes()),
            limits,
            config,
            next_client: AtomicU64::new(1),
            hits: Striped::default(),
            misses: Striped::default(),
            commands: Striped::default(),
            errors: Striped::default(),
            started: std::time::Instant::now(),
            port: std::sync::OnceLock::new(),
        }
    }

    /// The listener for `addr`: RESP framing, replies in command order, frames up to one
    /// value plus headroom.
    pub(crate) fn listener(&self, addr: std::net::SocketAddr) -> ListenerConfig {
        let max = self.config.max_value_bytes.bytes() + COMMAND_HEADROOM;
        ListenerConfig::new(
            addr,
            RespFramer {
                limits: self.limits,
            },
        )
        .with_ordered_replies(true)
        .with_max_frame_bytes(usize::try_from(max).unwrap_or(usize::MAX))
    }

    /// A new connection's state.
    pub(crate) fn open_session(&self, _conn: &ConnInfo) -> RespSession {
        RespSession {
            id: self.next_client.fetch_add(1, Ordering::Relaxed) as i64,
            name: Mutex::new(None),
        }
    }

    /// The reply to bytes that cannot be cut into commands (the connection then closes).
    pub(crate) fn malformed(&self, error: &FramingError) -> Response {
        self.errors.add(1);
        let text = match error {
            FramingError::Invalid { reason } => reason.clone(),
            FramingError::TooLarge { .. } => "ERR Protocol error: too big request".to_string(),
            other => format!("ERR Protocol error: {other}"),
        };
        let mut bytes = Vec::with_capacity(text.len() + 3);
        bytes.push(b'-');
        bytes.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        bytes.extend_from_slice(b"\r\n");
        Response::from_vec(bytes)
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> RespStats {
        let c = self.keyspace.counts();
        RespStats {
            keys: c.keys,
            keys_with_expiry: c.keys_with_expiry,
            used_bytes: c.used_bytes,
            budget_bytes: c.budget_bytes,
            evicted: c.evicted,
            expired: c.expired,
            hits: self.hits.get(),
            misses: self.misses.get(),
            commands: self.commands.get(),
            errors: self.errors.get(),
        }
    }
}
