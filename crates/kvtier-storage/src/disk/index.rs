//! The durable index: one redb database mapping a block's hash to where its bytes are.
//!
//! Table `blocks`: `u128 hash -> (slot, length, checksum, generation)`. Table `meta`: the
//! settings the tier was created with (format version, namespace, block size, slots per file,
//! capacity), checked on every open. A write batch is one redb write transaction, committed with
//! redb's default immediate durability and quick repair (so a restart after a crash does not
//! walk the whole tree). The index is only ever written after the block bytes it points to are
//! durable; see the module doc of [`super`].

use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

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

/// Opens (or creates) the index at `path`, checks or records the settings, and returns the
/// database with every record in it.
pub(crate) fn open(
    dir: &Path,
    config: &DiskConfig,
) -> Result<(Database, Vec<(u128, Record)>), DiskError> {
    let db = Database::create(dir.join("index.redb")).map_err(DiskError::index)?;
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
    let records = load(&db)?;
    Ok((db, records))
}

/// Every record in the index.
fn load(db: &Database) -> Result<Vec<(u128, Record)>, DiskError> {
    let read = db.begin_read().map_err(DiskError::index)?;
    let table = read.open_table(BLOCKS).map_err(DiskError::index)?;
    let mut records = Vec::with_capacity(table.len().map_err(DiskError::index)? as usize);
    for row in table.iter().map_err(DiskError::index)? {
        let (key, value) = row.map_err(DiskError::index)?;
        records.push((key.value(), Record::from_value(value.value())));
    }
    Ok(records)
}

/// One durable index change: removes `removals` first, then inserts `inserts`, in one write
/// transaction committed with immediate durability.
pub(crate) fn commit(
    db: &Database,
    removals: &[u128],
    inserts: &[(u128, Record)],
) -> Result<(), DiskError> {
    let mut txn = db.begin_write().map_err(DiskError::index)?;
    txn.set_quick_repair(true);
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
