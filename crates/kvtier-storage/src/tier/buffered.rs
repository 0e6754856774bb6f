//! Handlers over an in-memory copy of one block, for tiers that read or write whole blocks
//! (G3 verifies a block's checksum over all of its bytes; G4 stores whole objects).

use kvtier_core::SequenceHash;

use super::{HitHandler, MissHandler, StorageError};

/// A [`HitHandler`] that streams a block already read (and verified) into memory.
#[derive(Debug)]
pub struct BufferedHit {
    bytes: Vec<u8>,
    pos: usize,
    /// The block's length (kept once [`take_bytes`](HitHandler::take_bytes) took the bytes).
    len: usize,
}

impl BufferedHit {
    /// A handler over `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            len: bytes.len(),
            bytes,
            pos: 0,
        }
    }
}

impl HitHandler for BufferedHit {
    fn len(&self) -> usize {
        self.len
    }

    fn take_bytes(&mut self) -> Option<Vec<u8>> {
        if self.pos != 0 || self.bytes.is_empty() {
            return None;
        }
        // Spent: `bytes` is now empty, so `read_chunk` reads nothing more.
        Some(std::mem::take(&mut self.bytes))
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let rest = &self.bytes[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a [`BufferedMiss`] calls at finish with the whole block.
pub type Commit = Box<dyn FnOnce(SequenceHash, Vec<u8>) -> Result<(), StorageError> + Send>;

/// A [`MissHandler`] that gathers the block in memory and hands it to a commit function at
/// [`finish`](MissHandler::finish); dropped unfinished, it calls nothing.
pub struct BufferedMiss {
    hash: SequenceHash,
    len: usize,
    buf: Vec<u8>,
    commit: Commit,
}

impl std::fmt::Debug for BufferedMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedMiss")
            .field("hash", &self.hash)
            .field("len", &self.len)
            .field("written", &self.buf.len())
            .finish()
    }
}

impl BufferedMiss {
    /// A handler for block `hash` of exactly `len` bytes, published by `commit`.
    pub fn new(hash: SequenceHash, len: usize, commit: Commit) -> Self {
        Self {
            hash,
            len,
            buf: Vec::with_capacity(len),
            commit,
        }
    }
}

impl MissHandler for BufferedMiss {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        if self.buf.len() + chunk.len() > self.len {
            return Err(StorageError::Overflow { len: self.len });
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    fn written(&self) -> usize {
        self.buf.len()
    }

    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        if self.buf.len() != self.len {
            return Err(StorageError::Incomplete {
                written: self.buf.len(),
                len: self.len,
            });
        }
        (self.commit)(self.hash, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_bytes_hands_over_an_unread_block_only() {
        let mut hit = BufferedHit::new(vec![1, 2, 3]);
        assert_eq!(hit.take_bytes(), Some(vec![1, 2, 3]));
        assert_eq!(hit.len(), 3);
        assert_eq!(
            hit.read_chunk(&mut [0u8; 4]).unwrap(),
            0,
            "spent after take"
        );
        assert_eq!(hit.take_bytes(), None);

        let mut hit = BufferedHit::new(vec![1, 2, 3]);
        let mut one = [0u8; 1];
        assert_eq!(hit.read_chunk(&mut one).unwrap(), 1);
        assert_eq!(hit.take_bytes(), None, "partly streamed: no hand-over");
        let mut rest = [0u8; 2];
        hit.read_all(&mut rest).unwrap();
        assert_eq!(rest, [2, 3]);
    }
}
