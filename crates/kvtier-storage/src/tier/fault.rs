//! A [`Storage`] wrapper that injects faults, for testing what sits above a tier: every call
//! fails, stalls (sleeps a bounded time, then proceeds), or serves corrupted bytes, as set at
//! run time with [`FaultyStorage::set`]. Every injected fault is counted.
//!
//! [`FaultyManifests`] does the same to a [`ManifestStore`]; made with
//! [`FaultyStorage::wrap_manifests`] it shares the tier's switch and counter, so one `set`
//! fails a durable tier's blocks and its manifests together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kvtier_core::SequenceHash;
use parking_lot::Mutex;

use super::{
    BatchRead, BlockMeta, HitHandler, Manifest, ManifestStore, ManifestVersion, MissHandler,
    Storage, StorageError,
};

/// What a [`FaultyStorage`] does to the calls it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward every call unchanged.
    #[default]
    None,
    /// Fail every call with [`StorageError::Backend`] (`contains` answers `false`).
    Fail,
    /// Sleep this long before forwarding each call (a slow or hung backend, bounded so tests
    /// end).
    Stall(Duration),
    /// Forward every call, but flip one byte in every block read.
    Corrupt,
}

/// An injected failure.
#[derive(Debug, thiserror::Error)]
#[error("injected fault")]
pub struct InjectedFault;

/// A tier that misbehaves on demand; see the [module documentation](self).
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    name: String,
    fault: Arc<Mutex<Fault>>,
    injected: Arc<AtomicU64>,
}

impl std::fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("name", &self.name)
            .field("fault", &*self.fault.lock())
            .field("injected", &self.injected())
            .finish()
    }
}

impl FaultyStorage {
    /// Wraps `inner`, forwarding unchanged until [`set`](Self::set) says otherwise.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            name: format!("faulty-{}", inner.name()),
            inner,
            fault: Arc::new(Mutex::new(Fault::None)),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sets the fault applied from the next call on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn before(&self) -> Result<bool, StorageError> {
        before(&self.fault, &self.injected)
    }

    /// `inner`'s manifests behind the same fault switch and counter as this tier.
    pub fn wrap_manifests(&self, inner: Arc<dyn ManifestStore>) -> FaultyManifests {
        FaultyManifests {
            inner,
            fault: Arc::clone(&self.fault),
            injected: Arc::clone(&self.injected),
        }
    }
}

/// Applies the current fault before a call: `Err` for [`Fault::Fail`], a sleep for
/// [`Fault::Stall`]; returns whether reads must be corrupted.
fn before(fault: &Mutex<Fault>, injected: &AtomicU64) -> Result<bool, StorageError> {
    let fault = *fault.lock();
    match fault {
        Fault::None => Ok(false),
        Fault::Fail => {
            injected.fetch_add(1, Ordering::Relaxed);
            Err(StorageError::backend(InjectedFault))
        }
        Fault::Stall(d) => {
            injected.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(d);
            Ok(false)
        }
        Fault::Corrupt => Ok(true),
    }
}

/// A [`ManifestStore`] that misbehaves on demand: every call fails or stalls as set, and
/// [`Fault::Corrupt`] flips the first byte of every manifest value read.
pub struct FaultyManifests {
    inner: Arc<dyn ManifestStore>,
    fault: Arc<Mutex<Fault>>,
    injected: Arc<AtomicU64>,
}

impl std::fmt::Debug for FaultyManifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyManifests")
            .field("fault", &*self.fault.lock())
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

impl FaultyManifests {
    /// Wraps `inner`, forwarding unchanged until [`set`](Self::set) says otherwise.
    pub fn new(inner: Arc<dyn ManifestStore>) -> Self {
        Self {
            inner,
            fault: Arc::new(Mutex::new(Fault::None)),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sets the fault applied from the next call on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }

    /// Faults injected so far (shared with the tier when made by
    /// [`FaultyStorage::wrap_manifests`]).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl ManifestStore for FaultyManifests {
    fn get(&self, key: &[u8]) -> Result<Option<Manifest>, StorageError> {
        let corrupt = before(&self.fault, &self.injected)?;
        let mut found = self.inner.get(key)?;
        if let Some(m) = found.as_mut().filter(|_| corrupt) {
            if let Some(b) = m.value.first_mut() {
                *b ^= 0x5A;
                self.injected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(found)
    }

    fn put_new(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<ManifestVersion, StorageError> {
        before(&self.fault, &self.injected)?;
        self.inner.put_new(key, value, ttl)
    }

    fn cas_update(
        &self,
        key: &[u8],
        expected: ManifestVersion,
        value: &[u8],
    ) -> Result<ManifestVersion, StorageError> {
        before(&self.fault, &self.injected)?;
        self.inner.cas_update(key, expected, value)
    }

    fn delete(&self, key: &[u8], expected: Option<ManifestVersion>) -> Result<bool, StorageError> {
        before(&self.fault, &self.injected)?;
        self.inner.delete(key, expected)
    }

    fn touch_ttl(&self, key: &[u8], ttl: Duration) -> Result<bool, StorageError> {
        before(&self.fault, &self.injected)?;
        self.inner.touch_ttl(key, ttl)
    }
}

/// A hit handler that flips the first byte it streams.
struct CorruptHit {
    inner: Box<dyn HitHandler>,
    flipped: bool,
}

impl HitHandler for CorruptHit {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let n = self.inner.read_chunk(buf)?;
        if n > 0 && !self.flipped {
            buf[0] ^= 0x5A;
            self.flipped = true;
        }
        Ok(n)
    }
}

impl Storage for FaultyStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_bytes(&self) -> Option<usize> {
        self.inner.block_bytes()
    }

    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        let corrupt = self.before()?;
        let hit = self.inner.lookup(hash)?;
        Ok(match hit {
            Some(inner) if corrupt => {
                self.injected.fetch_add(1, Ordering::Relaxed);
                Some(Box::new(CorruptHit {
                    inner,
                    flipped: false,
                }))
            }
            other => other,
        })
    }

    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        self.before()?;
        self.inner.get_miss_handler(hash, len)
    }

    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        self.before()?;
        self.inner.purge(hash)
    }

    fn update_meta(&self, hash: SequenceHash, meta: BlockMeta) -> Result<bool, StorageError> {
        self.before()?;
        self.inner.update_meta(hash, meta)
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        match self.before() {
            Ok(_) => self.inner.contains(hash),
            Err(_) => false,
        }
    }

    /// One fault decision for the whole list (a failing tier fails the probe as a whole).
    fn contains_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, StorageError> {
        self.before()?;
        self.inner.contains_batch(hashes)
    }

    fn get_batch(
        &self,
        hashes: &[SequenceHash],
        block_len: usize,
        out: &mut [u8],
    ) -> Result<Vec<BatchRead>, StorageError> {
        let corrupt = self.before()?;
        let reads = self.inner.get_batch(hashes, block_len, out)?;
        if corrupt {
            for (read, block) in reads.iter().zip(out.chunks_exact_mut(block_len.max(1))) {
                if *read == BatchRead::Hit {
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    block[0] ^= 0x5A;
                }
            }
        }
        Ok(reads)
    }
}
