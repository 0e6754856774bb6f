//! Snapshots: the router's state in a file, so a restarted router answers at once and then
//! catches up from each instance's next event id.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "KVTRSNAP"
//! 8       4     format version, u32 little-endian (1)
//! 12      8     body length N, u64 little-endian
//! 20      N     body: msgpack { instances: [{ instance, next_event_id, policy, blocks: [{medium, hashes}] }] }
//! 20+N    8     xxh3-64 of the body, u64 little-endian
//! ```
//!
//! Files are written to a temporary sibling, synced and renamed into place, so a crash leaves
//! either the old snapshot or the new one. Loading checks the magic, version, length and
//! checksum before decoding; a damaged file is an error, never a panic or a partial load.

use std::io::Write;
use std::path::Path;

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, InstanceId, MediumBlocks};
use serde::{Deserialize, Serialize};

use crate::{Router, RouterBuilder};

const MAGIC: &[u8; 8] = b"KVTRSNAP";
const VERSION: u32 = 1;
const HEADER: usize = 20;

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the snapshot magic.
    #[error("not a kvtier router snapshot (bad magic)")]
    BadMagic,
    /// The file was written by an unknown format version.
    #[error("snapshot format version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    /// The file is shorter than its header says.
    #[error("snapshot truncated: {expected} bytes expected, {actual} present")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The body does not match its checksum.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The body is not a valid snapshot.
    #[error("malformed snapshot body: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
struct Body {
    instances: Vec<SnapInstance>,
}

#[derive(Serialize, Deserialize)]
struct SnapInstance {
    instance: InstanceId,
    next_event_id: u64,
    policy: EmitPolicy,
    blocks: Vec<MediumBlocks>,
}

impl Router {
    /// Writes the router's state to `path` (atomically: temporary file, sync, rename).
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Io`] when the file cannot be written.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), SnapshotError> {
        let bytes = self.snapshot_bytes()?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The snapshot as bytes (the file format above).
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Malformed`] if encoding fails (it does not for a valid router).
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let table = self.instances_table();
        let mut per_slot: hashbrown::HashMap<u32, [Vec<SequenceHash>; 4]> =
            hashbrown::HashMap::new();
        for (hash, slot, medium) in self.index().iter() {
            per_slot.entry(slot).or_default()[medium.index()].push(hash);
        }
        let mut instances: Vec<SnapInstance> = table
            .iter()
            .map(|(slot, s)| {
                let lists = per_slot.remove(&slot).unwrap_or_default();
                let blocks = Medium::ALL
                    .into_iter()
                    .zip(lists)
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(medium, mut hashes)| {
                        hashes.sort_unstable_by_key(|h| (h.position(), h.as_u128()));
                        MediumBlocks { medium, hashes }
                    })
                    .collect();
                SnapInstance {
                    instance: s.id,
                    next_event_id: s.next_id,
                    policy: s.policy,
                    blocks,
                }
            })
            .collect();
        instances.sort_by_key(|i| i.instance);
        let body = rmp_serde::to_vec_named(&Body { instances })
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER + body.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        Ok(out)
    }

    /// A router built by `builder` holding the state of the snapshot at `path`.
    ///
    /// Attach the instances' sources and call [`Router::catch_up`] (or just keep applying
    /// their streams: gaps are repaired as usual) to get back in step.
    ///
    /// # Errors
    ///
    /// Any [`SnapshotError`]: a missing, truncated, corrupt or foreign file.
    pub fn load_snapshot(builder: RouterBuilder, path: &Path) -> Result<Router, SnapshotError> {
        Self::from_snapshot_bytes(builder, &std::fs::read(path)?)
    }

    /// [`Router::load_snapshot`] from bytes.
    ///
    /// # Errors
    ///
    /// As [`Router::load_snapshot`].
    pub fn from_snapshot_bytes(
        builder: RouterBuilder,
        bytes: &[u8],
    ) -> Result<Router, SnapshotError> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        if bytes.len() < HEADER {
            return Err(SnapshotError::Truncated {
                expected: HEADER as u64,
                actual: bytes.len() as u64,
            });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let expected = (HEADER as u64).saturating_add(len).saturating_add(8);
        if (bytes.len() as u64) < expected {
            return Err(SnapshotError::Truncated {
                expected,
                actual: bytes.len() as u64,
            });
        }
        let body = &bytes[HEADER..HEADER + len as usize];
        let sum_at = HEADER + len as usize;
        let sum = u64::from_le_bytes(bytes[sum_at..sum_at + 8].try_into().expect("8 bytes"));
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            return Err(SnapshotError::Checksum);
        }
        let body: Body =
            rmp_serde::from_slice(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut router = builder.build();
        for i in body.instances {
            let blocks: Vec<(Medium, Vec<SequenceHash>)> =
                i.blocks.into_iter().map(|b| (b.medium, b.hashes)).collect();
            router.restore_instance(i.instance, i.next_event_id.max(1), i.policy, &blocks);
        }
        Ok(router)
    }
}
