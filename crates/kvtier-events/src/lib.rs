//! kvtier-events: the block events that tell a fleet which instance holds which prefix.
//!
//! This crate owns the path from a block manager's registrations and removals to a message on
//! the wire: which blocks are announced ([`EmitPolicy`]), how they are grouped ([`EventEmitter`]
//! batches one kind at a time, creates by position ascending and removes descending), the
//! per-instance stream with event ids, fan-out and a replay buffer ([`Publisher`],
//! [`Subscriber`], [`ReplaySource`]), and the message itself in JSON or msgpack
//! ([`EventMessage`], [`Dump`], [`WireFormat`]). It owns no sockets: transports carry the bytes.
//! The consumer side (the global prefix index) lives in `kvtier-router`. The wire layout is
//! specified in `docs/events.md`.
//!
//! | type | role |
//! |---|---|
//! | [`EventEmitter`] | a [`kvtier_core::BlockObserver`]: policy filter + batcher + time-limit flusher |
//! | [`ReleaseHandle`] | announces a tracked block's removal when dropped, exactly once |
//! | [`Publisher`] | one instance's stream: event ids, fan-out, replay buffer, current set for dumps |
//! | [`Subscriber`] | a non-blocking cursor into a stream; told when it lagged |
//! | [`ReplaySource`] | where a consumer repairs a gap: replay of ids, or a full dump |
//! | [`EventMessage`], [`Payload`], [`EventBatch`], [`Dump`] | the wire message |
//!
//! # Example
//!
//! A manager announces what it registers and evicts; a consumer reads the stream and, after
//! losing messages, repairs from a dump.
//!
//! ```
//! use std::sync::Arc;
//! use kvtier_core::{BlockManager, G2, SequenceHash};
//! use kvtier_events::{
//!     EventEmitter, EventKind, InstanceId, Payload, Publisher, RecvError, ReplaySource, WireFormat,
//!     EventMessage,
//! };
//!
//! let publisher = Publisher::with_replay_capacity(InstanceId(0xA), 2);
//! let mut consumer = publisher.subscribe();
//! let emitter = EventEmitter::builder(publisher.clone())
//!     .for_tier::<G2>()
//!     .with_max_batch(1)
//!     .build()?;
//! let manager = BlockManager::<G2>::builder()
//!     .with_block_count(2)
//!     .with_observer(Arc::new(emitter.clone()))
//!     .build()?;
//!
//! // Register three blocks one after another in a two-block manager: the third evicts one.
//! for seed in 1..=3 {
//!     let block = manager.allocate_blocks(1)?.pop().unwrap();
//!     let block = block.stage(SequenceHash::root(seed), 16).map_err(|e| e.to_string())?;
//!     drop(manager.register_block(block).map_err(|e| e.to_string())?);
//! }
//! // Four messages (3 creates, 1 remove) went through a 2-message buffer: the consumer lagged.
//! assert_eq!(publisher.last_event_id(), 4);
//! assert!(matches!(consumer.try_recv(), Err(RecvError::Lagged { .. })));
//! let dump = publisher.dump()?;
//! assert_eq!(dump.event_id, 4);
//! assert_eq!(dump.blocks[0].hashes.len(), 2);
//!
//! // Messages cross the wire as JSON or msgpack.
//! let msg = consumer.try_recv()?;
//! let bytes = msg.encode(WireFormat::Msgpack)?;
//! assert_eq!(&EventMessage::decode(&bytes, WireFormat::Msgpack)?, &*msg);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batcher;
mod emitter;
mod message;
mod policy;
mod publisher;
mod serde_repr;
mod wire;

pub use emitter::{
    DEFAULT_MAX_BATCH, DEFAULT_MAX_DELAY, EmitterStats, EventEmitter, EventEmitterBuilder,
    ReleaseHandle,
};
pub use message::{Dump, EventBatch, EventKind, EventMessage, InstanceId, MediumBlocks, Payload};
pub use policy::EmitPolicy;
pub use publisher::{
    DEFAULT_REPLAY_CAPACITY, Publisher, PublisherClosed, RecvError, ReplayError, ReplaySource,
    Subscriber,
};
pub use wire::{WireError, WireFormat};
