//! The shared conformance suite, run for G2 (host arena) and G3 (disk tier). G4 joins with one
//! more test function calling `conformance_support::storage_suite`.

#[path = "conformance_support/mod.rs"]
mod conformance_support;

use std::sync::Arc;

use conformance_support::{Durability, block, hash, manifest_suite, storage_suite};
use kvtier_core::{BlockManager, G2};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskManifests, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tier::{ManifestStore, Storage, get_block, put_block};

const BLOCK: usize = 4096;

fn host(blocks: usize) -> HostStorage<G2> {
    let manager = BlockManager::<G2>::builder()
        .with_block_count(blocks)
        .build()
        .unwrap();
    let arena = HostArena::new(&manager, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap();
    HostStorage::new(Arc::new(arena))
}

#[test]
fn g2_host_arena_conforms() {
    storage_suite(&mut || Arc::new(host(128)), Durability::Volatile);
}

#[test]
fn g3_disk_tier_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    storage_suite(
        &mut || {
            let tier = DiskTier::open(&path, DiskConfig::new("conformance", BLOCK, 256)).unwrap();
            Arc::new(DiskStorage::new(Arc::new(tier)))
        },
        Durability::Durable,
    );
}

#[test]
fn g3_manifests_conform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    manifest_suite(
        &mut || Arc::new(DiskManifests::open(&path).unwrap()) as Arc<dyn ManifestStore>,
        Durability::Durable,
    );
}

/// G2: a hit handler holds the block's guard, so its slot is not evicted and reused under the
/// reader even when every other slot is taken and the block was purged.
#[test]
fn g2_hit_handler_keeps_its_slot() {
    let s = host(4);
    put_block(&s, hash(1), &block(1, 0, BLOCK)).unwrap();
    let mut hit = s.lookup(hash(1)).unwrap().unwrap();
    let mut first = vec![0u8; 100];
    assert_eq!(hit.read_chunk(&mut first).unwrap(), 100);
    assert!(s.purge(hash(1)).unwrap());
    // Fill every other slot; the held one cannot be handed out.
    for i in 2..5 {
        put_block(&s, hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    assert!(s.get_miss_handler(hash(9), BLOCK).is_ok_and(|m| {
        drop(m);
        true
    }));
    let mut rest = vec![0u8; BLOCK - 100];
    hit.read_all(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(
        first == block(1, 0, BLOCK),
        "the slot changed under its reader"
    );
    drop(hit);
    assert!(
        !s.contains(hash(1)),
        "purged block kept after its reader left"
    );
    // The write for hash 9 evicted one of the cached blocks, never the held one.
    let kept = (2..5).filter(|&i| get_block(&s, hash(i)).unwrap() == Some(block(i, 0, BLOCK)));
    assert_eq!(kept.count(), 2);
}

/// G2: a miss handler that cannot get a slot (all held by readers) says the tier is full.
#[test]
fn g2_full_when_every_slot_is_held() {
    let s = host(2);
    put_block(&s, hash(1), &block(1, 0, BLOCK)).unwrap();
    put_block(&s, hash(2), &block(2, 0, BLOCK)).unwrap();
    let _a = s.lookup(hash(1)).unwrap().unwrap();
    let _b = s.lookup(hash(2)).unwrap().unwrap();
    assert!(matches!(
        s.get_miss_handler(hash(3), BLOCK),
        Err(kvtier_storage::tier::StorageError::Full(_))
    ));
}
