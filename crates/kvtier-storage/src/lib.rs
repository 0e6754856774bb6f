//! kvtier's physical tiers: the bytes behind the logical blocks of `kvtier-core`.
//!
//! - [`layout`]: how many bytes one block holds (from a model's shape or given directly).
//! - [`arena`]: G2, a pre-allocated host-memory arena; block id `i` owns slot `i`.
//! - [`disk`]: G3, block bytes in preallocated files on local disk, indexed, checksummed and
//!   crash safe.
//! - [`tier`]: the [`Storage`](tier::Storage) interface every tier implements (streaming hit
//!   and miss handlers, purge, metadata), its G2 and G3 adapters, compare-and-swap manifests
//!   ([`ManifestStore`](tier::ManifestStore)), and a fault-injecting wrapper for tests.
//! - [`tiered`]: [`TieredStore`](tiered::TieredStore), tiers composed fastest first: byte
//!   gates, fan-out writes, promotion on hit, single-flight, prefix lookup and batched
//!   onboarding into G2, faults contained and counted.
//! - [`offload`]: write policies (write-through, selective, write-back), a bounded,
//!   non-blocking offload queue fed by a block manager's observer hook, and the engines that
//!   move real bytes out of G2: a write-through sink and a write-back eviction hook that
//!   stages victims' bytes before their slots are reused.
//! - [`remote`]: G4, fixed-size blocks in a shared external store (Redis/Valkey, a local
//!   directory, or S3 with the `s3` feature) under a namespace, framed, checksummed and
//!   checked on every read, with compare-and-swap manifests and a circuit breaker.
//!
//! `unsafe` is denied in this crate except in one module, `arena/raw.rs` (the arena's single
//! allocation and its guard-checked slot views); its tests also run under AddressSanitizer
//! (`scripts/asan.sh`).
//!
//! # Example
//!
//! Size blocks from a model, give a manager's blocks their bytes in host memory, write a block
//! in place, register it, and read it back from a second request that matches the prefix.
//!
//! ```
//! use kvtier_core::{BlockManager, G2, SequenceHash};
//! use kvtier_storage::arena::HostArena;
//! use kvtier_storage::layout::{BlockLayout, Dtype, ModelLayout};
//!
//! // A small model: 2 layers, 16 tokens per block, 2 KV heads of 64, bf16 -> 16 KiB blocks.
//! let layout = BlockLayout::from_model(&ModelLayout::new(2, 16, 2, 64, Dtype::Bf16))?;
//! assert_eq!(layout.block_bytes(), 16 << 10);
//! let manager = BlockManager::<G2>::builder()
//!     .with_block_count(32)
//!     .with_block_size(16)
//!     .build()?;
//! let arena = HostArena::new(&manager, layout)?;
//!
//! let hash = SequenceHash::root(42);
//! let mut block = manager.allocate_blocks(1)?.pop().unwrap();
//! arena.block_mut(&mut block)?.fill(7); // the engine writes K/V straight into the slot
//! let staged = block.stage(hash, 16).map_err(|e| e.to_string())?;
//! drop(manager.register_block(staged).map_err(|e| e.to_string())?); // cached, evictable
//!
//! let hit = manager.match_blocks(&[hash]); // holding `hit` keeps the slot from reuse
//! assert!(arena.block(&hit[0])?.iter().all(|&b| b == 7));
//! let stats = arena.stats();
//! assert_eq!((stats.entries, stats.used_bytes), (1, 16 << 10));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod arena;
pub mod disk;
pub mod layout;
pub mod offload;
pub mod remote;
pub mod tier;
pub mod tiered;
