//! [`Spares`]: the allocations of decoded batches given back, for the next batches to reuse.
//!
//! A busy engine's batches all look alike: each event owns a `Vec` of hashes, a `Vec` of
//! tokens and a boxed slice per byte-string hash. Decoding into spares taken from the batches
//! already applied saves those allocations (four per event on decode steps) and their frees.
//! Only small, common allocations are kept (hash boxes of [`DIGEST`] bytes, vectors of at most
//! [`MAX_ELEMENTS`] elements, at most [`MAX_SPARES`] of each kind), so a burst of huge events
//! does not stay resident.

use super::{ExternalHash, VllmBatch, VllmEvent};

/// The length of the byte-string hashes that are reused (vLLM's SHA-256 block hashes).
pub(super) const DIGEST: usize = 32;
/// The most spares of each kind kept.
const MAX_SPARES: usize = 4096;
/// The largest vector capacity kept.
const MAX_ELEMENTS: usize = 4096;

/// Spare vectors and hash boxes, taken by the decoder and refilled by [`Spares::reclaim`].
#[derive(Debug, Default)]
pub(super) struct Spares {
    events: Vec<VllmEvent>,
    hash_lists: Vec<Vec<ExternalHash>>,
    token_lists: Vec<Vec<u32>>,
    digests: Vec<Box<[u8]>>,
}

impl Spares {
    /// Takes back the allocations of a batch that is no longer needed.
    pub(super) fn reclaim(&mut self, batch: VllmBatch) {
        let mut events = batch.events;
        for event in events.drain(..) {
            match event {
                VllmEvent::BlockStored {
                    block_hashes,
                    parent,
                    mut token_ids,
                    ..
                } => {
                    token_ids.clear();
                    self.hash_list(block_hashes);
                    if let Some(parent) = parent {
                        self.digest(parent);
                    }
                    if token_ids.capacity() <= MAX_ELEMENTS && self.token_lists.len() < MAX_SPARES {
                        self.token_lists.push(token_ids);
                    }
                }
                VllmEvent::BlockRemoved { block_hashes, .. } => self.hash_list(block_hashes),
                VllmEvent::AllBlocksCleared | VllmEvent::Skipped { .. } => {}
            }
        }
        if events.capacity() <= MAX_ELEMENTS && events.capacity() > self.events.capacity() {
            self.events = events;
        }
    }

    fn hash_list(&mut self, mut list: Vec<ExternalHash>) {
        for hash in list.drain(..) {
            self.digest(hash);
        }
        if list.capacity() <= MAX_ELEMENTS && self.hash_lists.len() < MAX_SPARES {
            self.hash_lists.push(list);
        }
    }

    fn digest(&mut self, hash: ExternalHash) {
        if let ExternalHash::Bytes(bytes) = hash
            && bytes.len() == DIGEST
            && self.digests.len() < MAX_SPARES
        {
            self.digests.push(bytes);
        }
    }

    /// An empty events vector with room for `n`.
    pub(super) fn events(&mut self, n: usize) -> Vec<VllmEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.reserve(n);
        events
    }

    /// An empty hash vector with room for `n`.
    pub(super) fn hashes(&mut self, n: usize) -> Vec<ExternalHash> {
        let mut list = self.hash_lists.pop().unwrap_or_default();
        list.reserve(n);
        list
    }

    /// An empty token vector with room for `n`.
    pub(super) fn tokens(&mut self, n: usize) -> Vec<u32> {
        let mut list = self.token_lists.pop().unwrap_or_default();
        list.reserve(n);
        list
    }

    /// A byte-string hash holding `bytes`, in a spare box when one fits.
    pub(super) fn bytes(&mut self, bytes: &[u8]) -> ExternalHash {
        if bytes.len() == DIGEST
            && let Some(mut spare) = self.digests.pop()
        {
            spare.copy_from_slice(bytes);
            return ExternalHash::Bytes(spare);
        }
        ExternalHash::from(bytes)
    }
}
