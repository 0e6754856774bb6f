//! G4: fixed-size blocks in a shared external store (Redis/Valkey, a local directory or S3
//! through `object_store`), for deployments that outgrow one machine.
//!
//! This module owns the blocking API ([`G4Store`]), the key layout, the frame every value is
//! stored in, the counters and the circuit breaker; the backends (`redis.rs`, `object.rs`,
//! `s3.rs`) only move bytes. In a [`TieredStore`](crate::tiered::TieredStore), G4 is a tier
//! like G2 and G3 through [`RemoteStorage`](crate::tier::remote::RemoteStorage). Invariants:
//!
//! - **Namespaced keys.** Every key starts with the [`Namespace`]'s prefix (model + hash scheme +
//!   block size) and every frame carries its tag, so deployments sharing a store never read
//!   each other's blocks: `PREFIX/b/{sequence hash:032x}` for blocks, `PREFIX/m/{name}` for
//!   manifests.
//! - **Checked on every read.** A value is served only if its header (magic, version, kind,
//!   namespace, key, length = block size) and xxh3 checksum match; otherwise the caller gets
//!   [`G4Error::Corrupt`] (or [`Fetched::Corrupt`] in a batch) and `corrupt` is counted.
//! - **Fail fast.** Every call is bounded by the store's timeout; after `threshold`
//!   consecutive outage errors the breaker opens and calls fail with [`G4Error::BreakerOpen`]
//!   without touching the network, until one probe after the back-off succeeds.
//! - **Safe concurrent writers.** Manifests are compare-and-swap objects: [`G4Store::put_new`],
//!   [`G4Store::cas_update`], [`G4Store::delete_manifest`], [`G4Store::touch_ttl`], with
//!   versions that only grow (no ABA across a delete and re-create).
//!
//! # Example
//!
//! ```
//! use kvtier_core::SequenceHash;
//! use kvtier_storage::remote::{Cas, G4Store, Namespace};
//!
//! let dir = tempfile::tempdir()?;
//! let ns = Namespace::new("llama-3-8b", "xxh3-v1/bs16", 4096)?;
//! let g4 = G4Store::builder(ns).local_dir(dir.path()).build()?;
//!
//! let hash = SequenceHash::root(42);
//! g4.put(hash, &[7u8; 4096])?;
//! let mut out = vec![0u8; 4096];
//! assert!(g4.get_into(hash, &mut out)?);
//! assert!(out.iter().all(|&b| b == 7));
//!
//! // Two writers race on a manifest: only one compare-and-swap from version `v` wins.
//! let Cas::Written(v) = g4.put_new("index", b"one")? else { unreachable!() };
//! assert!(matches!(g4.cas_update("index", v, b"two")?, Cas::Written(_)));
//! assert_eq!(g4.cas_update("index", v, b"three")?, Cas::Conflict);
//! assert_eq!(g4.stats().hits, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod breaker;
mod error;
mod frame;
mod landing;
mod namespace;
mod object;
mod redis;
mod resp;
#[cfg(feature = "s3")]
mod s3;
mod stats;
mod store;

pub use error::G4Error;
pub use frame::FrameError;
pub use namespace::Namespace;
#[cfg(feature = "s3")]
pub use s3::S3Config;
pub use stats::G4Stats;
pub use store::{Cas, Fetched, G4Store, G4StoreBuilder, Landed, Manifest};
