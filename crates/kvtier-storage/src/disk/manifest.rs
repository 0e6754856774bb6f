//! Compare-and-swap manifests of the G3 tier, in their own redb database
//! (`dir/manifests.redb`), so a manifest update never waits behind a block batch.
//!
//! Table `manifests`: `key -> (version, expires_at_ms, value)` (`expires_at_ms = 0`: never).
//! Table `manifest_seq`: one counter; every create and update takes the next value as the
//! record's version, in the same transaction, so a version never repeats for a key (not even
//! across a delete and a re-create) and survives a restart.
//! Every operation is one redb transaction; each write (create, update, delete, TTL change) is
//! one write transaction that reads and writes the record, committed with immediate durability.
//! redb runs one write transaction at a time, so the check and the write of a CAS are atomic
//! across threads. An expired manifest reads as absent and is overwritten by `put_new`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};

use super::DiskError;
use crate::tier::{Manifest, ManifestStore, ManifestVersion, StorageError};

const MANIFESTS: TableDefinition<'_, &[u8], (u64, u64, &[u8])> = TableDefinition::new("manifests");
const SEQ: TableDefinition<'_, &str, u64> = TableDefinition::new("manifest_seq");
const SEQ_KEY: &str = "last";

/// The compare-and-swap manifests of one disk tier directory, in `dir/manifests.redb`: each
/// operation is one redb transaction (a write reads and writes the record in one write
/// transaction, committed durably), so concurrent writers of one key are safe. Versions come
/// from one counter per database (never reused); an expired manifest reads as absent.
#[derive(Debug)]
pub struct DiskManifests {
    db: Database,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn deadline(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| {
        now_ms()
            .saturating_add(t.as_millis().min(u64::MAX as u128) as u64)
            .max(1)
    })
}

fn live(expires: u64) -> bool {
    expires == 0 || expires > now_ms()
}

fn backend(e: impl Into<redb::Error>) -> StorageError {
    StorageError::backend(DiskError::index(e))
}

impl DiskManifests {
    /// Opens (or creates) the manifests of the tier directory `dir`.
    ///
    /// # Errors
    ///
    /// [`DiskError::Io`] if the directory cannot be created, [`DiskError::Index`] if the
    /// database cannot be opened (another handle holds it, or it is damaged).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DiskError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(DiskError::io("creating the tier directory"))?;
        let db = Database::create(dir.join("manifests.redb")).map_err(DiskError::index)?;
        let txn = db.begin_write().map_err(DiskError::index)?;
        {
            let manifests = txn.open_table(MANIFESTS).map_err(DiskError::index)?;
            let mut seq = txn.open_table(SEQ).map_err(DiskError::index)?;
            if seq.get(SEQ_KEY).map_err(DiskError::index)?.is_none() {
                // A database from before the counter: start above every version in it.
                let mut last = 0;
                for record in manifests.iter().map_err(DiskError::index)? {
                    let (_, v) = record.map_err(DiskError::index)?;
                    last = last.max(v.value().0);
                }
                seq.insert(SEQ_KEY, last).map_err(DiskError::index)?;
            }
        }
        txn.commit().map_err(DiskError::index)?;
        Ok(Self { db })
    }

    /// Runs `f` on the stored record of `key` (if live) and the next unused version inside one
    /// write transaction; `f` returns the record to store (`None`: remove) and the result.
    fn update<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(
            Option<(u64, u64)>,
            u64,
        ) -> Result<(Option<(u64, u64, Vec<u8>)>, R), StorageError>,
    ) -> Result<R, StorageError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let result = {
            let mut seq = txn.open_table(SEQ).map_err(backend)?;
            let fresh = seq.get(SEQ_KEY).map_err(backend)?.map_or(0, |v| v.value()) + 1;
            let mut table = txn.open_table(MANIFESTS).map_err(backend)?;
            let current = table
                .get(key)
                .map_err(backend)?
                .map(|v| {
                    let (version, expires, _) = v.value();
                    (version, expires)
                })
                .filter(|&(_, expires)| live(expires));
            let (next, result) = f(current, fresh)?;
            match next {
                Some((version, expires, value)) => {
                    if version == fresh {
                        seq.insert(SEQ_KEY, fresh).map_err(backend)?;
                    }
                    table
                        .insert(key, (version, expires, value.as_slice()))
                        .map_err(backend)?;
                }
                None => {
                    table.remove(key).map_err(backend)?;
                }
            }
            result
        };
        txn.commit().map_err(backend)?;
        Ok(result)
    }
}

impl ManifestStore for DiskManifests {
    fn get(&self, key: &[u8]) -> Result<Option<Manifest>, StorageError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(MANIFESTS).map_err(backend)?;
        let Some(record) = table.get(key).map_err(backend)? else {
            return Ok(None);
        };
        let (version, expires, value) = record.value();
        Ok(live(expires).then(|| Manifest {
            value: value.to_vec(),
            version: ManifestVersion::from_raw(version),
            expires_at_ms: (expires != 0).then_some(expires),
        }))
    }

    fn put_new(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<ManifestVersion, StorageError> {
        self.update(key, |current, fresh| match current {
            Some(_) => Err(StorageError::Exists),
            None => Ok((
                Some((fresh, deadline(ttl), value.to_vec())),
                ManifestVersion::from_raw(fresh),
            )),
        })
    }

    fn cas_update(
        &self,
        key: &[u8],
        expected: ManifestVersion,
        value: &[u8],
    ) -> Result<ManifestVersion, StorageError> {
        self.update(key, |current, fresh| match current {
            Some((version, expires)) if version == expected.as_raw() => Ok((
                Some((fresh, expires, value.to_vec())),
                ManifestVersion::from_raw(fresh),
            )),
            other => Err(StorageError::VersionMismatch {
                expected,
                actual: other.map(|(v, _)| ManifestVersion::from_raw(v)),
            }),
        })
    }

    fn delete(&self, key: &[u8], expected: Option<ManifestVersion>) -> Result<bool, StorageError> {
        self.update(key, |current, _| match (current, expected) {
            (None, None) => Ok((None, false)),
            (Some((version, _)), Some(want)) if version != want.as_raw() => {
                Err(StorageError::VersionMismatch {
                    expected: want,
                    actual: Some(ManifestVersion::from_raw(version)),
                })
            }
            (None, Some(want)) => Err(StorageError::VersionMismatch {
                expected: want,
                actual: None,
            }),
            (Some(_), _) => Ok((None, true)),
        })
    }

    fn touch_ttl(&self, key: &[u8], ttl: Duration) -> Result<bool, StorageError> {
        // Rewriting the value needs it: read it in the same transaction.
        let txn = self.db.begin_write().map_err(backend)?;
        let present = {
            let mut table = txn.open_table(MANIFESTS).map_err(backend)?;
            let current = table.get(key).map_err(backend)?.and_then(|v| {
                let (version, expires, value) = v.value();
                live(expires).then(|| (version, value.to_vec()))
            });
            match current {
                Some((version, value)) => {
                    table
                        .insert(key, (version, deadline(Some(ttl)), value.as_slice()))
                        .map_err(backend)?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(backend)?;
        Ok(present)
    }
}
