//! kvtier-node: the kvtier server as a library — the block service over the storage tiers,
//! served by the IO runtime of `kvtier-server` on three ports: kvtier's binary protocol
//! (`docs/protocol.md`), a Redis-compatible port (RESP2) and HTTP `/metrics` + `/health`.
//! `kvtier serve` is a thin shell around [`Node`].
//!
//! | type | role |
//! |---|---|
//! | [`NodeConfig`], [`ByteSize`], [`IoBackend`] | every knob, from TOML, flags or env |
//! | [`Node`] | start, addresses, counters, graceful shutdown |
//! | [`NodeError`] | why a node did not start or a request failed |
//!
//! What it owns:
//!
//! - **Tiers.** G2 (a pre-allocated host arena under a block manager) and G3 (a local-disk
//!   tier in the data directory, crash safe); a write policy copies blocks from G2 to G3 in
//!   batches; a durable PUT reaches disk before it is acknowledged, so it survives `kill -9`;
//!   a restart serves every block the disk holds.
//! - **The binary protocol**: HELLO (version, namespace, token), PUT, GET (block bytes written
//!   straight from the arena), MATCH, EXISTS, DELETE, STATS, PING, and SUBSCRIBE (the G2 block-event stream with
//!   event ids and replay, which `kvtier router` can follow). Namespaces isolate tenants;
//!   with a token configured, nothing but HELLO works before authentication.
//! - **Metrics**: every counter of the runtime, the tiers and the protocols.
//!
//! # Example
//!
//! A node on free ports with small tiers, driven with raw frames from `kvtier-proto`.
//!
//! ```
//! use std::io::{Read, Write};
//! use kvtier_core::SequenceHash;
//! use kvtier_node::{ByteSize, Node, NodeConfig};
//! use kvtier_proto::{decode_response, FrameReader, Limits, PutBlocks, PutStatus, Request, Response, WriteBuf};
//!
//! let dir = tempfile::tempdir()?;
//! let node = Node::start(NodeConfig {
//!     listen: "127.0.0.1:0".parse()?,
//!     redis_listen: None,
//!     metrics_listen: None,
//!     data_dir: dir.path().to_path_buf(),
//!     block_bytes: ByteSize::kib(4),
//!     host_bytes: ByteSize::mib(1),
//!     disk_bytes: ByteSize::mib(4),
//!     ..NodeConfig::default()
//! })?;
//!
//! let limits = Limits::default();
//! let mut stream = std::net::TcpStream::connect(node.addr())?;
//! let hash = [SequenceHash::root(7)];
//! let block = vec![42u8; 4096];
//! let blocks = [block.as_slice()];
//! let mut out = WriteBuf::new();
//! Request::Put { durable: true, blocks: PutBlocks::new(&hash, &blocks)? }
//!     .encode(1, &limits, &mut out)?;
//! stream.write_all(&out.to_vec())?;
//!
//! let mut reader = FrameReader::new(limits);
//! let frame = loop {
//!     reader.read_from(&mut stream)?;
//!     if let Some(frame) = reader.next_frame()? {
//!         break frame;
//!     }
//! };
//! assert_eq!(frame.response(&limits)?, Response::Put(vec![PutStatus::Stored]));
//! drop(reader);
//! assert_eq!(node.stat("blocks_durable"), Some(1));
//! node.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod binary;
mod config;
mod counters;
mod disk_events;
mod error;
mod http;
mod lane;
mod metrics;
mod node;
pub mod resp;
mod scope;
mod service;
mod store;
mod subscribe;

pub use config::{ByteSize, IoBackend, NodeConfig};
pub use error::NodeError;
pub use node::Node;
