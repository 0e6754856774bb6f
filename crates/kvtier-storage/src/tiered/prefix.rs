//! Prefix queries across tiers: where the leading blocks of a request live, and bringing them
//! into G2 in batches.

use kvtier_core::{G2, ImmutableBlock, SequenceHash};

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
    /// For each of `hashes`, the fastest tier among `tiers` that holds it: one
    /// [`contains_batch`](crate::tier::Storage::contains_batch) per tier over the blocks the
    /// faster tiers lack (for G4: one round trip, not one per block). A tier that fails the
    /// probe (an outage, an open breaker, a timeout) counts the error and holds nothing, so
    /// the answer falls back to what the other tiers hold.
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
            let n = pending.len();
            let present = self
                .call(i, move |s| s.contains_batch(&pending))
                .and_then(|p| {
                    if p.len() == n {
                        Ok(p)
                    } else {
                        Err(StorageError::backend(format!(
                            "{} presence answers for {n} blocks",
                            p.len()
                        )))
                    }
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
        // One batched read per source tier, over the prefix's blocks it serves, into a buffer
        // kept between calls (already faulted in). `at[k]`: (read, position) of block k.
        let mut reads: Vec<Vec<u8>> = Vec::new();
        let mut at: Vec<Option<(usize, usize)>> = vec![None; prefix];
        for tier in 1..self.tiers.len() {
            let picks: Vec<usize> = (0..prefix).filter(|&k| sources[k] == Some(tier)).collect();
            if picks.is_empty() {
                continue;
            }
            let batch: Vec<SequenceHash> = picks.iter().map(|&k| hashes[k]).collect();
            let mut buf = if reads.is_empty() {
                std::mem::take(&mut *self.scratch.lock())
            } else {
                Vec::new()
            };
            buf.resize(batch.len() * bb, 0);
            let read = self.call(tier, move |s| {
                s.get_batch(&batch, bb, &mut buf).map(|r| (r, buf))
            });
            let c = &self.tiers[tier].counters;
            let (results, buf) = match read {
                Ok(r) => r,
                Err(e) => {
                    self.count_error(tier, &e);
                    continue;
                }
            };
            for (pos, (&k, result)) in picks.iter().zip(&results).enumerate() {
                let chunk = &buf[pos * bb..(pos + 1) * bb];
                match result {
                    BatchRead::Hit if self.verify(hashes[k], chunk) => {
                        inc(&c.hits);
                        at[k] = Some((reads.len(), pos));
                    }
                    BatchRead::Hit | BatchRead::Corrupt => inc(&c.corrupt),
                    BatchRead::Miss => inc(&c.misses),
                }
            }
            reads.push(buf);
        }
        let prefix = (0..prefix)
            .take_while(|&k| sources[k] == Some(0) || at[k].is_some())
            .count();
        // Onboard the fetched blocks of the prefix in one batch; no copy when they are the
        // leading blocks of one read, in order (the usual case: one source tier).
        let fetched: Vec<usize> = (0..prefix).filter(|&k| sources[k] != Some(0)).collect();
        let in_place = fetched
            .iter()
            .enumerate()
            .all(|(i, &k)| at[k] == Some((0, i)));
        let gathered;
        let bytes: &[u8] = if in_place {
            reads.first().map_or(&[][..], |r| &r[..fetched.len() * bb])
        } else {
            let mut g = Vec::with_capacity(fetched.len() * bb);
            for &k in &fetched {
                if let Some((r, pos)) = at[k] {
                    g.extend_from_slice(&reads[r][pos * bb..(pos + 1) * bb]);
                }
            }
            gathered = g;
            &gathered
        };
        let fetched_hashes: Vec<SequenceHash> = fetched.iter().map(|&k| hashes[k]).collect();
        let inserted = host.insert_many(&fetched_hashes, bytes);
        if let Some(buf) = reads.into_iter().next() {
            *self.scratch.lock() = buf;
        }
        let mut guards = inserted?.into_iter();
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
        Ok(Onboarded {
            blocks,
            sources: sources[..prefix].iter().map(|s| s.unwrap_or(0)).collect(),
        })
    }
}
