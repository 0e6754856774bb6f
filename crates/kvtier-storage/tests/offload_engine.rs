//! The offload engine end to end: a real G2 `BlockManager` + `HostArena`, a `DiskTier` (G3) in a
//! temporary directory, and the write policies moving real bytes between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::offload::{
    ArenaSink, OffloadObserver, OffloadQueue, OffloadSink, PendingWriteThrough, WriteBack,
    WriteGate, WritePolicy,
};
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tier::{
    BlockMeta, HitHandler, MissHandler, Storage, StorageError, get_block, put_block,
};
use kvtier_storage::tiered::{TierConfig, TieredStore};

const BLOCK: usize = 4096;

/// The bytes block `hash` holds in every test: derived from the hash, so any copy can be checked.
fn pattern(hash: SequenceHash) -> Vec<u8> {
    let seed = hash.as_u128().to_le_bytes();
    (0..BLOCK).map(|i| seed[i % 16] ^ (i / 16) as u8).collect()
}

fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut h = SequenceHash::root(seed);
    let mut out = vec![h];
    for i in 1..n {
        h = SequenceHash::child_of(h, i as u64);
        out.push(h);
    }
    out
}

fn disk(dir: &std::path::Path) -> Arc<DiskStorage> {
    let tier = DiskTier::open(dir, DiskConfig::new("offload-test", BLOCK, 4096)).unwrap();
    Arc::new(DiskStorage::new(Arc::new(tier)))
}

/// Writes each block's pattern into G2, registers them and releases them (inactive).
fn fill(arena: &HostArena<G2>, hashes: &[SequenceHash]) {
    let m = arena.manager();
    let mut blocks = m.allocate_blocks(hashes.len()).unwrap();
    let mut staged = Vec::new();
    for (b, &h) in blocks.iter_mut().zip(hashes) {
        arena.write_from(b, &pattern(h)).unwrap();
    }
    for (b, &h) in blocks.into_iter().zip(hashes) {
        staged.push(b.stage(h, m.block_size()).unwrap());
    }
    drop(m.register_blocks(staged).unwrap());
}

/// Waits (bounded) until `done` holds; a liveness deadline, not a timing assertion.
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "offload did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A G2 of `blocks` slots with `hook` installed as its eviction hook.
fn g2_with_write_back(blocks: usize, wb: &Arc<WriteBack>) -> Arc<HostArena<G2>> {
    let m = BlockManager::<G2>::builder()
        .with_block_count(blocks)
        .with_eviction_hook(wb.clone())
        .build()
        .unwrap();
    let arena = Arc::new(HostArena::new(&m, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap());
    assert!(wb.attach(&arena));
    arena
}

#[test]
fn write_back_puts_evicted_blocks_in_g3_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let wb = WriteBack::new(g3.clone(), BLOCK, 16, 16).unwrap();
    let arena = g2_with_write_back(8, &wb);
    let old = chain(1, 8);
    fill(&arena, &old);
    assert_eq!(wb.stats().staged, 0, "nothing evicted yet");
    // Every old block is evicted to make room; their slots get new bytes right away.
    fill(&arena, &chain(2, 8));
    wb.close();
    let s = wb.stats();
    assert_eq!((s.staged, s.written, s.skipped, s.failed), (8, 8, 0, 0));
    for h in old {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
}

#[test]
fn write_back_on_reset_inactive_pool_too() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let wb = WriteBack::new(g3.clone(), BLOCK, 16, 16).unwrap();
    let arena = g2_with_write_back(8, &wb);
    let hashes = chain(3, 5);
    fill(&arena, &hashes);
    assert_eq!(arena.manager().reset_inactive_pool().unwrap().len(), 5);
    wb.close();
    for h in hashes {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
}

/// G2 with an `OffloadObserver` whose queue drains into an `ArenaSink` writing to `g3`.
fn g2_with_write_through(
    policy: WritePolicy,
    g3: Arc<dyn Storage>,
) -> (Arc<HostArena<G2>>, Arc<OffloadObserver>, Arc<ArenaSink>) {
    let sink = Arc::new(ArenaSink::new(g3));
    let observer = Arc::new(OffloadObserver::new(
        WriteGate::new(policy, 64).unwrap(),
        OffloadQueue::new(64, sink.clone()).unwrap(),
    ));
    let m = BlockManager::<G2>::builder()
        .with_block_count(16)
        .with_observer(observer.clone())
        .build()
        .unwrap();
    let arena = Arc::new(HostArena::new(&m, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap());
    assert!(sink.attach(&arena));
    (arena, observer, sink)
}

#[test]
fn write_through_copies_registered_blocks_to_g3() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let (arena, observer, sink) = g2_with_write_through(WritePolicy::WriteThrough, g3.clone());
    let hashes = chain(4, 6);
    fill(&arena, &hashes);
    wait_for(|| observer.stats().pending() == 0);
    assert_eq!(sink.stats().written, 6);
    for &h in &hashes {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
    // Still in G2 too (write-through copies, it does not move).
    assert_eq!(arena.manager().match_blocks(&hashes).len(), 6);
}

#[test]
fn write_through_skips_blocks_already_below_and_writes_the_rest_as_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let (arena, observer, sink) = g2_with_write_through(WritePolicy::WriteThrough, g3.clone());
    let hashes = chain(6, 5);
    // Two blocks reached G3 first (a durable PUT writes them there before G2).
    g3.put_batch(&[
        (hashes[0], &pattern(hashes[0])),
        (hashes[3], &pattern(hashes[3])),
    ])
    .unwrap();
    fill(&arena, &hashes);
    wait_for(|| observer.stats().pending() == 0);
    let stats = sink.stats();
    assert_eq!((stats.written, stats.present, stats.failed), (3, 2, 0));
    assert_eq!(stats.bytes, 3 * BLOCK as u64);
    for &h in &hashes {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
}

#[test]
fn selective_write_through_copies_only_after_k_hits() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let policy = WritePolicy::WriteThroughSelective { hits: 2 };
    let (arena, observer, sink) = g2_with_write_through(policy, g3.clone());
    let hashes = chain(5, 3);
    fill(&arena, &hashes);
    observer.record_hits(&hashes);
    wait_for(|| observer.stats().pending() == 0);
    assert_eq!(sink.stats().written, 0, "one hit is below the threshold");
    assert!(hashes.iter().all(|&h| !g3.contains(h)));
    observer.record_hits(&hashes[..2]);
    wait_for(|| observer.stats().pending() == 0);
    assert_eq!(sink.stats().written, 2);
    for &h in &hashes[..2] {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
    assert!(!g3.contains(hashes[2]));
}

/// A write-through sink whose worker waits for a message before each batch (or for the channel
/// to close), so blocks stay queued while G2 evicts them.
struct LateSink {
    inner: Arc<ArenaSink>,
    gate: Mutex<Receiver<()>>,
}

impl OffloadSink for LateSink {
    fn offload(
        &self,
        batch: &[SequenceHash],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = self.gate.lock().unwrap().recv();
        self.inner.offload(batch)
    }
}

/// Write-through with [`PendingWriteThrough`] as its safety net: G2 evicts blocks whose copy
/// the offload queue has not made yet, and they reach G3 anyway, byte for byte; blocks the gate
/// did not choose (selective policy, too few hits) are not copied.
#[test]
fn write_through_copies_blocks_evicted_before_their_turn() {
    for policy in [
        WritePolicy::WriteThrough,
        WritePolicy::WriteThroughSelective { hits: 1 },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let g3 = disk(dir.path());
        let sink = Arc::new(ArenaSink::new(g3.clone()));
        let (open, gate) = channel();
        let late = Arc::new(LateSink {
            inner: sink.clone(),
            gate: Mutex::new(gate),
        });
        let observer = Arc::new(OffloadObserver::new(
            WriteGate::new(policy, 64).unwrap(),
            OffloadQueue::new(64, late).unwrap(),
        ));
        let filter = Arc::new(PendingWriteThrough::new(observer.clone(), g3.clone()));
        let rescue = WriteBack::selective(g3.clone(), BLOCK, 16, 16, filter).unwrap();
        let m = BlockManager::<G2>::builder()
            .with_block_count(8)
            .with_observer(observer.clone())
            .with_eviction_hook(rescue.clone())
            .build()
            .unwrap();
        let arena = Arc::new(HostArena::new(&m, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap());
        assert!(sink.attach(&arena));
        assert!(rescue.attach(&arena));

        let old = chain(11, 8);
        fill(&arena, &old);
        // Under the selective policy only the first half is hit (chosen for G3).
        let chosen = if policy == WritePolicy::WriteThrough {
            8
        } else {
            observer.record_hits(&old[..4]);
            4
        };
        // Every old block is evicted while the queue's worker waits at its first batch.
        fill(&arena, &chain(12, 8));
        assert_eq!(rescue.stats().staged, chosen, "{policy}");
        drop(open);
        wait_for(|| observer.stats().pending() == 0 && rescue.pending() == 0);
        for (k, &h) in old.iter().enumerate() {
            let want = (k < chosen as usize).then(|| pattern(h));
            assert_eq!(
                get_block(g3.as_ref(), h).unwrap(),
                want,
                "{policy} block {k}"
            );
        }
        let s = sink.stats();
        assert_eq!(s.gone, observer.stats().offloaded - s.written - s.present);
        drop(m);
    }
}

#[test]
fn onboarding_brings_a_g3_only_prefix_into_g2_and_registers_it() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let m = BlockManager::<G2>::builder()
        .with_block_count(16)
        .build()
        .unwrap();
    let arena = Arc::new(HostArena::new(&m, BlockLayout::from_bytes(BLOCK).unwrap()).unwrap());
    let hashes = chain(6, 5);
    for &h in &hashes {
        put_block(g3.as_ref(), h, &pattern(h)).unwrap();
    }
    let store = TieredStore::builder()
        .host(HostStorage::new(arena.clone()), TierConfig::default())
        .tier(g3, TierConfig::default())
        .build();
    assert_eq!(store.locate_prefix(&hashes).tiers, vec![1; 5]);
    let onboarded = store.fetch_prefix_into_host(&hashes).unwrap();
    assert_eq!(onboarded.sources, vec![1; 5]);
    for (b, &h) in onboarded.blocks.iter().zip(&hashes) {
        assert_eq!(arena.block(b).unwrap(), &pattern(h)[..]);
    }
    drop(onboarded);
    let hit = m.match_blocks(&hashes);
    assert_eq!(hit.len(), 5, "registered in G2: a later match hits");
    for (b, &h) in hit.iter().zip(&hashes) {
        assert_eq!(arena.block(b).unwrap(), &pattern(h)[..]);
    }
}

/// A lower tier whose writes wait for a message (to fill the write-back pipeline).
struct Blocking {
    inner: Arc<DiskStorage>,
    gate: Mutex<Receiver<()>>,
}

impl Storage for Blocking {
    fn name(&self) -> &str {
        "blocking"
    }
    fn block_bytes(&self) -> Option<usize> {
        self.inner.block_bytes()
    }
    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        self.inner.lookup(hash)
    }
    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        // A closed channel lets every later write through.
        let _ = self.gate.lock().unwrap().recv();
        self.inner.get_miss_handler(hash, len)
    }
    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        self.inner.purge(hash)
    }
    fn update_meta(&self, hash: SequenceHash, meta: BlockMeta) -> Result<bool, StorageError> {
        self.inner.update_meta(hash, meta)
    }
    fn contains(&self, hash: SequenceHash) -> bool {
        self.inner.contains(hash)
    }
}

/// A disk tier in `dir`, the same behind a [`Blocking`] gate, and the gate's sender.
fn blocking_disk(dir: &std::path::Path) -> (Arc<DiskStorage>, Arc<Blocking>, Sender<()>) {
    let g3 = disk(dir);
    let (open, gate) = channel();
    let lower = Arc::new(Blocking {
        inner: g3.clone(),
        gate: Mutex::new(gate),
    });
    (g3, lower, open)
}

#[test]
fn a_full_staging_pool_skips_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (_g3, lower, open) = blocking_disk(dir.path());
    // Two staging buffers, one queued batch.
    let wb = WriteBack::new(lower, BLOCK, 2, 1).unwrap();
    let arena = g2_with_write_back(8, &wb);
    fill(&arena, &chain(7, 8));
    // Evicts 8 with the worker stuck on its first write: 2 staged, 6 skipped; returns anyway.
    fill(&arena, &chain(8, 8));
    let s = wb.stats();
    assert_eq!((s.staged, s.skipped), (2, 6));
    // Pool empty (both buffers with the stuck worker): every further victim is skipped.
    fill(&arena, &chain(9, 4));
    assert_eq!(wb.stats().skipped, 10);
    drop(open);
    wb.close();
    let s = wb.stats();
    assert_eq!((s.written, s.failed), (2, 0));
    assert_eq!(s.staged + s.skipped, 12);
}

/// With a wait set, an eviction that finds the staging pool empty waits for the worker to
/// give buffers back instead of skipping: a slow lower tier slows the evicting caller down and
/// loses nothing.
#[test]
fn with_a_wait_a_slow_lower_tier_slows_evictions_instead_of_losing_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (g3, lower, open) = blocking_disk(dir.path());
    let wb = WriteBack::new(lower, BLOCK, 2, 2).unwrap();
    wb.set_max_wait(Duration::from_secs(30));
    let arena = g2_with_write_back(8, &wb);
    let old = chain(13, 8);
    fill(&arena, &old);
    let evictor = {
        let arena = arena.clone();
        std::thread::spawn(move || fill(&arena, &chain(14, 8)))
    };
    // The evictor waits for buffers while the worker is stuck on its first write.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !evictor.is_finished(),
        "the eviction waits for staging buffers"
    );
    for _ in 0..8 {
        open.send(()).unwrap();
    }
    evictor.join().unwrap();
    drop(open);
    wb.close();
    let s = wb.stats();
    assert_eq!((s.staged, s.skipped, s.written, s.failed), (8, 0, 8, 0));
    for h in old {
        assert_eq!(get_block(g3.as_ref(), h).unwrap(), Some(pattern(h)));
    }
}

#[test]
fn a_held_block_never_changes_under_its_reader_while_a_writer_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = disk(dir.path());
    let wb = WriteBack::new(g3.clone(), BLOCK, 64, 64).unwrap();
    let arena = g2_with_write_back(32, &wb);
    let hot = chain(10, 4);
    fill(&arena, &hot);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let arena = arena.clone();
            let hot = hot.clone();
            let stop = stop.clone();
            // Held for the whole run: the writer's evictions must never take these slots.
            let held = arena.manager().match_blocks(&hot);
            assert_eq!(held.len(), hot.len());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (b, &h) in held.iter().zip(&hot) {
                        assert_eq!(arena.block(b).unwrap(), &pattern(h)[..]);
                        checks += 1;
                    }
                    std::thread::yield_now();
                }
                checks
            })
        })
        .collect();
    // The writer churns through the 28 other slots: every allocation evicts.
    let mut churned = Vec::new();
    for round in 0..200u64 {
        let hashes = chain(1000 + round, 7);
        fill(&arena, &hashes);
        churned.extend(hashes);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    wb.close();
    let s = wb.stats();
    assert_eq!(s.failed, 0);
    assert!(s.written > 0);
    // Every victim that reached G3 has exactly its bytes; the hot blocks were never evicted.
    let mut found = 0;
    for &h in &churned {
        if let Some(bytes) = get_block(g3.as_ref(), h).unwrap() {
            assert_eq!(bytes, pattern(h));
            found += 1;
        }
    }
    assert_eq!(found, s.written);
    assert!(hot.iter().all(|&h| !g3.contains(h)));
}
