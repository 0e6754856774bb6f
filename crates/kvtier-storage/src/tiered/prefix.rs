//! Prefix queries across tiers: where the leading blocks of a request live, and bringing them
//! into G2 in batches.

use kvtier_core::{G2, ImmutableBlock, SequenceHash};
use xxhash_rust::xxh3::xxh3_64;

use super::TieredStore;
use super::metrics::inc;
use crate::tier::{BatchRead, StorageError};

/// The leading blocks of a hash list that some tier holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrefixLocation {
    /// For each block of the prefix, in order, the fastest tier that holds it; the prefix's
    /// length is `tiers.len()`.
    pub tiers: Vec<usize>,
}

impl PrefixLocation {
    /// Blocks in the prefix.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Whether no leading block is held anywhere.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

/// A prefix brought into G2 by [`TieredStore::fetch_prefix_into_host`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Onboarded {
    /// The G2 guards of the prefix's blocks, in order (holding them keeps the bytes in place).
    pub blocks: Vec<ImmutableBlock<G2>>,
    /// For each block, the tier it came from (0: it was in G2 already).
    pub sources: Vec<usize>,
}

impl TieredStore {
    /// For each of `hashes`, the fastest tier among `tiers` that holds it (one probe per tier
    /// for the whole list; a faulty tier counts as holding nothing).
    fn probe(&self, hashes: &[SequenceHash], tiers: std::ops::Range<usize>) -> Vec<Option<usize>> {
        let mut at: Vec<Option<usize>> = vec![None; hashes.len()];
        for i in tiers {
            let pending: Vec<SequenceHash> = at
                .iter()
                .zip(hashes)
                .filter(|(a, _)| a.is_none())
                .map(|(_, h)| *h)
                .collect();
            if pending.is_empty() {
                break;
            }
            let present = self.call(i, move |s| {
                Ok(pending
                    .iter()
                    .map(|h| s.contains(*h))
                    .collect::<Vec<bool>>())
            });
            let present = match present {
                Ok(p) => p,
                Err(e) => {
                    self.count_error(i, &e);
                    continue;
                }
            };
            let mut it = present.into_iter();
            for slot in at.iter_mut().filter(|a| a.is_none()) {
                if it.next() == Some(true) {
                    *slot = Some(i);
                }
            }
        }
        at
    }

    /// The longest prefix of `hashes` whose every block some tier holds, and the fastest tier
    /// holding each. Probes only (no bytes are read or verified, nothing is promoted).
    pub fn locate_prefix(&self, hashes: &[SequenceHash]) -> PrefixLocation {
        let tiers = self
            .probe(hashes, 0..self.tiers.len())
            .into_iter()
            .map_while(|t| t)
            .collect();
        PrefixLocation { tiers }
    }

    /// Brings the longest available prefix of `hashes` into G2 and returns its guards: blocks
    /// already in G2 are taken as they are; the others are read with one
    /// [`get_batch`](crate::tier::Storage::get_batch) per source tier, verified, written into
    /// newly allocated G2 slots and registered in one batch. The prefix ends at the first block
    /// that no tier holds or whose read failed (faults are counted).
    ///
    /// # Errors
    ///
    /// [`StorageError::NotFound`] when the store has no host tier; [`StorageError::Full`] when
    /// G2 cannot take the fetched blocks (nothing is onboarded).
    pub fn fetch_prefix_into_host(
        &self,
        hashes: &[SequenceHash],
    ) -> Result<Onboarded, StorageError> {
        let host = self.host.as_ref().ok_or(StorageError::NotFound)?;
        let bb = host.arena().block_bytes();
        let mut in_host = host.manager().scan_matches(hashes, true);
        let mut sources: Vec<Option<usize>> =
            in_host.iter().map(|b| b.as_ref().map(|_| 0)).collect();
        // Where the blocks G2 lacks live below it.
        let missing: Vec<usize> = (0..hashes.len())
            .filter(|&k| sources[k].is_none())
            .collect();
        let wanted: Vec<SequenceHash> = missing.iter().map(|&k| hashes[k]).collect();
        for (k, at) in missing.iter().zip(self.probe(&wanted, 1..self.tiers.len())) {
            sources[*k] = at;
        }
        let prefix = sources.iter().take_while(|s| s.is_some()).count();
        // One batched read per source tier, over the prefix's blocks it serves.
        let mut bytes = vec![0u8; prefix * bb];
        let mut ok = vec![true; prefix];
        for tier in 1..self.tiers.len() {
            let picks: Vec<usize> = (0..prefix).filter(|&k| sources[k] == Some(tier)).collect();
            if picks.is_empty() {
                continue;
            }
            let batch: Vec<SequenceHash> = picks.iter().map(|&k| hashes[k]).collect();
            let n = batch.len();
            let read = self.call(tier, move |s| {
                let mut out = vec![0u8; n * bb];
                s.get_batch(&batch, bb, &mut out).map(|r| (r, out))
            });
            let c = &self.tiers[tier].counters;
            let (reads, out) = match read {
                Ok(r) => r,
                Err(e) => {
                    self.count_error(tier, &e);
                    picks.iter().for_each(|&k| ok[k] = false);
                    continue;
                }
            };
            for ((&k, read), chunk) in picks.iter().zip(&reads).zip(out.chunks_exact(bb)) {
                let good = match read {
                    BatchRead::Hit if self.verify(hashes[k], chunk) => {
                        inc(&c.hits);
                        true
                    }
                    BatchRead::Hit | BatchRead::Corrupt => {
                        inc(&c.corrupt);
                        false
                    }
                    BatchRead::Miss => {
                        inc(&c.misses);
                        false
                    }
                };
                ok[k] = good;
                if good {
                    bytes[k * bb..(k + 1) * bb].copy_from_slice(chunk);
                }
            }
        }
        let prefix = ok.iter().take_while(|&&g| g).count();
        // Onboard the fetched blocks of the prefix in one batch.
        let fetched: Vec<usize> = (0..prefix).filter(|&k| sources[k] != Some(0)).collect();
        let mut gathered = Vec::with_capacity(fetched.len() * bb);
        for &k in &fetched {
            gathered.extend_from_slice(&bytes[k * bb..(k + 1) * bb]);
        }
        let fetched_hashes: Vec<SequenceHash> = fetched.iter().map(|&k| hashes[k]).collect();
        let mut guards = host.insert_many(&fetched_hashes, &gathered)?.into_iter();
        for _ in &fetched {
            inc(&self.tiers[0].counters.writes);
        }
        let mut blocks = Vec::with_capacity(prefix);
        for held in in_host.iter_mut().take(prefix) {
            let guard = match held.take() {
                Some(g) => g,
                None => guards
                    .next()
                    .ok_or_else(|| StorageError::backend("onboarded fewer blocks than asked"))?,
            };
            blocks.push(guard);
        }
        for k in &fetched {
            self.record_if_absent(hashes[*k], &bytes[*k * bb..(*k + 1) * bb]);
        }
        Ok(Onboarded {
            blocks,
            sources: sources[..prefix].iter().map(|s| s.unwrap_or(0)).collect(),
        })
    }

    /// Records the digest of bytes that passed verification, when none is recorded.
    fn record_if_absent(&self, hash: SequenceHash, bytes: &[u8]) {
        self.digests
            .lock()
            .entry(hash.as_u128())
            .or_insert_with(|| xxh3_64(bytes));
    }
}
