//! The shared conformance suite, run for G2 (host arena) and G3 (disk tier); G4 runs it in
//! `conformance_g4.rs` (it needs a redis-server).

#[path = "conformance_support/mod.rs"]
mod conformance_support;

use std::sync::Arc;

use conformance_support::{Durability, block, hash, manifest_suite, storage_suite};
use kvtier_core::{BlockManager, G2};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskManifests, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::fault::{Fault, FaultyManifests, FaultyStorage};
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tier::{ManifestStore, Storage, StorageError, get_block, put_block};

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

/// G2: readers streaming blocks while a writer evicts constantly never see a slot change
/// under them (every block they stream is whole).
#[test]
fn g2_concurrent_readers_and_an_evicting_writer() {
    let s = Arc::new(host(8));
    for i in 0..4 {
        put_block(&*s, hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Fills free and evictable slots: evicts whatever no reader holds.
                let _ = put_block(&*s, hash(n), &block(n, 0, BLOCK));
                n += 1;
            }
            n - 100
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut whole = 0;
                for round in 0..300u64 {
                    let i = (round + r) % 4;
                    let Some(mut hit) = s.lookup(hash(i)).unwrap() else {
                        // Evicted between reads: bring it back.
                        let _ = put_block(&*s, hash(i), &block(i, 0, BLOCK));
                        continue;
                    };
                    let mut out = vec![0u8; BLOCK];
                    let mut at = 0;
                    while at < BLOCK {
                        let end = (at + 512).min(BLOCK);
                        at += hit.read_chunk(&mut out[at..end]).unwrap();
                        std::thread::yield_now(); // let the writer run mid-stream
                    }
                    assert!(
                        out == block(i, 0, BLOCK),
                        "block {i} changed under its reader"
                    );
                    whole += 1;
                }
                whole
            })
        })
        .collect();
    let whole: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(whole > 0 && written > 0, "reads {whole}, writes {written}");
    assert!(s.arena().stats().evictions > 0, "the writer never evicted");
}

/// The fault wrapper passes the manifest suite when idle (durable: it wraps G3's manifests).
#[test]
fn faulty_manifests_conform_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    manifest_suite(
        &mut || {
            let inner = Arc::new(DiskManifests::open(&path).unwrap());
            Arc::new(FaultyManifests::new(inner)) as Arc<dyn ManifestStore>
        },
        Durability::Durable,
    );
}

/// One switch fails a durable tier's blocks and its manifests together; a corrupting fault
/// flips manifest values on read only (the stored value is intact once the fault is gone);
/// every injected fault is counted.
#[test]
fn a_faulty_tier_fails_its_manifests_too() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), DiskConfig::new("faulty", BLOCK, 64)).unwrap();
    let faulty = FaultyStorage::new(Arc::new(DiskStorage::new(Arc::new(tier))));
    let manifests =
        faulty.wrap_manifests(Arc::new(DiskManifests::open(dir.path().join("m")).unwrap()));
    let v = manifests.put_new(b"k", b"value", None).unwrap();
    put_block(&faulty, hash(1), &block(1, 0, BLOCK)).unwrap();
    faulty.set(Fault::Fail);
    assert!(matches!(manifests.get(b"k"), Err(StorageError::Backend(_))));
    assert!(matches!(
        manifests.cas_update(b"k", v, b"new"),
        Err(StorageError::Backend(_))
    ));
    assert!(matches!(
        manifests.delete(b"k", None),
        Err(StorageError::Backend(_))
    ));
    assert!(faulty.lookup(hash(1)).is_err());
    assert_eq!(faulty.injected(), 4);
    faulty.set(Fault::Corrupt);
    let got = manifests.get(b"k").unwrap().unwrap();
    assert_ne!(got.value, b"value");
    assert_eq!(got.version, v);
    faulty.set(Fault::None);
    assert_eq!(manifests.get(b"k").unwrap().unwrap().value, b"value");
    assert_eq!(manifests.injected(), 5);
}
