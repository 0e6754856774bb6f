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
//! - [`decode_vllm_batch`]: msgpack payload → [`VllmBatch`], never panics; a bad event is a
//!   [`VllmEvent::Skipped`], not a bad batch.
//! - [`VllmConverter`]: per instance, external hash → kvtier hash, copy counts per medium,
//!   offloaded copies, blocks under forgotten parents, contiguous event ids, one message per
//!   run of same-kind events.
//! - [`vllm_request_hashes`] (`keys.rs`): vLLM's extra keys (salt, multimodal items) folded
//!   into a request's hashes exactly as the converter folds them into stored blocks.
//! - [`VllmSource`]: the tokio task with the sockets, gap detection and replay (feature
//!   `zmq`, with `replay.rs` and `stream.rs`; everything else here is pure);
//!   [`VllmSourceState`] (`state.rs`) lets it resume after a restart.

mod convert;
mod decode;
mod keys;
#[cfg(feature = "zmq")]
mod replay;
mod state;
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

pub use convert::{
    VllmConvertConfig, VllmConvertStats, VllmConverter, VllmGroupFilter, VllmMmKeys,
};
pub use decode::{
    ExternalHash, ExtraKey, SkipReason, VllmBatch, VllmDecodeError, VllmDecoder, VllmEvent,
    decode_vllm_batch,
};
pub use keys::{MmPlaceholder, vllm_request_hashes};
pub use state::{VllmSourceState, VllmStateError};
pub use stats::VllmStats;
#[cfg(feature = "zmq")]
pub use zmq_source::{
    StartEventIds, VllmSource, VllmSourceBuilder, VllmSourceError, VllmSourceHandle,
    vllm_instance_id,
};
