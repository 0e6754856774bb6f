//! Ingestion of the KV-event streams that vLLM and SGLang publish over ZeroMQ.
//!
//! Engines announce the blocks their prefix caches store and evict with their own hashes; this
//! module turns that stream into kvtier [`kvtier_events::EventMessage`]s keyed by kvtier
//! [`kvtier_core::SequenceHash`]es, so the router answers "who holds this prefix?" for a
//! request's tokens exactly as it does for kvtier instances. It does not index anything itself.
//!
//! ```text
//! zmq frames ─▶ decode (decode.rs) ─▶ VllmBatch ─▶ seq tracking (stream.rs, replay.rs)
//!                                                   ─▶ VllmConverter (convert.rs) ─▶ EventMessage
//! ```
//!
//! - [`decode_vllm_batch`]: msgpack payload → [`VllmBatch`], never panics.
//! - [`VllmConverter`]: per instance, external hash → kvtier hash, contiguous event ids.
//! - [`VllmSource`]: the tokio task with the sockets, gap detection and replay.

mod convert;
mod decode;
mod replay;
mod stats;
mod stream;
mod zmq_source;

pub use convert::{VllmConvertConfig, VllmConvertStats, VllmConverter, VllmGroupFilter};
pub use decode::{
    ExternalHash, ExtraKey, SkipReason, VllmBatch, VllmDecodeError, VllmEvent, decode_vllm_batch,
};
pub use stats::VllmStats;
pub use zmq_source::{
    VllmSource, VllmSourceBuilder, VllmSourceError, VllmSourceHandle, vllm_instance_id,
};
