//! kvtier-router: which instance already holds a request's prefix.
//!
//! This crate owns the consumer side of block events: a global index of which instances hold
//! which sequence hashes on which medium ([`PrefixIndex`]), the per-instance stream bookkeeping
//! that keeps it exact under lost, duplicated and reordered messages ([`Router`]: replay, dump,
//! shutdown, expiry), snapshots for warm restarts, ingestion of the ZeroMQ KV-event streams
//! vLLM and SGLang publish ([`VllmSource`]), and the HTTP service ([`RouterService`], run by
//! `kvtier router`). The producer side (emitters, publishers, the wire message) is
//! `kvtier-events`; the wire and the semantics are specified in `docs/events.md`.
//!
//! | type | role |
//! |---|---|
//! | [`Router`], [`RouterBuilder`] | applies messages and dumps, repairs gaps, answers queries |
//! | [`RepairJob`], [`RepairResult`] | a gap repair fetched outside the router's lock ([`Router::take_repairs`]) |
//! | [`write_snapshot`], [`SnapshotError`] | snapshot files: serialised under the lock, written after it ([`Router::restore_or_empty`] at start) |
//! | [`PrefixIndex`], [`QueryScratch`] | the index itself: per hash, the (instance, medium) holders |
//! | [`RouteAnswer`], [`InstanceOverlap`], [`MediumOverlap`] | per instance and medium, the prefix held (a bound under power-of-two announcements) and the best instance |
//! | [`LoadSignal`], [`LoadTable`], [`NoLoad`] | how busy instances are: tie-breaks, or a cost with [`RouterBuilder::with_load_weight`] |
//! | [`VllmSource`] | a vLLM/SGLang engine's ZeroMQ stream, re-hashed to kvtier sequence hashes, gaps replayed, state for warm restarts ([`VllmSourceState`]) |
//! | [`vllm_request_hashes`] | a request's hashes with vLLM's extra keys (salt, multimodal items) folded in as the converter folds them |
//! | [`RouterService`] | ingestion task, expiry and snapshots, `POST /query`, `/metrics`, connection/body limits |
//! | [`SourceStates`] | the sources' stream positions saved beside a snapshot, for warm restarts |
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `zmq` | via `service` | [`VllmSource`] and its replay client (tokio, zeromq) |
//! | `service` | yes | [`RouterService`] (axum, prometheus-client); implies `zmq` |
//!
//! With `default-features = false` the crate is its pure part: the index, [`Router`],
//! snapshots and the vLLM decoder and converter, with no async runtime, socket or HTTP
//! library in the dependency tree (CI checks it with `cargo tree`).
//!
//! # Example
//!
//! Two workers with block managers announce what they register; the router sends a request
//! to the one holding more of it, and keeps up when a message is lost.
//!
//! ```
//! use std::sync::Arc;
//! use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme};
//! use kvtier_events::{EventEmitter, InstanceId, Publisher};
//! use kvtier_router::{QueryScratch, Router};
//!
//! let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
//! let prompt: Vec<u32> = (0..16).collect();
//! let hashes = hasher.sequence_hashes(&prompt);
//!
//! let mut router = Router::builder().build();
//! let mut workers = vec![];
//! for (id, cached) in [(1u128, 1usize), (2, 3)] {
//!     let publisher = Publisher::new(InstanceId(id));
//!     router.attach_source(InstanceId(id), Arc::new(publisher.clone()));
//!     let emitter = EventEmitter::builder(publisher.clone()).with_max_delay(None).build()?;
//!     let manager = BlockManager::<G1>::builder()
//!         .with_block_count(8)
//!         .with_block_size(4)
//!         .with_observer(Arc::new(emitter.clone()))
//!         .build()?;
//!     let staged = manager
//!         .allocate_blocks(cached)?
//!         .into_iter()
//!         .zip(&hashes)
//!         .map(|(b, &h)| b.stage(h, 4).map_err(|e| e.to_string()))
//!         .collect::<Result<Vec<_>, _>>()?;
//!     let held = manager.register_blocks(staged).map_err(|e| e.to_string())?;
//!     emitter.flush();
//!     workers.push((manager, held, publisher));
//! }
//! // Worker 1's message arrives; worker 2's is lost, but its next one opens a gap that the
//! // router repairs by replay from worker 2's publisher.
//! let mut sub1 = workers[0].2.subscribe_from_oldest();
//! router.apply(sub1.try_recv()?);
//! workers[1].2.publish(kvtier_events::Payload::Cleared { medium: Some(kvtier_core::Medium::Disk) })?;
//! let mut sub2 = workers[1].2.subscribe_from_oldest();
//! let _lost = sub2.try_recv()?;
//! router.apply(sub2.try_recv()?);
//! assert_eq!(router.stats().repaired_by_replay, 1);
//!
//! let answer = router.query(&hashes, &mut QueryScratch::default());
//! assert_eq!(answer.best, Some(InstanceId(2)));
//! assert_eq!(answer.overlaps.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Without the features, the map's links to the feature-gated types point at `# Features`.
#![cfg_attr(not(feature = "zmq"), doc = "[`VllmSource`]: #features")]
#![cfg_attr(not(feature = "service"), doc = "[`RouterService`]: #features")]

mod index;
mod instances;
mod query;
mod router;
#[cfg(feature = "service")]
mod service;
mod snapshot;
mod vllm;

pub use index::{IndexError, Overlap, PrefixIndex, QueryScratch, RemoveOutcome};
pub use query::{InstanceOverlap, LoadSignal, LoadTable, MediumOverlap, NoLoad, RouteAnswer};
pub use router::{
    DEFAULT_MAX_EARLY, InstanceInfo, MAX_EXPECTED_BLOCKS, RepairJob, RepairResult, Router,
    RouterBuilder, RouterStats,
};
#[cfg(feature = "service")]
pub use service::{
    AddSourceError, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, ExtraKeysJson, INGEST_QUEUE,
    InstanceJson, LoadUpdate, MAX_QUERY_BLOCKS, MAX_QUERY_MM_ITEMS, MAX_QUERY_TOKENS, MediumJson,
    MmItemJson, QueryRequest, QueryResponse, RouterService, RouterServiceBuilder, SMALL_BODY,
    SourceStates, SourceStatesError,
};
pub use snapshot::{SnapshotError, write_snapshot};
pub use vllm::{
    ExternalHash, ExtraKey, MmPlaceholder, SkipReason, VllmBatch, VllmConvertConfig,
    VllmConvertStats, VllmConverter, VllmDecodeError, VllmDecoder, VllmEvent, VllmGroupFilter,
    VllmMmKeys, VllmSourceState, VllmStateError, VllmStats, decode_vllm_batch, vllm_request_hashes,
};
#[cfg(feature = "zmq")]
pub use vllm::{
    StartEventIds, VllmSource, VllmSourceBuilder, VllmSourceError, VllmSourceHandle,
    vllm_instance_id,
};
