//! [`Node`]: a running kvtier server: the tiers ([`BlockStore`]), the IO runtime with its
//! listeners, and their lifecycle (start, counters, graceful shutdown).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvtier_events::InstanceId;
use kvtier_proto::Limits;
use kvtier_server::{Backend, BackendChoice, BinaryFramer, ListenerConfig, Server, ServerBuilder};

use crate::binary::Binary;
use crate::http::{HttpFramer, MAX_HEAD_BYTES};
use crate::lane::Lane;
use crate::resp::RespService;
use crate::service::{NodeService, Protocol};
use crate::store::{BlockStore, StoreSettings};
use crate::{IoBackend, NodeConfig, NodeError};

/// How long a graceful shutdown waits for blocks still being copied to disk.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node. Dropping it without [`shutdown`](Self::shutdown) stops it too (the IO
/// runtime's threads are stopped and joined), but only `shutdown` reports errors.
///
/// # Examples
///
/// ```
/// use kvtier_node::{ByteSize, Node, NodeConfig};
///
/// let dir = tempfile::tempdir()?;
/// let node = Node::start(NodeConfig {
///     listen: "127.0.0.1:0".parse()?,
///     redis_listen: None,
///     metrics_listen: None,
///     data_dir: dir.path().to_path_buf(),
///     block_bytes: ByteSize::kib(4),
///     host_bytes: ByteSize::mib(1),
///     disk_bytes: ByteSize::mib(4),
///     ..NodeConfig::default()
/// })?;
/// assert_ne!(node.addr().port(), 0);
/// node.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Node {
    server: Server,
    service: Arc<NodeService>,
    addr: SocketAddr,
    redis_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.addr)
            .field("redis_addr", &self.redis_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("backend", &self.server.backend())
            .finish()
    }
}

impl Node {
    /// Validates `config`, opens the tiers (recovering the disk tier's blocks from an earlier
    /// run), binds every listener and starts serving.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] for a bad value (naming the key), [`NodeError::Storage`] when a
    /// tier cannot be opened (for example a data directory written with another block size),
    /// [`NodeError::Server`] when an address cannot be bound or the IO backend is refused.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let write_policy = config
            .write_policy
            .parse()
            .map_err(|e| NodeError::Config(format!("write_policy: {e}")))?;
        let settings = StoreSettings {
            block_bytes: config.block_bytes.bytes() as usize,
            host_bytes: config.host_bytes.bytes(),
            disk_bytes: config.disk_bytes.bytes(),
            write_policy,
            offload_queue: config.offload_queue,
            offload_wait: std::time::Duration::from_millis(config.offload_wait_ms),
            event_replay: config.event_replay,
            instance: InstanceId(u128::from(fresh_instance_id())),
        };
        let store = Arc::new(BlockStore::open(&settings, &config.data_dir)?);
        let max_frame = config.max_frame_bytes.bytes() as usize;
        let limits = Limits {
            max_frame_bytes: u32::try_from(max_frame).unwrap_or(u32::MAX),
            max_blocks_per_request: config.max_blocks_per_request,
            ..Limits::default()
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = if config.workers == 0 {
            cores
        } else {
            config.workers
        };
        // One IO thread per core: the IO threads copy the block bytes (socket to arena and
        // back), and one thread alone cannot keep up with the loopback's bandwidth.
        let io_threads = if config.io_threads == 0 {
            cores
        } else {
            config.io_threads
        };
        let binary = Arc::new(Binary {
            store,
            limits,
            token: config.auth_token.as_ref().map(|t| t.as_bytes().to_vec()),
            lane: Lane::new(workers.max(2), 1024)?,
            server_counters: OnceLock::new(),
            subscriptions: Default::default(),
            server_name: format!("kvtier/{}", env!("CARGO_PKG_VERSION")),
        });

        let mut protocols = vec![Protocol::Binary];
        let mut builder_listeners = vec![ListenerConfig::new(config.listen, BinaryFramer::new())];
        let resp = RespService::new(config.resp.clone());
        let redis_at = config.redis_listen.map(|addr| {
            protocols.push(Protocol::Resp);
            builder_listeners.push(resp.listener(addr));
            protocols.len() - 1
        });
        let metrics_at = config.metrics_listen.map(|addr| {
            protocols.push(Protocol::Http);
            builder_listeners.push(
                ListenerConfig::new(addr, HttpFramer)
                    .with_ordered_replies(true)
                    .with_max_frame_bytes(MAX_HEAD_BYTES + 1)
                    .with_max_in_flight_per_conn(4),
            );
            protocols.len() - 1
        });
        let service = Arc::new(NodeService {
            protocols,
            binary,
            resp,
            healthy: AtomicBool::new(true),
            drain_timeout: DRAIN_TIMEOUT,
        });
        let mut builder = ServerBuilder::with_shared_service(Arc::clone(&service))
            .with_backend(match config.io_backend {
                IoBackend::Auto => BackendChoice::Auto,
                IoBackend::Uring => BackendChoice::Force(Backend::Uring),
                IoBackend::Epoll => BackendChoice::Force(Backend::Epoll),
            })
            .with_max_frame_bytes(max_frame)
            .with_max_connections(config.max_connections)
            .with_max_in_flight_per_conn(config.max_in_flight_per_conn)
            .with_loopback_congestion(config.loopback_congestion())
            .with_workers(workers)
            .with_io_threads(io_threads);
        for listener in builder_listeners {
            builder = builder.with_listener(listener);
        }
        let server = builder.start()?;
        let _ = service.binary.server_counters.set(server.counters_source());
        let addrs = server.local_addrs().to_vec();
        if let Some(addr) = redis_at.and_then(|i| addrs.get(i)) {
            let _ = service.resp.port.set(addr.port());
        }
        tracing::info!(
            addr = %addrs[0],
            backend = server.backend().name(),
            block_bytes = settings.block_bytes,
            "kvtier node serving"
        );
        Ok(Node {
            addr: addrs[0],
            redis_addr: redis_at.and_then(|i| addrs.get(i).copied()),
            metrics_addr: metrics_at.and_then(|i| addrs.get(i).copied()),
            server,
            service,
        })
    }

    /// The binary protocol's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The RESP port's bound address, if it is on.
    pub fn redis_addr(&self) -> Option<SocketAddr> {
        self.redis_addr
    }

    /// The HTTP metrics address, if it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The IO backend in use.
    pub fn backend(&self) -> Backend {
        self.server.backend()
    }

    /// Every counter and gauge, by name (what STATS and `/metrics` report).
    pub fn stats(&self) -> Vec<(String, u64)> {
        self.service.stats()
    }

    /// One counter by name.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Stops accepting, answers every request in flight, copies pending blocks to disk and
    /// flushes its index, then joins every thread.
    ///
    /// # Errors
    ///
    /// [`NodeError::Server`] when a thread failed.
    pub fn shutdown(self) -> Result<(), NodeError> {
        Ok(self.server.shutdown()?)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// As [`shutdown`](Self::shutdown), or when the signal handlers cannot be installed.
    pub fn run_until_signal(self) -> Result<(), NodeError> {
        Ok(self.server.run_until_signal()?)
    }
}

/// A new instance id per start: event ids restart at 1 with every process, so a subscriber
/// must see a new instance.
fn fresh_instance_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    xxhash_rust::xxh3::xxh3_64(
        &[
            nanos.to_le_bytes(),
            u64::from(std::process::id()).to_le_bytes(),
        ]
        .concat(),
    )
}
