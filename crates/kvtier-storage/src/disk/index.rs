//! The durable index: one redb database mapping a block's hash to where its bytes are.
//!
//! Table `blocks`: `u128 hash -> (slot, length, checksum, generation)`. Table `meta`: the
//! settings the tier was created with (format version, namespace, block size, slots per file,
//! capacity), checked on every open. A write batch is one redb write transaction, committed with
//! immediate durability (one fsync; two with [`DiskConfig::with_quick_repair`], which spares a
//! restart after a crash the walk of the whole tree). The index is only ever written after the block bytes it points to are
//! durable; see the module doc of [`super`].

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTableMetadata, TableDefinition};

use super::{DiskConfig, DiskError};

/// Version of the on-disk format (data file layout, index tables, checksum seed).
const FORMAT_VERSION: u64 = 1;

const BLOCKS: TableDefinition<'_, u128, (u64, u32, u64, u64)> = TableDefinition::new("blocks");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// Where one block lives and how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Slot in the data files.
    pub(crate) slot: u64,
    /// Bytes of the block (the tier's block size).
    pub(crate) len: u32,
    /// xxh3-64 of the bytes, seeded with the hash and generation.
    pub(crate) checksum: u64,
    /// Write order: larger is newer. Drives FIFO eviction and settles two records that claim
    /// one slot.
    pub(crate) generation: u64,
}

impl Record {
    fn to_value(self) -> (u64, u32, u64, u64) {
        (self.slot, self.len, self.checksum, self.generation)
    }

    fn from_value((slot, len, checksum, generation): (u64, u32, u64, u64)) -> Self {
        Self {
            slot,
            len,
            checksum,
            generation,
        }
    }
}

/// The index database, reopened after an I/O error (redb refuses every later transaction of a
/// handle that saw one, e.g. a full disk, until it is reopened).
#[derive(Debug)]
pub(crate) struct Index {
    path: PathBuf,
    db: Option<Database>,
    quick_repair: bool,
}

/// Opens (or creates) the index in `dir`, checks or records the settings, and returns it with
/// every record in it.
///
/// A new index is built under a temporary name and renamed into place once durable, so a crash
/// while creating it leaves no half-written database behind.
pub(crate) fn open(
    dir: &Path,
    config: &DiskConfig,
) -> Result<(Index, Vec<(u128, Record)>), DiskError> {
    let path = dir.join("index.redb");
    if !path.exists() {
        create_atomically(dir, &path)?;
    }
    let db = Database::create(&path).map_err(DiskError::index)?;
    check_meta(&db, dir, config)?;
    let records = load(&db)?;
    Ok((
        Index {
            path,
            db: Some(db),
            quick_repair: config.quick_repair(),
        },
        records,
    ))
}

/// Creates an empty index at `path` through a temporary file, a sync and a rename.
fn create_atomically(dir: &Path, path: &Path) -> Result<(), DiskError> {
    let temporary = dir.join("index.redb.new");
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DiskError::io("removing a half-created index")(e)),
    }
    {
        let db = Database::create(&temporary).map_err(DiskError::index)?;
        let txn = db.begin_write().map_err(DiskError::index)?;
        txn.open_table(BLOCKS).map_err(DiskError::index)?;
        txn.commit().map_err(DiskError::index)?;
    }
    std::fs::File::open(&temporary)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(DiskError::io("creating the index"))
}

/// Checks the settings recorded in `meta` against `config`, recording them in a new index and
/// a grown capacity in an old one.
fn check_meta(db: &Database, dir: &Path, config: &DiskConfig) -> Result<(), DiskError> {
    let wanted = meta_values(config);
    let stored = {
        let read = db.begin_read().map_err(DiskError::index)?;
        match read.open_table(META) {
            Ok(table) => {
                let mut values = Vec::new();
                for (key, _) in &wanted {
                    values.push(
                        table
                            .get(*key)
                            .map_err(DiskError::index)?
                            .map(|v| v.value().to_vec()),
                    );
                }
                Some(values)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(DiskError::index(e)),
        }
    };
    let mut write_meta = stored.is_none();
    if let Some(stored) = stored {
        for ((key, want), have) in wanted.iter().zip(stored) {
            let Some(have) = have else {
                write_meta = true;
                continue;
            };
            if have == *want {
                continue;
            }
            if *key == "capacity_blocks" && decode_u64(&have) <= Some(config.capacity_blocks()) {
                write_meta = true;
                continue;
            }
            return Err(DiskError::ConfigMismatch {
                path: dir.to_owned(),
                field: key,
                stored: show(key, &have),
                requested: show(key, want),
            });
        }
    }
    if write_meta {
        let txn = db.begin_write().map_err(DiskError::index)?;
        {
            let mut meta = txn.open_table(META).map_err(DiskError::index)?;
            for (key, value) in &wanted {
                meta.insert(*key, value.as_slice())
                    .map_err(DiskError::index)?;
            }
            txn.open_table(BLOCKS).map_err(DiskError::index)?;
        }
        txn.commit().map_err(DiskError::index)?;
    }
    Ok(())
}

/// Every record in the index, scanned in parallel: the key space (hashes, evenly spread) is cut
/// into one range per available core, each read by its own read transaction.
fn load(db: &Database) -> Result<Vec<(u128, Record)>, DiskError> {
    let total = {
        let read = db.begin_read().map_err(DiskError::index)?;
        let table = read.open_table(BLOCKS).map_err(DiskError::index)?;
        table.len().map_err(DiskError::index)?
    };
    let threads = if total < 65_536 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let step = u128::MAX / threads as u128;
    let parts: Vec<Result<Vec<(u128, Record)>, DiskError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let low = step * k as u128;
                let high = if k + 1 == threads {
                    None
                } else {
                    Some(step * (k as u128 + 1))
                };
                scope.spawn(move || load_range(db, low, high))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut records = Vec::with_capacity(total as usize);
    for part in parts {
        records.extend(part?);
    }
    Ok(records)
}

/// The records with hashes in `low..high` (`low..` when `high` is `None`).
fn load_range(
    db: &Database,
    low: u128,
    high: Option<u128>,
) -> Result<Vec<(u128, Record)>, DiskError> {
    let read = db.begin_read().map_err(DiskError::index)?;
    let table = read.open_table(BLOCKS).map_err(DiskError::index)?;
    let range = match high {
        Some(high) => table.range(low..high),
        None => table.range(low..),
    }
    .map_err(DiskError::index)?;
    let mut records = Vec::new();
    for row in range {
        let (key, value) = row.map_err(DiskError::index)?;
        records.push((key.value(), Record::from_value(value.value())));
    }
    Ok(records)
}

impl Index {
    /// One durable index change: removes `removals` first, then inserts `inserts`, in one
    /// write transaction committed with immediate durability.
    ///
    /// # Errors
    ///
    /// [`DiskError::Index`]; after an I/O error the database is closed and reopened by the
    /// next commit (its durable state is the last commit that returned `Ok`).
    pub(crate) fn commit(
        &mut self,
        removals: &[u128],
        inserts: &[(u128, Record)],
    ) -> Result<(), DiskError> {
        let db = match self.db.take() {
            Some(db) => db,
            None => Database::create(&self.path).map_err(DiskError::index)?,
        };
        let result = commit_on(&db, self.quick_repair, removals, inserts);
        if !matches!(result, Err(DiskError::Index(ref e)) if matches!(**e, redb::Error::Io(_) | redb::Error::PreviousIo))
        {
            self.db = Some(db);
        }
        result
    }
}

fn commit_on(
    db: &Database,
    quick_repair: bool,
    removals: &[u128],
    inserts: &[(u128, Record)],
) -> Result<(), DiskError> {
    let mut txn = db.begin_write().map_err(DiskError::index)?;
    txn.set_quick_repair(quick_repair);
    {
        let mut table = txn.open_table(BLOCKS).map_err(DiskError::index)?;
        for hash in removals {
            table.remove(*hash).map_err(DiskError::index)?;
        }
        for (hash, record) in inserts {
            table
                .insert(*hash, record.to_value())
                .map_err(DiskError::index)?;
        }
    }
    txn.commit().map_err(DiskError::index)
}

/// The settings recorded in `meta`, as `(key, bytes)`.
fn meta_values(config: &DiskConfig) -> [(&'static str, Vec<u8>); 5] {
    let num = |v: u64| v.to_le_bytes().to_vec();
    [
        ("format_version", num(FORMAT_VERSION)),
        ("namespace", config.namespace().as_bytes().to_vec()),
        ("block_bytes", num(config.block_bytes() as u64)),
        ("slots_per_file", num(config.slots_per_file())),
        ("capacity_blocks", num(config.capacity_blocks())),
    ]
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A stored setting for an error message.
fn show(key: &str, bytes: &[u8]) -> String {
    if key == "namespace" {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        decode_u64(bytes).map_or_else(|| format!("{bytes:?}"), |v| v.to_string())
    }
}
