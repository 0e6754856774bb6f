//! One interface for every physical tier: [`Storage`], with streaming hit and miss handlers,
//! and [`ManifestStore`], compare-and-swap manifests for the durable tiers.
//!
//! Modelled on the cache storage of Pingora (learned from, not copied):
//!
//! - [`Storage::lookup`] returns a [`HitHandler`] that streams the block's bytes into caller
//!   buffers, chunk by chunk, while holding whatever keeps them valid (for G2 the
//!   [`ImmutableBlock`](kvtier_core::ImmutableBlock) guard, so the slot cannot be evicted and
//!   reused under the reader; for G3 a verified copy).
//! - [`Storage::get_miss_handler`] returns a [`MissHandler`] that takes the block's bytes in
//!   chunks; nothing is visible until [`MissHandler::finish`], and a handler dropped unfinished
//!   writes nothing.
//! - [`Storage::purge`] and [`Storage::update_meta`] act on one block.
//!
//! The traits are object safe: a composition ([`crate::tiered::TieredStore`]) holds its tiers
//! as `Arc<dyn Storage>`, and handlers are boxed and `'static` (an adapter keeps its backing
//! store in an `Arc`), so a handler can move to a promotion worker. G4 (`remote`) implements
//! [`Storage`] the same way, through [`remote::RemoteStorage`].
//!
//! Adapters: [`host::HostStorage`] (G2: a [`BlockManager`](kvtier_core::BlockManager) and its
//! [`HostArena`](crate::arena::HostArena)), [`disk::DiskStorage`] (G3: a
//! [`DiskTier`](crate::disk::DiskTier)), [`remote::RemoteStorage`] (G4: a
//! [`G4Store`](crate::remote::G4Store); also G4's [`ManifestStore`]), and
//! [`fault::FaultyStorage`] / [`fault::FaultyManifests`], wrappers that inject failures,
//! stalls and corruption for tests.

pub mod buffered;
pub mod disk;
pub mod fault;
pub mod host;
pub mod remote;

use std::time::Duration;

use kvtier_core::SequenceHash;

/// An error of a tier behind the [`Storage`] or [`ManifestStore`] interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A block or buffer whose length is not what the tier or the call expects.
    #[error("{got} bytes where the tier expects {expected}")]
    WrongSize {
        /// The length expected.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A miss handler was given more bytes than it was opened for.
    #[error("write past the declared length of {len} bytes")]
    Overflow {
        /// The declared length.
        len: usize,
    },
    /// [`MissHandler::finish`] was called before every declared byte was written.
    #[error("finish after {written} of {len} bytes")]
    Incomplete {
        /// Bytes written.
        written: usize,
        /// Bytes declared.
        len: usize,
    },
    /// The tier has no room for the block right now (every slot is held by a reader).
    #[error("tier full: {0}")]
    Full(String),
    /// The tier found the block's bytes corrupt; it dropped the block and served nothing.
    #[error("block {hash} is corrupt in this tier")]
    Corrupt {
        /// The block.
        hash: SequenceHash,
    },
    /// The operation did not complete within its deadline.
    #[error("tier timed out after {0:?}")]
    Timeout(Duration),
    /// [`ManifestStore::put_new`] found the key already present.
    #[error("manifest already exists")]
    Exists,
    /// [`ManifestStore::cas_update`] or a versioned delete found another version.
    #[error("manifest version conflict: expected {expected}, found {actual:?}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: ManifestVersion,
        /// The version stored (`None`: the key is absent).
        actual: Option<ManifestVersion>,
    },
    /// A manifest key the store cannot hold (empty, or too long for its key space).
    #[error("invalid manifest key: {0}")]
    InvalidKey(String),
    /// The key or block is absent.
    #[error("not found")]
    NotFound,
    /// The tier's backend failed (I/O, index, network, an injected fault).
    #[error("tier backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// A [`StorageError::Backend`] from any error.
    pub fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StorageError::Backend(e.into())
    }
}

/// Per-block metadata a caller may change with [`Storage::update_meta`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockMeta {
    /// Evict the block first: in G2 the block is freed as soon as its last reader releases it
    /// (instead of staying cached). Tiers without per-block eviction hints ignore it.
    pub evict_soon: bool,
}

impl BlockMeta {
    /// Metadata with `evict_soon` set as given.
    pub fn evict_soon(evict_soon: bool) -> Self {
        Self { evict_soon }
    }
}

/// What one block of a [`Storage::get_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRead {
    /// The block's bytes are in its part of the output buffer.
    Hit,
    /// The tier does not hold the block.
    Miss,
    /// The tier found the block corrupt (dropped, counted); its part of the buffer is garbage.
    Corrupt,
}

/// Streams one block's bytes out of a tier. Holding the handler keeps the bytes valid.
pub trait HitHandler: Send {
    /// Bytes in the block.
    fn len(&self) -> usize;

    /// Whether the block has no bytes (never for a real block).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the next bytes into `buf` and returns how many (0 once every byte was read).
    ///
    /// # Errors
    ///
    /// A backend error; the handler should not be read further.
    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, StorageError>;

    /// Hands over the whole block as one owned buffer, when the handler holds it so and no
    /// byte was streamed yet (a block read into memory, as G3 and G4 do); the handler is then
    /// spent. `None` (the default): read through [`read_chunk`](Self::read_chunk). Saves
    /// [`get_block`] a copy into a fresh buffer, whose page faults dominate large blocks.
    fn take_bytes(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Reads every remaining byte into `out` (exactly the remaining length).
    ///
    /// # Errors
    ///
    /// [`StorageError::WrongSize`] when `out` does not fit the rest of the block; a backend
    /// error from [`read_chunk`](Self::read_chunk).
    fn read_all(&mut self, out: &mut [u8]) -> Result<(), StorageError> {
        let mut at = 0;
        while at < out.len() {
            let n = self.read_chunk(&mut out[at..])?;
            if n == 0 {
                return Err(StorageError::WrongSize {
                    expected: at,
                    got: out.len(),
                });
            }
            at += n;
        }
        let mut probe = [0u8; 1];
        if self.read_chunk(&mut probe)? != 0 {
            return Err(StorageError::WrongSize {
                expected: self.len(),
                got: out.len(),
            });
        }
        Ok(())
    }
}

/// Streams one block's bytes into a tier; the block becomes visible only at
/// [`finish`](Self::finish). Dropped unfinished, it writes nothing.
pub trait MissHandler: Send {
    /// Appends `chunk` to the block.
    ///
    /// # Errors
    ///
    /// [`StorageError::Overflow`] past the declared length (the handler is then useless:
    /// drop it); a backend error.
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StorageError>;

    /// Bytes written so far.
    fn written(&self) -> usize;

    /// Publishes the block: from now on [`Storage::lookup`] finds it (durably, for a durable
    /// tier).
    ///
    /// # Errors
    ///
    /// [`StorageError::Incomplete`] before every declared byte was written; a backend error.
    /// Either way nothing is published.
    fn finish(self: Box<Self>) -> Result<(), StorageError>;
}

/// One physical tier: block bytes keyed by [`SequenceHash`].
///
/// Every method takes `&self` and may be called from many threads.
pub trait Storage: Send + Sync {
    /// A short name for metrics and logs (`"g2"`, `"g3"`, ...).
    fn name(&self) -> &str;

    /// Bytes of one block, when the tier stores fixed-size blocks.
    fn block_bytes(&self) -> Option<usize>;

    /// The block's bytes, as a streaming handler; `Ok(None)` on a miss.
    ///
    /// # Errors
    ///
    /// [`StorageError::Corrupt`] when the tier found the block corrupt (and dropped it); a
    /// backend error.
    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError>;

    /// A handler to write block `hash` of exactly `len` bytes.
    ///
    /// # Errors
    ///
    /// [`StorageError::WrongSize`] when the tier cannot hold a block of `len` bytes;
    /// [`StorageError::Full`] when it has no room now; a backend error.
    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError>;

    /// Removes the block; returns whether the tier held it.
    ///
    /// # Errors
    ///
    /// A backend error.
    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError>;

    /// Applies `meta` to the block; returns whether the tier held it.
    ///
    /// # Errors
    ///
    /// A backend error.
    fn update_meta(&self, hash: SequenceHash, meta: BlockMeta) -> Result<bool, StorageError>;

    /// Whether the tier holds the block (a cheap probe: bytes are not read or verified). A
    /// tier that cannot answer (a failing backend) answers `false`.
    fn contains(&self, hash: SequenceHash) -> bool;

    /// Which of `hashes` the tier holds, in order: [`contains`](Self::contains) for a whole
    /// list, answered in as few round trips as the tier allows (G4: one pipelined `EXISTS`
    /// batch in Redis, concurrent probes in object stores). The default asks
    /// [`contains`](Self::contains) once per block, which is right for tiers whose index is in
    /// memory (G2, G3). Unlike `contains`, a tier that cannot answer says so.
    ///
    /// # Errors
    ///
    /// A backend error for the whole list (an unreachable store, an open breaker).
    fn contains_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, StorageError> {
        Ok(hashes.iter().map(|&h| self.contains(h)).collect())
    }

    /// Reads many blocks of `block_len` bytes each into `out` (block `i` at
    /// `out[i * block_len..]`). The default does one [`lookup`](Self::lookup) per block;
    /// tiers with a batched read path override it.
    ///
    /// # Errors
    ///
    /// [`StorageError::WrongSize`] if `out` is not `hashes.len() * block_len` long; a backend
    /// error (no partial result).
    fn get_batch(
        &self,
        hashes: &[SequenceHash],
        block_len: usize,
        out: &mut [u8],
    ) -> Result<Vec<BatchRead>, StorageError> {
        check_batch(hashes.len(), block_len, out.len())?;
        let mut reads = Vec::with_capacity(hashes.len());
        for (hash, dst) in hashes.iter().zip(out.chunks_exact_mut(block_len.max(1))) {
            let read = match self.lookup(*hash) {
                Ok(Some(mut hit)) if hit.len() == block_len => {
                    hit.read_all(dst)?;
                    BatchRead::Hit
                }
                Ok(Some(_)) | Ok(None) => BatchRead::Miss,
                Err(StorageError::Corrupt { .. }) => BatchRead::Corrupt,
                Err(e) => return Err(e),
            };
            reads.push(read);
        }
        Ok(reads)
    }

    /// Writes many whole blocks. The default writes them one by one through
    /// [`put_block`] and stops at the first failure; tiers with a batched write path (one
    /// sync for the batch) override it. On error, a prefix of the batch may be stored.
    ///
    /// # Errors
    ///
    /// As [`put_block`].
    fn put_batch(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), StorageError> {
        for (hash, bytes) in blocks {
            put_block(self, *hash, bytes)?;
        }
        Ok(())
    }
}

/// Checks that a batch buffer holds `n` blocks of `block_len` bytes.
pub(crate) fn check_batch(n: usize, block_len: usize, got: usize) -> Result<(), StorageError> {
    match n.checked_mul(block_len) {
        Some(expected) if expected == got && block_len > 0 => Ok(()),
        _ => Err(StorageError::WrongSize {
            expected: n.saturating_mul(block_len),
            got,
        }),
    }
}

/// Writes a whole block through a miss handler of `storage` (one chunk, then finish).
///
/// # Errors
///
/// As [`Storage::get_miss_handler`], [`MissHandler::write_chunk`] and [`MissHandler::finish`].
pub fn put_block<S: Storage + ?Sized>(
    storage: &S,
    hash: SequenceHash,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let mut miss = storage.get_miss_handler(hash, bytes.len())?;
    miss.write_chunk(bytes)?;
    miss.finish()
}

/// Reads a whole block from `storage` into a new buffer; `Ok(None)` on a miss.
///
/// # Errors
///
/// As [`Storage::lookup`] and [`HitHandler::read_chunk`].
pub fn get_block(
    storage: &dyn Storage,
    hash: SequenceHash,
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(mut hit) = storage.lookup(hash)? else {
        return Ok(None);
    };
    if let Some(bytes) = hit.take_bytes() {
        return Ok(Some(bytes));
    }
    let mut out = vec![0u8; hit.len()];
    hit.read_all(&mut out)?;
    Ok(Some(out))
}

/// A manifest's version: an opaque token that changes on every successful write of the
/// manifest's value and never repeats for a key, not even across a delete and a re-create.
///
/// Tokens are only compared for equality: a stale token (read before any later write, delete
/// or re-create of the key) never matches again, so a compare-and-swap from it fails instead of
/// overwriting a newer value (no ABA). Nothing else is promised: tokens are not numbered from 1,
/// need not be consecutive, and may come from a counter shared by many keys (G3's database,
/// G4's Redis namespace) or from the key's own history (G4 object stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestVersion(u64);

impl ManifestVersion {
    /// The token a store keeps as `raw` (for [`ManifestStore`] implementations).
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value, for a store to persist (callers compare tokens, nothing more).
    pub fn as_raw(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ManifestVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v:{:x}", self.0)
    }
}

/// A stored manifest: its bytes and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's bytes.
    pub value: Vec<u8>,
    /// Its version: pass it to [`ManifestStore::cas_update`] or a versioned
    /// [`ManifestStore::delete`].
    pub version: ManifestVersion,
    /// When it expires, in milliseconds since the Unix epoch (`None`: never).
    pub expires_at_ms: Option<u64>,
}

/// Compare-and-swap manifests of a durable tier: small records (which blocks make up an
/// object, who owns a prefix) that concurrent writers update safely.
///
/// Every successful [`put_new`](Self::put_new) and [`cas_update`](Self::cas_update) gives the
/// key a [`ManifestVersion`] it never had before (see there: no ABA across a delete and a
/// re-create). [`touch_ttl`](Self::touch_ttl) may keep the version or change it, depending on
/// the store: re-read before a compare-and-swap that follows it. Whether an update keeps a time to live
/// is the store's too (G3 keeps it, G4 clears it). An expired manifest is absent.
pub trait ManifestStore: Send + Sync {
    /// The manifest stored under `key`, unless absent or expired.
    ///
    /// # Errors
    ///
    /// A backend error.
    fn get(&self, key: &[u8]) -> Result<Option<Manifest>, StorageError>;

    /// Creates `key` with `value`, expiring after `ttl` if given; returns its version.
    ///
    /// # Errors
    ///
    /// [`StorageError::Exists`] when `key` is present (and not expired); a backend error.
    fn put_new(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<ManifestVersion, StorageError>;

    /// Replaces `key`'s value if its version is `expected`; returns the new version.
    ///
    /// # Errors
    ///
    /// [`StorageError::VersionMismatch`] when the stored version differs or the key is absent;
    /// a backend error.
    fn cas_update(
        &self,
        key: &[u8],
        expected: ManifestVersion,
        value: &[u8],
    ) -> Result<ManifestVersion, StorageError>;

    /// Deletes `key` (only at version `expected`, if given); returns whether it was present.
    ///
    /// # Errors
    ///
    /// [`StorageError::VersionMismatch`] when `expected` is given and differs; a backend error.
    fn delete(&self, key: &[u8], expected: Option<ManifestVersion>) -> Result<bool, StorageError>;

    /// Sets `key` to expire `ttl` from now; returns whether it was present.
    ///
    /// # Errors
    ///
    /// A backend error.
    fn touch_ttl(&self, key: &[u8], ttl: Duration) -> Result<bool, StorageError>;
}
