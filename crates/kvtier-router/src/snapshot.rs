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
//! Saving is two steps so that no file is written under the router's lock:
//! [`Router::snapshot_bytes`] serialises (under the lock, in memory), [`write_snapshot`] writes
//! (after releasing it). The file goes to a temporary sibling with a name of its own (process,
//! counter and time: two saves never share one, whatever the snapshot is called), is synced,
//! renamed into place, and the directory is synced, so a crash leaves either the old snapshot
//! or the new one. Loading checks the magic, version, length and checksum before decoding; a
//! damaged file is an error, never a panic or a partial load, and
//! [`Router::restore_or_empty`] turns it into an empty router plus the reason (a snapshot is a
//! cache of what the instances will tell again, not the source of truth).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

impl SnapshotError {
    /// Whether the snapshot file does not exist (a first start, not damage).
    pub fn is_missing(&self) -> bool {
        matches!(self, SnapshotError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Temporary files made by this process so far (part of each one's unique name).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary sibling of `path` that no other save uses: hidden, named after the snapshot,
/// the process, a per-process counter and the time.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique = format!(
        ".{name}.{}.{}.{nanos}.partial",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    path.with_file_name(unique)
}

/// Writes snapshot `bytes` (from [`Router::snapshot_bytes`]) to `path` atomically: a
/// temporary sibling of its own, synced, renamed over `path`, then the directory synced. Call
/// it without holding the router's lock.
///
/// # Errors
///
/// [`SnapshotError::Io`] when any step fails; the temporary file is then removed and `path`
/// is left as it was.
pub fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let tmp = temp_sibling(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    sync_parent(path)?;
    Ok(())
}

/// Syncs the directory holding `path`, so that the rename survives a crash.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

impl Router {
    /// Writes the router's state to `path` ([`Router::snapshot_bytes`], then
    /// [`write_snapshot`]). A router shared behind a lock serialises under the lock and
    /// writes after releasing it instead.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Io`] when the file cannot be written.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), SnapshotError> {
        write_snapshot(path, &self.snapshot_bytes()?)
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
    /// Any [`SnapshotError`]: a missing, unreadable, truncated, corrupt or foreign file.
    pub fn load_snapshot(builder: RouterBuilder, path: &Path) -> Result<Router, SnapshotError> {
        let body = decode(&std::fs::read(path)?)?;
        Ok(restore(builder, body))
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
        Ok(restore(builder, decode(bytes)?))
    }

    /// A router holding the snapshot at `path` when it can be read, else an empty one, with
    /// what went wrong: a service starts either way (see [`SnapshotError::is_missing`] for a
    /// first start without a snapshot).
    pub fn restore_or_empty(
        builder: RouterBuilder,
        path: &Path,
    ) -> (Router, Option<SnapshotError>) {
        match std::fs::read(path)
            .map_err(SnapshotError::from)
            .and_then(|b| decode(&b))
        {
            Ok(body) => (restore(builder, body), None),
            Err(e) => (builder.build(), Some(e)),
        }
    }
}

/// Checks the framing of a snapshot and decodes its body.
fn decode(bytes: &[u8]) -> Result<Body, SnapshotError> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let (Some(version), Some(len)) = (bytes.get(8..12), bytes.get(12..HEADER)) else {
        return Err(SnapshotError::Truncated {
            expected: HEADER as u64,
            actual: bytes.len() as u64,
        });
    };
    let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
    let expected = (HEADER as u64).saturating_add(len).saturating_add(8);
    let truncated = SnapshotError::Truncated {
        expected,
        actual: bytes.len() as u64,
    };
    if (bytes.len() as u64) < expected {
        return Err(truncated);
    }
    let sum_at = HEADER + len as usize;
    let (Some(body), Some(sum)) = (bytes.get(HEADER..sum_at), bytes.get(sum_at..sum_at + 8)) else {
        return Err(truncated);
    };
    let sum = u64::from_le_bytes(sum.try_into().unwrap_or_default());
    if xxhash_rust::xxh3::xxh3_64(body) != sum {
        return Err(SnapshotError::Checksum);
    }
    rmp_serde::from_slice(body).map_err(|e| SnapshotError::Malformed(e.to_string()))
}

/// A router built by `builder` holding `body`.
fn restore(builder: RouterBuilder, body: Body) -> Router {
    let mut router = builder.build();
    for i in body.instances {
        let blocks: Vec<(Medium, Vec<SequenceHash>)> =
            i.blocks.into_iter().map(|b| (b.medium, b.hashes)).collect();
        router.restore_instance(i.instance, i.next_event_id.max(1), i.policy, &blocks);
    }
    router
}
