//! [`NodeConfig`]: every knob of a node, as plain data that a TOML file, flags and environment
//! variables fill in (`kvtier serve` maps each key to `--key-name` and `KVTIER_KEY_NAME`), and
//! [`ByteSize`], the sizes written `262144`, `"256KiB"` or `"1 GiB"`.
//!
//! Defaults are the embedded default `kvtier serve` runs with no configuration: host memory
//! plus a local-disk tier under `./kvtier-data`, every port on 127.0.0.1.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::NodeError;
use crate::resp::RespConfig;

/// A size in bytes: an integer, or a string with a unit (`B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB`, `T`/`TB`/`TiB`; all powers of 1024; case-insensitive; spaces allowed).
///
/// # Examples
///
/// ```
/// use kvtier_node::ByteSize;
///
/// assert_eq!("256KiB".parse::<ByteSize>()?.bytes(), 256 << 10);
/// assert_eq!("1 g".parse::<ByteSize>()?.bytes(), 1 << 30);
/// assert_eq!("4096".parse::<ByteSize>()?.bytes(), 4096);
/// assert!("12 parsecs".parse::<ByteSize>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a size (examples: 4096, 256KiB, 1GiB)"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => return Err(format!("unknown size unit `{other}` in `{s}`")),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            if self.0 >= 1 << shift && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Which IO backend the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBackend {
    /// io_uring where the kernel allows it, else epoll (logged at start).
    #[default]
    Auto,
    /// io_uring, or fail to start.
    Uring,
    /// epoll.
    Epoll,
}

impl FromStr for IoBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            other => Err(format!("unknown IO backend `{other}` (auto, uring, epoll)")),
        }
    }
}

/// Everything a node is configured with. Unknown keys in a file are an error naming them.
///
/// # Examples
///
/// ```
/// use kvtier_node::{ByteSize, NodeConfig};
///
/// let config: NodeConfig = NodeConfig::from_toml(r#"
///     listen = "127.0.0.1:0"
///     data_dir = "/tmp/kvtier-doc"
///     block_bytes = "64KiB"
///     host_bytes = "64MiB"
/// "#)?;
/// assert_eq!(config.block_bytes, ByteSize::kib(64));
/// assert_eq!(config.disk_bytes, NodeConfig::default().disk_bytes); // not set: the default
/// assert!(NodeConfig::from_toml("blok_bytes = 4096").is_err()); // typo: named in the error
/// # Ok::<(), kvtier_node::NodeError>(())
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address of the binary protocol. Default `127.0.0.1:7400`.
    pub listen: SocketAddr,
    /// Address of the Redis-compatible (RESP2) port; `None` turns it off. Default
    /// `127.0.0.1:7401`.
    pub redis_listen: Option<SocketAddr>,
    /// Address of the HTTP `/metrics` and `/health` endpoint; `None` turns it off. Default
    /// `127.0.0.1:7402`.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the disk tier. Default `./kvtier-data`.
    pub data_dir: PathBuf,
    /// Bytes of one block (every block of the binary protocol has this size). Default 256 KiB.
    pub block_bytes: ByteSize,
    /// Host memory (G2) for blocks, allocated at start. Default 1 GiB.
    pub host_bytes: ByteSize,
    /// Local disk (G3) for blocks; 0 turns the disk tier off. Default 8 GiB.
    pub disk_bytes: ByteSize,
    /// When blocks are copied from host memory to disk: `write_through` (every stored block,
    /// asynchronously, batched), `write_through_selective[:k]` (once read k times) or
    /// `write_back` (when evicted from host memory). A durable PUT is on disk before it is
    /// acknowledged whatever the policy. Default `write_through`.
    pub write_policy: String,
    /// Blocks waiting to be copied to disk before more are skipped (counted). Default 4096.
    pub offload_queue: usize,
    /// Milliseconds a PUT that evicts from host memory waits for the disk to take the
    /// evicted blocks that still need a copy (write-through blocks not copied yet, write-back
    /// victims) when its staging buffers are all in use; past it they are skipped and counted.
    /// 0 never waits: a disk slower than the PUTs then loses those copies, and a wait holds
    /// sustained PUTs of new blocks to the disk's speed. Default 0.
    pub offload_wait_ms: u64,
    /// A token every binary connection must present in HELLO; `None`: no authentication.
    /// Default none.
    pub auth_token: Option<String>,
    /// IO backend. Default `auto`.
    pub io_backend: IoBackend,
    /// IO threads; 0 picks one per core. Default 0.
    pub io_threads: usize,
    /// Worker threads; 0 picks one per core. Default 0.
    pub workers: usize,
    /// Largest frame a client may send. Default 65 MiB (a PUT of 16 blocks of 4 MiB).
    pub max_frame_bytes: ByteSize,
    /// Most blocks in one PUT/GET/MATCH/EXISTS/DELETE. Default 16,384.
    pub max_blocks_per_request: u32,
    /// Most open connections (all ports together). Default 4096.
    pub max_connections: usize,
    /// Most requests in flight on one connection before the server stops reading it. Default
    /// 128.
    pub max_in_flight_per_conn: usize,
    /// Event messages kept for SUBSCRIBE replay. Default 4096.
    pub event_replay: usize,
    /// TCP congestion control of connections from loopback clients (`system`: the host's
    /// default for every connection). Where the host's default paces (`bbr`), `cubic` is
    /// faster through a few connections and slower through many (`docs/server.md`). Default
    /// `system`.
    pub loopback_congestion: String,
    /// The Redis-compatible port's keyspace.
    pub resp: RespConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            redis_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7401))),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7402))),
            data_dir: PathBuf::from("kvtier-data"),
            block_bytes: ByteSize::kib(256),
            host_bytes: ByteSize::gib(1),
            disk_bytes: ByteSize::gib(8),
            write_policy: "write_through".to_string(),
            offload_queue: 4096,
            offload_wait_ms: 0,
            auth_token: None,
            io_backend: IoBackend::Auto,
            io_threads: 0,
            workers: 0,
            max_frame_bytes: ByteSize::mib(65),
            max_blocks_per_request: 16_384,
            max_connections: 4096,
            max_in_flight_per_conn: 128,
            event_replay: kvtier_events::DEFAULT_REPLAY_CAPACITY,
            loopback_congestion: "system".to_string(),
            resp: RespConfig::default(),
        }
    }
}

impl NodeConfig {
    /// The congestion control to give loopback connections (`None`: the system's).
    pub fn loopback_congestion(&self) -> Option<String> {
        (self.loopback_congestion != "system").then(|| self.loopback_congestion.clone())
    }

    /// Reads a TOML document; keys left out keep their defaults.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming the key that is unknown or has a bad value.
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        toml::from_str(text).map_err(|e| NodeError::Config(e.message().to_string()))
    }

    /// Reads a TOML file.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] when the file cannot be read or is not a valid configuration.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {}", path.display(), e.message())))
    }

    /// Checks values that parse but cannot work, naming the key.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`].
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |key: &str, why: String| Err(NodeError::Config(format!("{key}: {why}")));
        let block = self.block_bytes.bytes();
        if block == 0 || block > u64::from(u32::MAX) {
            return bad(
                "block_bytes",
                format!("{} is not a usable block size", self.block_bytes),
            );
        }
        if self.host_bytes.bytes() < block {
            return bad(
                "host_bytes",
                format!("{} holds no block of {}", self.host_bytes, self.block_bytes),
            );
        }
        if self.disk_bytes.bytes() != 0 && self.disk_bytes.bytes() < block {
            return bad(
                "disk_bytes",
                format!(
                    "{} holds no block of {} (0 turns the disk tier off)",
                    self.disk_bytes, self.block_bytes
                ),
            );
        }
        let frame = self.max_frame_bytes.bytes();
        if frame < block + 64 || frame > u64::from(u32::MAX) {
            return bad(
                "max_frame_bytes",
                format!(
                    "{} must hold one block of {} plus its header",
                    self.max_frame_bytes, self.block_bytes
                ),
            );
        }
        if self.max_blocks_per_request == 0 {
            return bad("max_blocks_per_request", "must be at least 1".into());
        }
        if let Err(e) = self
            .write_policy
            .parse::<kvtier_storage::offload::WritePolicy>()
        {
            return bad("write_policy", e.to_string());
        }
        if let Some(cc) = self.loopback_congestion()
            && let Err(e) = kvtier_server::check_loopback_congestion(&cc)
        {
            return bad("loopback_congestion", e.to_string());
        }
        if self.offload_queue == 0 {
            return bad("offload_queue", "must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_in_flight_per_conn == 0 {
            return bad(
                "max_connections / max_in_flight_per_conn",
                "must be at least 1".into(),
            );
        }
        self.resp.validate().map_err(NodeError::Config)?;
        if self.auth_token.as_deref().is_some_and(str::is_empty) {
            return bad(
                "auth_token",
                "empty (leave it out to turn authentication off)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (text, bytes) in [("0", 0), ("1K", 1024), ("3 MiB", 3 << 20), ("2gb", 2 << 30)] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.bytes(), bytes, "{text}");
            assert_eq!(size.to_string().parse::<ByteSize>().unwrap(), size);
        }
        assert!("".parse::<ByteSize>().is_err());
        assert!("-1K".parse::<ByteSize>().is_err());
        assert!("99999999999T".parse::<ByteSize>().is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = NodeConfig::from_toml("block_bytes = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lots"), "{e}");
        let e = NodeConfig::from_toml("listen = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid socket address"), "{e}");
        let e = NodeConfig::from_toml("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let config = NodeConfig {
            write_policy: "write_sideways".into(),
            ..NodeConfig::default()
        };
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("write_policy"), "{e}");
        let config = NodeConfig {
            loopback_congestion: "no_such_cc".into(),
            ..NodeConfig::default()
        };
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("loopback_congestion"), "{e}");
        let cubic = NodeConfig::from_toml("loopback_congestion = \"cubic\"").unwrap();
        assert_eq!(cubic.loopback_congestion().as_deref(), Some("cubic"));
        assert_eq!(NodeConfig::default().loopback_congestion(), None);
        let config = NodeConfig {
            host_bytes: ByteSize::kib(4),
            ..NodeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("host_bytes")
        );
        NodeConfig::default().validate().unwrap();
    }
}
