//! Request-level helpers: [`RequestSequence`] drives one inference request through a
//! [`BlockManager`](crate::BlockManager).
//!
//! A request owns its tokens (hashed incrementally by a [`TokenSequence`](crate::TokenSequence))
//! and a *page table*: the blocks holding its KV, in order. The first blocks are registered
//! ([`ImmutableBlock`](crate::ImmutableBlock)s: matched from the cache or filled by this
//! request); the rest are writable ([`MutableBlock`](crate::MutableBlock)s: the partial tail and
//! blocks allocated ahead).
//!
//! ```text
//!            new ──match_prefix──▶ allocate_for_prefill ──register_filled──┐
//!                                 (or prefill_chunk, chunk by chunk) ──────┤
//!                                                                          ▼
//!   reacquire ◀── release (tail-first) ◀── decoding: append_token / append_tokens / rollback
//!       └───────────────────────────────────────────────▶ decoding
//!
//!   page table:  [ registered 0 .. R )[ writable R .. held )
//!   tokens:      [ full blocks ....... | partial tail ]
//! ```
//!
//! # Invariants
//!
//! - `registered == kv_position / block_size`: a block is registered as soon as every token of
//!   it is covered by `kv_position`, and never before.
//! - `held * block_size >= kv_position <= len`: every covered token has a slot.
//! - A released sequence holds no block and `kv_position == 0`; its tokens and hashes stay.
//! - Every failed call leaves the sequence unchanged and takes nothing from the manager.
//! - Blocks are always given back deepest first (see [`RequestSequence::release`]).
//!
//! Not owned here: scheduling across requests, the bytes of the KV (a block is an id), and
//! transfers between tiers.

mod accessors;
mod error;
mod request;

pub use error::SequenceError;
pub use request::RequestSequence;
