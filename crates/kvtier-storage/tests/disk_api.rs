//! Public behaviour of the G3 disk tier: the operations, their errors, restart, eviction,
//! settings checks, and readers racing an evicting writer.

mod disk_support;

use disk_support::{block, hash, version_of};
use kvtier_storage::disk::{BlockRead, DiskConfig, DiskError, DiskTier};

const BLOCK: usize = 4096;

fn config(capacity: u64) -> DiskConfig {
    DiskConfig::new("test-model/xxh3/fp16-l2-b16", BLOCK, capacity).with_slots_per_file(16)
}

fn read(tier: &DiskTier, i: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK];
    tier.get(hash(i), &mut buf).unwrap().then_some(buf)
}

#[test]
fn put_get_overwrite_delete_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(64)).unwrap();
    assert!(tier.is_empty());
    assert_eq!(read(&tier, 1), None);
    tier.put(hash(1), &block(1, 0, BLOCK)).unwrap();
    assert!(tier.contains(hash(1)));
    assert_eq!(read(&tier, 1), Some(block(1, 0, BLOCK)));
    tier.put(hash(1), &block(1, 1, BLOCK)).unwrap();
    assert_eq!(tier.len(), 1);
    assert_eq!(read(&tier, 1), Some(block(1, 1, BLOCK)));
    assert!(tier.delete(hash(1)).unwrap());
    assert!(!tier.delete(hash(1)).unwrap());
    assert!(!tier.contains(hash(1)));
    assert_eq!(read(&tier, 1), None);
    let stats = tier.stats();
    assert_eq!((stats.puts, stats.put_batches, stats.deletes), (2, 2, 1));
    assert_eq!((stats.gets, stats.hits, stats.misses), (4, 2, 2));
    assert_eq!(stats.bytes_written, 2 * BLOCK as u64);
    assert_eq!(stats.bytes_read, 2 * BLOCK as u64);
    assert_eq!((stats.corrupt, stats.errors, stats.evictions), (0, 0, 0));
}

#[test]
fn wrong_sizes_are_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(4)).unwrap();
    let err = tier.put(hash(1), &[0u8; BLOCK - 1]).unwrap_err();
    assert!(matches!(err, DiskError::WrongSize { expected: BLOCK, got } if got == BLOCK - 1));
    let good = block(2, 0, BLOCK);
    let err = tier
        .put_batch(&[(hash(2), &good), (hash(3), &[1u8; 10])])
        .unwrap_err();
    assert!(matches!(err, DiskError::WrongSize { .. }));
    assert!(tier.is_empty(), "a batch with one bad block writes nothing");
    let mut small = vec![0u8; BLOCK + 1];
    assert!(matches!(
        tier.get(hash(2), &mut small),
        Err(DiskError::WrongSize { .. })
    ));
    let mut out = vec![0u8; BLOCK];
    assert!(matches!(
        tier.get_batch(&[hash(1), hash(2)], &mut out),
        Err(DiskError::WrongSize { .. })
    ));
    let blocks: Vec<Vec<u8>> = (0..5).map(|i| block(i, 0, BLOCK)).collect();
    let batch: Vec<_> = (0..5)
        .map(|i| (hash(i), blocks[i as usize].as_slice()))
        .collect();
    assert!(matches!(
        tier.put_batch(&batch),
        Err(DiskError::BatchTooLarge {
            blocks: 5,
            capacity: 4
        })
    ));
    assert!(tier.is_empty());
}

#[test]
fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        DiskConfig::new("", BLOCK, 4),
        DiskConfig::new("ns", 0, 4),
        DiskConfig::new("ns", BLOCK, 0),
        DiskConfig::new("ns", BLOCK, 4).with_slots_per_file(0),
        DiskConfig::new("x".repeat(2000), BLOCK, 4),
    ] {
        assert!(matches!(
            DiskTier::open(dir.path(), bad),
            Err(DiskError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn another_namespace_block_size_or_file_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(DiskTier::open(dir.path(), config(64)).unwrap());
    let other_ns = DiskConfig::new("other-model/xxh3/fp16", BLOCK, 64).with_slots_per_file(16);
    let err = DiskTier::open(dir.path(), other_ns).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::ConfigMismatch {
                field: "namespace",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("other-model"), "{err}");
    let other_size =
        DiskConfig::new("test-model/xxh3/fp16-l2-b16", 2 * BLOCK, 64).with_slots_per_file(16);
    let err = DiskTier::open(dir.path(), other_size).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::ConfigMismatch {
                field: "block_bytes",
                ..
            }
        ),
        "{err}"
    );
    let err = DiskTier::open(dir.path(), config(64).with_slots_per_file(8)).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::ConfigMismatch {
                field: "slots_per_file",
                ..
            }
        ),
        "{err}"
    );
    let err = DiskTier::open(dir.path(), config(32)).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::ConfigMismatch {
                field: "capacity_blocks",
                ..
            }
        ),
        "{err}"
    );
    // Growing the capacity is allowed, and the original settings still open it.
    drop(DiskTier::open(dir.path(), config(128)).unwrap());
    assert_eq!(
        DiskTier::open(dir.path(), config(128)).unwrap().capacity(),
        128
    );
}

#[test]
fn blocks_survive_a_restart_with_their_eviction_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(dir.path(), config(40)).unwrap();
        let blocks: Vec<Vec<u8>> = (0..40).map(|i| block(i, 0, BLOCK)).collect();
        for chunk in blocks.chunks(8).enumerate() {
            let batch: Vec<_> = chunk
                .1
                .iter()
                .enumerate()
                .map(|(j, b)| (hash((chunk.0 * 8 + j) as u64), b.as_slice()))
                .collect();
            tier.put_batch(&batch).unwrap();
        }
        assert_eq!(tier.stats().put_batches, 5);
        // 40 blocks in 16-slot files: three files.
        assert!(dir.path().join("data-00002.bin").exists());
        assert!(!dir.path().join("data-00003.bin").exists());
    }
    let tier = DiskTier::open(dir.path(), config(40)).unwrap();
    assert_eq!(tier.len(), 40);
    for i in 0..40 {
        assert_eq!(read(&tier, i), Some(block(i, 0, BLOCK)), "block {i}");
    }
    // Full: the next writes evict the oldest (FIFO by write order, across the restart).
    tier.put(hash(100), &block(100, 0, BLOCK)).unwrap();
    tier.put(hash(101), &block(101, 0, BLOCK)).unwrap();
    assert_eq!(tier.len(), 40);
    assert!(!tier.contains(hash(0)) && !tier.contains(hash(1)));
    assert!(tier.contains(hash(2)) && tier.contains(hash(100)));
    assert_eq!(tier.stats().evictions, 2);
    assert_eq!(read(&tier, 101), Some(block(101, 0, BLOCK)));
}

#[test]
fn get_batch_reads_runs_and_reports_each_block() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(64)).unwrap();
    let blocks: Vec<Vec<u8>> = (0..20).map(|i| block(i, 0, BLOCK)).collect();
    let batch: Vec<_> = (0..20)
        .map(|i| (hash(i), blocks[i as usize].as_slice()))
        .collect();
    tier.put_batch(&batch).unwrap();
    // Out of order, across a file boundary (slot 15 | 16), with a miss and a repeat.
    let ask = [14, 15, 16, 17, 999, 3, 2, 3];
    let hashes: Vec<_> = ask.iter().map(|&i| hash(i)).collect();
    let mut out = vec![0u8; ask.len() * BLOCK];
    let found = tier.get_batch(&hashes, &mut out).unwrap();
    for (k, &i) in ask.iter().enumerate() {
        if i == 999 {
            assert_eq!(found[k], BlockRead::Miss);
        } else {
            assert_eq!(found[k], BlockRead::Hit);
            assert_eq!(&out[k * BLOCK..(k + 1) * BLOCK], &blocks[i as usize][..]);
        }
    }
    let stats = tier.stats();
    assert_eq!((stats.gets, stats.hits, stats.misses), (8, 7, 1));
}

#[test]
fn a_batch_keeps_the_last_bytes_of_a_repeated_hash() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(4)).unwrap();
    let (a, b) = (block(1, 0, BLOCK), block(1, 1, BLOCK));
    let filler: Vec<Vec<u8>> = (2..6).map(|i| block(i, 0, BLOCK)).collect();
    // Five entries, four distinct hashes: fits a capacity of four.
    let mut batch = vec![(hash(1), a.as_slice())];
    batch.extend((2..5).map(|i| (hash(i), filler[i as usize - 2].as_slice())));
    batch.push((hash(1), b.as_slice()));
    tier.put_batch(&batch).unwrap();
    assert_eq!(tier.len(), 4);
    assert_eq!(read(&tier, 1), Some(b));
}

#[test]
fn readers_never_see_torn_or_foreign_bytes_while_a_writer_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(8)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (tier, stop) = (&tier, &stop);
                scope.spawn(move || {
                    let (mut hits, mut buf) = (0u64, vec![0u8; BLOCK]);
                    let mut k = r;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        k = (k + 1) % 12;
                        match tier.get(hash(k), &mut buf) {
                            Ok(true) => {
                                assert!(version_of(k, &buf).is_some(), "block {k} torn");
                                hits += 1;
                            }
                            Ok(false) => {}
                            Err(e) => panic!("reader saw {e}"),
                        }
                    }
                    hits
                })
            })
            .collect();
        for version in 0..40u64 {
            let blocks: Vec<Vec<u8>> = (0..3)
                .map(|j| block((version * 3 + j) % 12, version, BLOCK))
                .collect();
            let batch: Vec<_> = (0..3)
                .map(|j| (hash((version * 3 + j) % 12), blocks[j as usize].as_slice()))
                .collect();
            tier.put_batch(&batch).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(hits > 0, "the readers found nothing to read");
    });
    assert_eq!(tier.stats().corrupt, 0);
    assert_eq!(tier.len(), 8);
}

#[test]
fn a_large_index_reloads_every_record_across_the_parallel_scan_ranges() {
    use kvtier_core::SequenceHash;
    let dir = tempfile::tempdir().unwrap();
    let config = DiskConfig::new("test-model/many", 16, 70_100);
    // Keys spread over the whole 128-bit space, plus the edges of the scan ranges for up to
    // eight threads.
    let mut keys: Vec<u128> = (0..70_000u128)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
        .collect();
    for threads in 1..=8u128 {
        let step = u128::MAX / threads;
        keys.extend([step - 1, step, step.saturating_add(1)]);
    }
    keys.extend([0, u128::MAX]);
    keys.sort_unstable();
    keys.dedup();
    let payload = |key: u128| key.to_le_bytes();
    {
        let tier = DiskTier::open(dir.path(), config.clone()).unwrap();
        let bytes: Vec<[u8; 16]> = keys.iter().map(|&k| payload(k)).collect();
        let batch: Vec<_> = keys
            .iter()
            .zip(&bytes)
            .map(|(&k, b)| (SequenceHash::from_u128(k), b.as_slice()))
            .collect();
        tier.put_batch(&batch).unwrap();
    }
    let tier = DiskTier::open(dir.path(), config).unwrap();
    assert_eq!(tier.len(), keys.len());
    let mut buf = [0u8; 16];
    for &k in keys
        .iter()
        .step_by(97)
        .chain([0, u128::MAX, u128::MAX / 2].iter())
    {
        assert!(
            tier.get(SequenceHash::from_u128(k), &mut buf).unwrap(),
            "key {k:#x}"
        );
        assert_eq!(buf, payload(k));
    }
}

#[test]
fn a_second_handle_on_an_open_tier_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(8)).unwrap();
    // Two writers would hand out the same slots: the index lock refuses the second.
    let err = DiskTier::open(dir.path(), config(8)).unwrap_err();
    assert!(matches!(err, DiskError::Index(_)), "{err}");
    tier.put(hash(1), &block(1, 0, BLOCK)).unwrap();
    drop(tier);
    assert!(
        DiskTier::open(dir.path(), config(8))
            .unwrap()
            .contains(hash(1))
    );
}

/// Records what a listener is told.
#[derive(Debug, Default)]
struct Recorder {
    stored: parking_lot::Mutex<Vec<kvtier_core::SequenceHash>>,
    removed: parking_lot::Mutex<Vec<kvtier_core::SequenceHash>>,
}

impl kvtier_storage::disk::DiskListener for Recorder {
    fn stored(&self, hashes: &[kvtier_core::SequenceHash]) {
        self.stored.lock().extend_from_slice(hashes);
    }
    fn removed(&self, hashes: &[kvtier_core::SequenceHash]) {
        self.removed.lock().extend_from_slice(hashes);
    }
}

#[test]
fn a_listener_hears_stores_evictions_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), config(4)).unwrap();
    tier.put(hash(100), &block(100, 0, BLOCK)).unwrap();
    let rec = std::sync::Arc::new(Recorder::default());
    assert!(tier.set_listener(rec.clone()));
    assert!(
        !tier.set_listener(std::sync::Arc::new(Recorder::default())),
        "one listener"
    );
    // What was there before the listener: listed.
    assert_eq!(tier.hashes(), vec![hash(100)]);

    let batch: Vec<(kvtier_core::SequenceHash, Vec<u8>)> =
        (1..=3).map(|i| (hash(i), block(i, 0, BLOCK))).collect();
    let refs: Vec<_> = batch.iter().map(|(h, b)| (*h, &b[..])).collect();
    tier.put_batch(&refs).unwrap();
    assert_eq!(*rec.stored.lock(), vec![hash(1), hash(2), hash(3)]);
    assert!(rec.removed.lock().is_empty());

    // Full: two more evict the two oldest (100, then 1).
    tier.put_batch(&[
        (hash(4), &block(4, 0, BLOCK)),
        (hash(5), &block(5, 0, BLOCK)),
    ])
    .unwrap();
    assert_eq!(*rec.removed.lock(), vec![hash(100), hash(1)]);
    assert_eq!(rec.stored.lock().len(), 5);

    assert!(tier.delete(hash(4)).unwrap());
    assert!(
        !tier.delete(hash(4)).unwrap(),
        "a second delete tells nothing"
    );
    assert_eq!(*rec.removed.lock(), vec![hash(100), hash(1), hash(4)]);
    let mut held = tier.hashes();
    held.sort();
    let mut want = vec![hash(2), hash(3), hash(5)];
    want.sort();
    assert_eq!(held, want);
}
