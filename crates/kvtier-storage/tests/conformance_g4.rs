//! The shared conformance suite (`conformance_support`) run for G4 behind the tier interface
//! ([`RemoteStorage`]): in memory, on a local directory (durable: reopened for the restart
//! case) and on a real redis-server on loopback (durable while the server runs); and the
//! manifest suite for G4's compare-and-swap manifests through [`ManifestStore`] on the same
//! three backends.

#[path = "conformance_support/mod.rs"]
mod conformance_support;
mod redis_support;

use std::sync::Arc;

use conformance_support::{Durability, block, hash, manifest_suite, storage_suite};
use kvtier_storage::remote::{G4Store, Namespace};
use kvtier_storage::tier::remote::RemoteStorage;
use kvtier_storage::tier::{BatchRead, ManifestStore, Storage, StorageError, get_block, put_block};
use redis_support::{RedisServer, skip_redis_tests};

const BLOCK: usize = 4096;

fn ns() -> Namespace {
    Namespace::new("conformance", "xxh3-v1/bs16", BLOCK).expect("namespace")
}

fn tier(store: G4Store) -> Arc<dyn Storage> {
    Arc::new(RemoteStorage::new(Arc::new(store)))
}

#[test]
fn g4_memory_conforms() {
    storage_suite(
        &mut || tier(G4Store::builder(ns()).memory().build().unwrap()),
        Durability::Volatile,
    );
}

#[test]
fn g4_local_dir_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    storage_suite(
        &mut || tier(G4Store::builder(ns()).local_dir(&path).build().unwrap()),
        Durability::Durable,
    );
}

#[test]
fn g4_redis_conforms() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    storage_suite(
        &mut || tier(G4Store::builder(ns()).redis(url.clone()).build().unwrap()),
        Durability::Durable,
    );
}

fn manifests(store: G4Store) -> Arc<dyn ManifestStore> {
    Arc::new(RemoteStorage::new(Arc::new(store)))
}

#[test]
fn g4_memory_manifests_conform() {
    manifest_suite(
        &mut || manifests(G4Store::builder(ns()).memory().build().unwrap()),
        Durability::Volatile,
    );
}

#[test]
fn g4_local_dir_manifests_conform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    manifest_suite(
        &mut || manifests(G4Store::builder(ns()).local_dir(&path).build().unwrap()),
        Durability::Durable,
    );
}

#[test]
fn g4_redis_manifests_conform() {
    if skip_redis_tests() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    manifest_suite(
        &mut || manifests(G4Store::builder(ns()).redis(url.clone()).build().unwrap()),
        Durability::Durable,
    );
}

/// Manifest keys G4 cannot name are refused with an error value, not a panic.
#[test]
fn g4_manifest_keys_out_of_range_are_errors() {
    let m = manifests(G4Store::builder(ns()).memory().build().unwrap());
    for key in [&b""[..], &[7u8; 101][..]] {
        assert!(matches!(
            m.put_new(key, b"v", None),
            Err(StorageError::InvalidKey(_))
        ));
        assert!(matches!(m.get(key), Err(StorageError::InvalidKey(_))));
    }
    // Any bytes up to the limit are fine, binary included.
    let v = m.put_new(&[0xff, 0, b'/', 1], b"v", None).unwrap();
    assert_eq!(m.get(&[0xff, 0, b'/', 1]).unwrap().unwrap().version, v);
    assert!(m.put_new(&[7u8; 100], b"v", None).is_ok());
}

/// A tampered object is refused (never served), reported as corrupt, and dropped from G4, in
/// a lookup and in a batch.
#[test]
fn g4_corrupt_objects_are_refused_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        G4Store::builder(ns())
            .local_dir(dir.path())
            .build()
            .unwrap(),
    );
    let s = RemoteStorage::new(Arc::clone(&store));
    for i in [1, 2] {
        put_block(&s, hash(i), &block(i, 0, BLOCK)).unwrap();
        let path = dir.path().join(store.block_key(hash(i)));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(matches!(
        s.lookup(hash(1)),
        Err(StorageError::Corrupt { hash: h }) if h == hash(1)
    ));
    assert!(!s.contains(hash(1)), "a corrupt copy stayed in G4");
    let mut out = vec![0u8; 2 * BLOCK];
    let reads = s.get_batch(&[hash(2), hash(3)], BLOCK, &mut out).unwrap();
    assert_eq!(reads, [BatchRead::Corrupt, BatchRead::Miss]);
    assert!(!s.contains(hash(2)), "a corrupt copy stayed in G4");
    assert_eq!(store.stats().corrupt, 2);
    // A good block next to them is still served.
    put_block(&s, hash(4), &block(4, 0, BLOCK)).unwrap();
    assert_eq!(get_block(&s, hash(4)).unwrap(), Some(block(4, 0, BLOCK)));
}
