//! [`BlockStore`]: the tiers a node serves blocks from, and every operation the binary
//! protocol needs on them, already in storage terms (scoped hashes, tier numbers).
//!
//! ```text
//!   PUT ──► G2: host arena (BlockManager<G2> + HostArena) ──write policy──► G3: DiskTier
//!            │   registered blocks: events (EventEmitter ► Publisher) for SUBSCRIBE
//!   durable PUT ─────────────── first ──────────────────────────────────► G3 (synced)
//!   GET ◄── G2 slot bytes (SlotBytes guard, no copy) │ miss: G3 read, promoted into G2
//! ```
//!
//! - **PUT.** A block is written into a free (or evicted) G2 slot and registered; the write
//!   policy then copies it to disk in the background, batched (one sync per batch). A durable
//!   PUT is written to disk and synced first, so once acknowledged it survives `kill -9`; the
//!   background copy then skips it. A block G2 already holds is `AlreadyPresent` (a sequence
//!   hash names its content).
//! - **GET.** G2 hits are returned as [`SlotBytes`]: the reply is written from the arena and
//!   the slot stays unevictable until it is on the socket. Misses are read from disk
//!   (checksummed) and promoted into G2 through the [`TieredStore`].
//! - **MATCH / EXISTS** probe the in-memory indexes of both tiers; no bytes are read.
//! - **Drain** (graceful shutdown): waits for the background copies, flushes events and the
//!   disk index.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_events::{EventEmitter, InstanceId, Publisher, ReplaySource};
use kvtier_proto::{PutStatus, TierId, TierSet};
use kvtier_storage::arena::{HostArena, SlotBytes};
use kvtier_storage::disk::{DiskConfig, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::offload::{
    ArenaSink, OffloadObserver, OffloadQueue, PendingWriteThrough, WriteBack, WriteGate,
    WritePolicy,
};
use kvtier_storage::tier::Storage;
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tiered::{Promotion, TierConfig, TieredStore};

use crate::NodeError;
use crate::counters::StoreCounters;

/// Staging buffers of the write-back stage (and of write-through's copy on eviction): 16 MiB
/// worth, at least 64 and at most 4096 blocks. Allocated zeroed, so pages never used stay
/// unbacked.
fn staging_blocks(block_bytes: usize) -> usize {
    ((16 << 20) / block_bytes.max(1)).clamp(64, 4096)
}

/// Settings of a [`BlockStore`] (from the node's configuration).
#[derive(Clone, Debug)]
pub(crate) struct StoreSettings {
    pub block_bytes: usize,
    pub host_bytes: u64,
    pub disk_bytes: u64,
    pub write_policy: WritePolicy,
    pub offload_queue: usize,
    pub offload_wait: Duration,
    pub event_replay: usize,
    pub instance: InstanceId,
}

/// The tiers, their write path, and the event stream.
pub(crate) struct BlockStore {
    block_bytes: usize,
    manager: BlockManager<G2>,
    arena: Arc<HostArena<G2>>,
    disk: Option<Arc<DiskTier>>,
    tiered: TieredStore,
    observer: Option<Arc<OffloadObserver>>,
    sink: Option<Arc<ArenaSink>>,
    writeback: Option<Arc<WriteBack>>,
    /// Under a write-through policy: copies blocks G2 evicts before their background copy.
    rescue: Option<Arc<WriteBack>>,
    emitter: EventEmitter,
    publisher: Publisher,
    pub(crate) counters: StoreCounters,
}

/// One GET result, before it is encoded.
pub(crate) enum Fetched {
    /// In G2: the slot's bytes, held.
    Host(SlotBytes<G2>),
    /// Read from a lower tier.
    Lower(TierId, Vec<u8>),
    /// Nowhere.
    Missing,
}

impl BlockStore {
    /// Opens the disk tier under `data_dir` (when configured) and allocates G2.
    pub(crate) fn open(settings: &StoreSettings, data_dir: &Path) -> Result<Self, NodeError> {
        let layout = BlockLayout::from_bytes(settings.block_bytes)
            .map_err(|e| NodeError::Config(format!("block_bytes: {e}")))?;
        let host_blocks =
            usize::try_from(settings.host_bytes / layout.slot_bytes() as u64).unwrap_or(usize::MAX);
        if host_blocks == 0 {
            return Err(NodeError::Config("host_bytes: holds no block".into()));
        }

        let disk = if settings.disk_bytes == 0 {
            None
        } else {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| NodeError::Storage(format!("{}: {e}", data_dir.display())))?;
            let capacity = settings.disk_bytes / settings.block_bytes as u64;
            let config = DiskConfig::new("kvtier", settings.block_bytes, capacity);
            let tier = DiskTier::open(data_dir.join("g3"), config).map_err(|e| {
                NodeError::Storage(format!("disk tier in {}: {e}", data_dir.display()))
            })?;
            Some(Arc::new(tier))
        };
        let disk_storage: Option<Arc<dyn Storage>> = disk
            .as_ref()
            .map(|d| Arc::new(DiskStorage::new(Arc::clone(d))) as Arc<dyn Storage>);

        let publisher =
            Publisher::with_replay_capacity(settings.instance, settings.event_replay.max(1));
        if let Some(d) = &disk {
            // What the disk kept from before this start, then every change from now on.
            let events = Arc::new(crate::disk_events::DiskEvents::new(publisher.clone()));
            for chunk in d.hashes().chunks(4096) {
                kvtier_storage::disk::DiskListener::stored(&*events, chunk);
            }
            d.set_listener(events);
        }
        let emitter = EventEmitter::builder(publisher.clone())
            .for_tier::<G2>()
            .build()
            .map_err(|e| NodeError::Storage(format!("event emitter: {e}")))?;

        let mut builder = BlockManager::<G2>::builder()
            .with_block_count(host_blocks)
            .with_observer(Arc::new(emitter.clone()));
        let (mut observer, mut sink, mut writeback, mut rescue) = (None, None, None, None);
        if let Some(lower) = &disk_storage {
            match settings.write_policy {
                WritePolicy::WriteBack => {
                    let staging = staging_blocks(settings.block_bytes);
                    let wb =
                        WriteBack::new(Arc::clone(lower), settings.block_bytes, staging, staging)
                            .map_err(|e| NodeError::Storage(format!("write-back: {e}")))?;
                    wb.set_max_wait(settings.offload_wait);
                    builder = builder.with_eviction_hook(wb.clone());
                    writeback = Some(wb);
                }
                policy => {
                    let s = Arc::new(ArenaSink::new(Arc::clone(lower)));
                    let queue = OffloadQueue::new(settings.offload_queue, s.clone())
                        .map_err(|e| NodeError::Storage(format!("offload queue: {e}")))?;
                    let gate = WriteGate::new(policy, host_blocks.max(1024))
                        .map_err(|e| NodeError::Config(format!("write_policy: {e}")))?;
                    let o = Arc::new(OffloadObserver::new(gate, queue));
                    // A block G2 evicts before the queue's worker reached it is copied on its
                    // way out, so write-through does not lose it to a backlog.
                    let filter = Arc::new(PendingWriteThrough::new(o.clone(), Arc::clone(lower)));
                    let staging = staging_blocks(settings.block_bytes);
                    let r = WriteBack::selective(
                        Arc::clone(lower),
                        settings.block_bytes,
                        staging,
                        staging,
                        filter,
                    )
                    .map_err(|e| NodeError::Storage(format!("write-through: {e}")))?;
                    r.set_max_wait(settings.offload_wait);
                    builder = builder
                        .with_observer(o.clone())
                        .with_eviction_hook(r.clone());
                    observer = Some(o);
                    sink = Some(s);
                    rescue = Some(r);
                }
            }
        }
        let manager = builder
            .build()
            .map_err(|e| NodeError::Storage(format!("host tier: {e}")))?;
        let arena = Arc::new(
            HostArena::new(&manager, layout)
                .map_err(|e| NodeError::Storage(format!("host arena: {e}")))?,
        );
        if let Some(s) = &sink {
            s.attach(&arena);
        }
        for wb in writeback.iter().chain(&rescue) {
            wb.attach(&arena);
        }
        let mut tiered = TieredStore::builder()
            .host(HostStorage::new(Arc::clone(&arena)), TierConfig::default())
            .promotion(Promotion::OnStreamCommitAtFinish);
        if let Some(lower) = disk_storage {
            tiered = tiered.tier(lower, TierConfig::default());
        }
        Ok(Self {
            block_bytes: settings.block_bytes,
            manager,
            arena,
            disk,
            tiered: tiered.build(),
            observer,
            sink,
            writeback,
            rescue,
            emitter,
            publisher,
            counters: StoreCounters::default(),
        })
    }

    /// Bytes of one block.
    pub(crate) fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// The event stream of G2.
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Stores `blocks`; one status per block, in order.
    ///
    /// # Errors
    ///
    /// A durable PUT whose disk write failed (nothing of it is acknowledged).
    pub(crate) fn put(
        &self,
        blocks: &[(SequenceHash, &[u8])],
        durable: bool,
    ) -> Result<Vec<PutStatus>, NodeError> {
        let mut status = vec![PutStatus::Stored; blocks.len()];
        let mut fresh: Vec<usize> = Vec::with_capacity(blocks.len());
        for (k, (hash, bytes)) in blocks.iter().enumerate() {
            if bytes.len() != self.block_bytes {
                status[k] = PutStatus::BadSize;
            } else if self.manager.contains(*hash) {
                status[k] = PutStatus::AlreadyPresent;
            } else {
                fresh.push(k);
            }
        }
        if durable {
            self.put_durable(blocks, &status)?;
        }
        if !fresh.is_empty() {
            self.put_host(blocks, &fresh, durable, &mut status);
        }
        self.counters.count_put(&status);
        Ok(status)
    }

    /// Writes every well-sized block of the request that the disk lacks, synced, in one batch.
    fn put_durable(
        &self,
        blocks: &[(SequenceHash, &[u8])],
        status: &[PutStatus],
    ) -> Result<(), NodeError> {
        let Some(disk) = &self.disk else {
            return Err(NodeError::NotDurable);
        };
        let batch: Vec<(SequenceHash, &[u8])> = blocks
            .iter()
            .zip(status)
            .filter(|((hash, _), s)| **s != PutStatus::BadSize && !disk.contains(*hash))
            .map(|((hash, bytes), _)| (*hash, *bytes))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        // One batch of at most the tier's capacity at a time.
        let room = usize::try_from(disk.capacity())
            .unwrap_or(usize::MAX)
            .max(1);
        for chunk in batch.chunks(room) {
            disk.put_batch(chunk)
                .map_err(|e| NodeError::Storage(format!("durable write: {e}")))?;
        }
        self.counters.durable_blocks(batch.len());
        Ok(())
    }

    /// Writes the blocks at `fresh` into G2 and registers them; blocks G2 has no room for are
    /// `NoSpace` (or `Stored` when a durable PUT already put them on disk).
    fn put_host(
        &self,
        blocks: &[(SequenceHash, &[u8])],
        fresh: &[usize],
        durable: bool,
        status: &mut [PutStatus],
    ) {
        let want = fresh.len();
        let mut slots = match self.manager.allocate_blocks(want) {
            Ok(slots) => slots,
            // Fewer free or evictable slots than asked: take what there is, block by block.
            Err(_) => (0..want)
                .map_while(|_| {
                    self.manager
                        .allocate_blocks(1)
                        .ok()
                        .and_then(|mut v| v.pop())
                })
                .collect(),
        };
        let block_size = self.manager.block_size();
        for (slot, &k) in slots.iter_mut().zip(fresh) {
            // Sizes were checked, and the slot is this arena's: cannot fail.
            let _ = self.arena.write_from(slot, blocks[k].1);
        }
        let mut staged = Vec::with_capacity(slots.len());
        let mut placed = Vec::with_capacity(slots.len());
        for (slot, &k) in slots.into_iter().zip(fresh) {
            if let Ok(s) = slot.stage(blocks[k].0, block_size) {
                staged.push(s);
                placed.push(k);
            }
        }
        for &k in fresh {
            status[k] = PutStatus::NoSpace;
        }
        if let Ok(held) = self.manager.register_blocks(staged) {
            // Released at once, tail first: cached (inactive, evictable).
            self.manager.release_blocks(held.into_iter().rev());
            for k in placed {
                status[k] = PutStatus::Stored;
            }
        }
        if durable {
            // On disk already: stored, even where G2 had no room.
            for &k in fresh {
                if status[k] == PutStatus::NoSpace {
                    status[k] = PutStatus::Stored;
                }
            }
        }
    }

    /// The G2 holders of `hashes` (touching recency), aligned with the input.
    pub(crate) fn get_host(&self, hashes: &[SequenceHash]) -> Vec<Option<SlotBytes<G2>>> {
        let found = self.manager.scan_matches(hashes, true);
        let out: Vec<Option<SlotBytes<G2>>> = found
            .into_iter()
            .map(|b| b.and_then(|b| self.arena.slot_bytes(b).ok()))
            .collect();
        if let Some(o) = &self.observer {
            let hits: Vec<SequenceHash> = hashes
                .iter()
                .zip(&out)
                .filter(|(_, b)| b.is_some())
                .map(|(h, _)| *h)
                .collect();
            o.record_hits(&hits);
        }
        out
    }

    /// Whether a G2 miss of `hash` can be served from a lower tier (an in-memory probe).
    pub(crate) fn in_lower(&self, hash: SequenceHash) -> bool {
        self.disk.as_ref().is_some_and(|d| d.contains(hash))
    }

    /// Reads `hash` from the fastest tier that holds it (promoting it into G2).
    pub(crate) fn get_lower(&self, hash: SequenceHash) -> Fetched {
        let mut buf = vec![0u8; self.block_bytes];
        match self.tiered.get(hash, &mut buf) {
            Ok(Some(0)) => match self.get_host(&[hash]).pop().flatten() {
                Some(held) => Fetched::Host(held),
                None => Fetched::Lower(TierId::G2, buf),
            },
            Ok(Some(_)) => Fetched::Lower(TierId::G3, buf),
            Ok(None) | Err(_) => Fetched::Missing,
        }
    }

    /// The tiers of each block of the longest prefix of `hashes` some tier holds.
    pub(crate) fn locate(&self, hashes: &[SequenceHash]) -> Vec<TierSet> {
        let in_host = self.manager.prefix_len(hashes);
        let mut out = Vec::with_capacity(hashes.len());
        out.resize(in_host, TierSet::EMPTY.with(TierId::G2));
        if let Some(disk) = &self.disk {
            for &hash in &hashes[in_host..] {
                if !disk.contains(hash) {
                    break;
                }
                out.push(TierSet::EMPTY.with(TierId::G3));
            }
        }
        out
    }

    /// Which tiers hold each hash.
    pub(crate) fn exists(&self, hashes: &[SequenceHash]) -> Vec<TierSet> {
        hashes
            .iter()
            .map(|&h| {
                let mut set = TierSet::EMPTY;
                if self.manager.contains(h) {
                    set = set.with(TierId::G2);
                }
                if self.in_lower(h) {
                    set = set.with(TierId::G3);
                }
                set
            })
            .collect()
    }

    /// Removes each hash from every tier; whether any held it.
    pub(crate) fn delete(&self, hashes: &[SequenceHash]) -> Vec<bool> {
        let out: Vec<bool> = hashes.iter().map(|&h| self.tiered.purge(h)).collect();
        self.counters.deleted(out.iter().filter(|&&d| d).count());
        out
    }

    /// Every counter of the tiers, by name (the STATS reply and `/metrics`).
    pub(crate) fn stats(&self) -> Vec<(String, u64)> {
        let mut out = self.counters.snapshot();
        let m = self.manager.metrics();
        let a = self.arena.stats();
        out.extend([
            (
                "g2_capacity_blocks".to_string(),
                self.manager.total_blocks() as u64,
            ),
            ("g2_blocks".to_string(), a.entries),
            ("g2_used_bytes".to_string(), a.used_bytes),
            ("g2_evictions".to_string(), m.evictions),
            ("g2_registrations".to_string(), m.registrations),
        ]);
        if let Some(disk) = &self.disk {
            let d = disk.stats();
            out.extend([
                ("g3_capacity_blocks".to_string(), disk.capacity()),
                ("g3_blocks".to_string(), disk.len() as u64),
                ("g3_puts".to_string(), d.puts),
                ("g3_put_batches".to_string(), d.put_batches),
                ("g3_hits".to_string(), d.hits),
                ("g3_misses".to_string(), d.misses),
                ("g3_corrupt".to_string(), d.corrupt),
                ("g3_evictions".to_string(), d.evictions),
                ("g3_bytes_written".to_string(), d.bytes_written),
                ("g3_bytes_read".to_string(), d.bytes_read),
                ("g3_errors".to_string(), d.errors),
            ]);
        }
        if let Some(o) = &self.observer {
            let q = o.stats();
            out.push(("offload_pending".to_string(), q.pending()));
        }
        if let Some(s) = &self.sink {
            let s = s.stats();
            out.extend([
                ("offload_written".to_string(), s.written),
                ("offload_skipped_present".to_string(), s.present),
                ("offload_gone".to_string(), s.gone),
                ("offload_failed".to_string(), s.failed),
            ]);
        }
        if let Some(wb) = &self.writeback {
            out.push(("writeback_pending".to_string(), wb.pending()));
        }
        if let Some(r) = &self.rescue {
            out.push(("offload_rescue_pending".to_string(), r.pending()));
            let r = r.stats();
            out.extend([
                ("offload_rescued".to_string(), r.written),
                ("offload_rescue_skipped".to_string(), r.skipped),
                ("offload_rescue_failed".to_string(), r.failed),
            ]);
        }
        let e = self.emitter.stats();
        out.extend([
            ("events_last_id".to_string(), self.publisher.last_event_id()),
            ("events_creates".to_string(), e.creates),
            ("events_removes".to_string(), e.removes),
        ]);
        out
    }

    /// Graceful shutdown: waits (up to `deadline`) for background copies to reach disk, then
    /// flushes events and the disk index. Returns whether every copy finished.
    /// Write-back copies a block down only when it is evicted, so at a graceful stop the
    /// blocks still in host memory are written to disk here (those not there already), in
    /// batches of one sync each. Whether all of them were.
    fn write_back_resident(&self) -> bool {
        let Some(disk) = &self.disk else {
            return true;
        };
        self.emitter.flush();
        let dump = match self.publisher.dump() {
            Ok(dump) => dump,
            Err(e) => {
                tracing::warn!(error = %e, "shutdown: cannot list host blocks to write back");
                return false;
            }
        };
        let hashes: Vec<SequenceHash> = dump
            .blocks
            .iter()
            // Host memory's blocks (the disk's are published as the `Disk` medium).
            .filter(|m| m.medium != kvtier_core::Medium::Disk)
            .flat_map(|m| m.hashes.iter().copied())
            .filter(|h| !disk.contains(*h))
            .collect();
        let mut ok = true;
        for chunk in hashes.chunks(64) {
            let held = self.manager.scan_matches(chunk, false);
            let slots: Vec<(SequenceHash, SlotBytes<G2>)> = chunk
                .iter()
                .zip(held)
                .filter_map(|(h, b)| Some((*h, self.arena.slot_bytes(b?).ok()?)))
                .collect();
            let blocks: Vec<(SequenceHash, &[u8])> =
                slots.iter().map(|(h, s)| (*h, s.bytes())).collect();
            if let Err(e) = disk.put_batch(&blocks) {
                tracing::warn!(error = %e, "shutdown: writing host blocks back to disk failed");
                ok = false;
                break;
            }
        }
        if !hashes.is_empty() {
            tracing::info!(
                blocks = hashes.len(),
                "shutdown: host blocks written back to disk"
            );
        }
        ok
    }

    pub(crate) fn drain(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let pending = || {
            self.observer.as_ref().map_or(0, |o| o.stats().pending())
                + self
                    .writeback
                    .iter()
                    .chain(&self.rescue)
                    .map(|w| w.pending())
                    .sum::<u64>()
        };
        while pending() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut done = pending() == 0;
        if self.writeback.is_some() {
            done &= self.write_back_resident();
        }
        self.emitter.flush();
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.flush_removals() {
                tracing::warn!(error = %e, "disk tier: flushing removals at shutdown failed");
            }
        }
        done
    }
}
