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
//! - [`VllmSource`]: the tokio task with the sockets, gap detection and replay (feature
//!   `zmq`, with `replay.rs` and `stream.rs`; everything else here is pure).

mod convert;
mod decode;
#[cfg(feature = "zmq")]
mod replay;
#[cfg_attr(
    not(feature = "zmq"),
    expect(
        dead_code,
        reason = "the live counters have one writer, the `zmq` source task"
    )
)]
mod stats;
#[cfg(feature = "zmq")]
mod stream;
#[cfg(feature = "zmq")]
mod zmq_source;

pub use convert::{VllmConvertConfig, VllmConvertStats, VllmConverter, VllmGroupFilter};
pub use decode::{ExternalHash, VllmBatch, VllmDecodeError, VllmEvent, decode_vllm_batch};
pub use stats::VllmStats;
#[cfg(feature = "zmq")]
pub use zmq_source::{
    VllmSource, VllmSourceBuilder, VllmSourceError, VllmSourceHandle, vllm_instance_id,
};
