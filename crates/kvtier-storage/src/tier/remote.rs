//! [`Storage`] for G4: a [`G4Store`] behind the tier interface, so an external store sits in a
//! [`TieredStore`](crate::tiered::TieredStore) like G2 and G3.
//!
//! G4 stores whole framed objects, so reads are fetched and verified whole, then streamed from
//! memory ([`BufferedHit`]); writes are gathered and stored with one [`G4Store::put`] at finish
//! ([`BufferedMiss`]). Batched reads are one [`G4Store::get_batch_into`] (one `MGET` or pipelined `GET`s in Redis),
//! straight into the caller's buffer.
//!
//! Errors map onto [`StorageError`]: a refused frame is [`StorageError::Corrupt`] (the adapter
//! then deletes the bad copy, best effort, so the tier stops serving it), a call past the
//! store's bound is [`StorageError::Timeout`], and everything else (an unreachable server, an
//! open breaker) is [`StorageError::Backend`]. The store's breaker makes a dead server cheap:
//! once open, calls fail without touching the network, and its counters
//! ([`G4Store::stats`]) record every rejection.
//!
//! G4's compare-and-swap manifests are a [`ManifestStore`] through the same adapter: a key's
//! bytes become a manifest name (lower-case hex, so at most 100 bytes), and G4's versions,
//! which only grow (one counter per namespace in Redis, the key's own history in object
//! stores), are the opaque [`ManifestVersion`] tokens the trait promises. Expiry is the
//! store's: a Redis key TTL (kept by [`ManifestStore::touch_ttl`], with the version), or a
//! deadline inside the manifest in object stores (rewritten by a compare-and-swap, so the
//! version changes). An update clears the time to live.

use std::sync::Arc;

use kvtier_core::SequenceHash;

use super::buffered::{BufferedHit, BufferedMiss};
use super::{
    BatchRead, BlockMeta, HitHandler, Manifest, ManifestStore, ManifestVersion, MissHandler,
    Storage, StorageError, check_batch,
};
use crate::remote::{Cas, G4Error, G4Store, Landed};

/// Longest manifest key [`RemoteStorage`] accepts (hex-encoded into a G4 name of 200 bytes).
pub const MAX_MANIFEST_KEY: usize = 100;

/// The G4 external store as a [`Storage`].
#[derive(Debug, Clone)]
pub struct RemoteStorage {
    store: Arc<G4Store>,
}

impl RemoteStorage {
    /// Wraps `store`.
    pub fn new(store: Arc<G4Store>) -> Self {
        Self { store }
    }

    /// The G4 store (for its counters and breaker state).
    pub fn store(&self) -> &Arc<G4Store> {
        &self.store
    }

    fn error(&self, e: G4Error) -> StorageError {
        g4_error(&self.store, e)
    }

    /// Drops a copy that failed its check, best effort (the read already failed).
    fn drop_corrupt(&self, hash: SequenceHash) {
        let _ = self.store.delete(hash);
    }
}

/// Maps a G4 error (other than corruption, which needs the block's hash) onto the tier error.
fn g4_error(store: &G4Store, e: G4Error) -> StorageError {
    match e {
        G4Error::WrongSize { expected, actual } => StorageError::WrongSize {
            expected,
            got: actual,
        },
        G4Error::Timeout => StorageError::Timeout(store.timeout()),
        other => StorageError::backend(other),
    }
}

impl Storage for RemoteStorage {
    fn name(&self) -> &str {
        "g4"
    }

    fn block_bytes(&self) -> Option<usize> {
        Some(self.store.namespace().block_bytes())
    }

    fn lookup(&self, hash: SequenceHash) -> Result<Option<Box<dyn HitHandler>>, StorageError> {
        match self.store.get(hash) {
            Ok(Some(bytes)) => Ok(Some(Box::new(BufferedHit::new(bytes)))),
            Ok(None) => Ok(None),
            Err(G4Error::Corrupt { .. }) => {
                self.drop_corrupt(hash);
                Err(StorageError::Corrupt { hash })
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn get_miss_handler(
        &self,
        hash: SequenceHash,
        len: usize,
    ) -> Result<Box<dyn MissHandler>, StorageError> {
        let expected = self.store.namespace().block_bytes();
        if len != expected {
            return Err(StorageError::WrongSize { expected, got: len });
        }
        let store = Arc::clone(&self.store);
        Ok(Box::new(BufferedMiss::new(
            hash,
            len,
            Box::new(move |hash, bytes| store.put(hash, &bytes).map_err(|e| g4_error(&store, e))),
        )))
    }

    /// Two round trips (an existence probe, then the delete): G4's delete does not say
    /// whether the key was there.
    fn purge(&self, hash: SequenceHash) -> Result<bool, StorageError> {
        let held = self.store.exists(hash).map_err(|e| self.error(e))?;
        if held {
            self.store.delete(hash).map_err(|e| self.error(e))?;
        }
        Ok(held)
    }

    /// G4 keeps no per-block hints (expiry is the store's own): only reports presence.
    fn update_meta(&self, hash: SequenceHash, _meta: BlockMeta) -> Result<bool, StorageError> {
        self.store.exists(hash).map_err(|e| self.error(e))
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.store.exists(hash).unwrap_or(false)
    }

    /// One round trip for the whole list ([`G4Store::exists_batch`]).
    fn contains_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, StorageError> {
        self.store.exists_batch(hashes).map_err(|e| self.error(e))
    }

    fn get_batch(
        &self,
        hashes: &[SequenceHash],
        block_len: usize,
        out: &mut [u8],
    ) -> Result<Vec<BatchRead>, StorageError> {
        check_batch(hashes.len(), block_len, out.len())?;
        let expected = self.store.namespace().block_bytes();
        if block_len != expected {
            return Err(StorageError::WrongSize {
                expected,
                got: block_len,
            });
        }
        // Straight into `out`: each block lands in its part and is checked as it arrives.
        let landed = self
            .store
            .get_batch_into(hashes, out)
            .map_err(|e| self.error(e))?;
        let mut reads = Vec::with_capacity(hashes.len());
        for (hash, got) in hashes.iter().zip(landed) {
            reads.push(match got {
                Landed::Hit => BatchRead::Hit,
                Landed::Corrupt(_) => {
                    self.drop_corrupt(*hash);
                    BatchRead::Corrupt
                }
                Landed::Miss => BatchRead::Miss,
            });
        }
        Ok(reads)
    }
}

/// The G4 manifest name of a [`ManifestStore`] key: its bytes in lower-case hex.
fn manifest_name(key: &[u8]) -> Result<String, StorageError> {
    if key.is_empty() || key.len() > MAX_MANIFEST_KEY {
        return Err(StorageError::InvalidKey(format!(
            "{} bytes (G4 takes 1 to {MAX_MANIFEST_KEY})",
            key.len()
        )));
    }
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

impl RemoteStorage {
    /// The current version of manifest `name` (for a conflict's report), best effort.
    fn version_now(&self, name: &str) -> Option<ManifestVersion> {
        let current = self.store.manifest(name).ok()??;
        Some(ManifestVersion::from_raw(current.version))
    }
}

impl ManifestStore for RemoteStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Manifest>, StorageError> {
        let name = manifest_name(key)?;
        let found = self.store.manifest(&name).map_err(|e| self.error(e))?;
        Ok(found.map(|m| Manifest {
            value: m.value,
            version: ManifestVersion::from_raw(m.version),
            expires_at_ms: m.expires_at_ms,
        }))
    }

    fn put_new(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<std::time::Duration>,
    ) -> Result<ManifestVersion, StorageError> {
        let name = manifest_name(key)?;
        match self.store.put_new_with_ttl(&name, value, ttl) {
            Ok(Cas::Written(v)) => Ok(ManifestVersion::from_raw(v)),
            Ok(_) => Err(StorageError::Exists),
            Err(e) => Err(self.error(e)),
        }
    }

    fn cas_update(
        &self,
        key: &[u8],
        expected: ManifestVersion,
        value: &[u8],
    ) -> Result<ManifestVersion, StorageError> {
        let name = manifest_name(key)?;
        match self.store.cas_update(&name, expected.as_raw(), value) {
            Ok(Cas::Written(v)) => Ok(ManifestVersion::from_raw(v)),
            Ok(_) => Err(StorageError::VersionMismatch {
                expected,
                actual: self.version_now(&name),
            }),
            Err(e) => Err(self.error(e)),
        }
    }

    fn delete(&self, key: &[u8], expected: Option<ManifestVersion>) -> Result<bool, StorageError> {
        let name = manifest_name(key)?;
        if let Some(expected) = expected {
            return match self.store.delete_manifest(&name, expected.as_raw()) {
                Ok(Cas::Deleted) => Ok(true),
                Ok(_) => Err(StorageError::VersionMismatch {
                    expected,
                    actual: self.version_now(&name),
                }),
                Err(e) => Err(self.error(e)),
            };
        }
        // Unconditional: delete whatever version is current, again if a writer moved it on.
        for _ in 0..16 {
            let Some(current) = self.store.manifest(&name).map_err(|e| self.error(e))? else {
                return Ok(false);
            };
            match self.store.delete_manifest(&name, current.version) {
                Ok(Cas::Deleted) => return Ok(true),
                Ok(_) => continue,
                Err(e) => return Err(self.error(e)),
            }
        }
        Err(StorageError::backend(format!(
            "manifest {name} kept changing while it was deleted"
        )))
    }

    fn touch_ttl(&self, key: &[u8], ttl: std::time::Duration) -> Result<bool, StorageError> {
        let name = manifest_name(key)?;
        self.store.touch_ttl(&name, ttl).map_err(|e| self.error(e))
    }
}
