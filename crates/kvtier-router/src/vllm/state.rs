//! [`VllmSourceState`]: what a [`crate::VllmSource`] needs to resume after a restart, and its
//! byte format.
//!
//! Per data-parallel rank: the sequence number of the last batch applied, and its converter's
//! next event id, group-filter decisions, block map (fingerprint → kvtier hash, parent, copies)
//! and ghost queue. Stores waiting for a parent are not carried (they are few and bounded; a
//! restored source starts with none). Pure data: no sockets, no runtime.
//!
//! ```text
//! "KVTVSRC\0" │ LE32 version (1) │ LE64 body length │ body │ LE64 XXH3-64(everything before)
//! body = LE32 len, name │ LE32 ranks │ per rank:
//!        LE64 rank (i64) │ u8 has_seq, LE64 last seq │ LE64 next event id
//!        LE32 groups, (LE64 group, u8 indexed)* │ LE64 entries, (LE64 fp, LE128 hash,
//!        LE64 parent fp, 4 × LE16 copies)* │ LE64 ghosts, (LE64 fp)*
//! ```
//!
//! Decoding checks the magic, version, length and checksum first, then every count against
//! the bytes left before allocating: garbage gives a [`VllmStateError`], never a panic.

use xxhash_rust::xxh3::xxh3_64;

use super::convert::{ConverterState, MapEntry};

const MAGIC: &[u8; 8] = b"KVTVSRC\0";
const VERSION: u32 = 1;
/// Bytes of one map entry in the body.
const ENTRY_BYTES: usize = 8 + 16 + 8 + 8;

/// A source state could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VllmStateError {
    /// The bytes end before the state does.
    #[error("source state truncated")]
    Truncated,
    /// The bytes do not start with the state's magic.
    #[error("not a kvtier vLLM source state")]
    BadMagic,
    /// A version this build cannot read.
    #[error("unsupported source state version {found}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error("source state checksum mismatch")]
    Checksum,
    /// The body is inconsistent.
    #[error("malformed source state: {what}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
    },
}

/// One rank's part of a [`VllmSourceState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RankState {
    pub(crate) rank: i64,
    pub(crate) last_applied: Option<u64>,
    pub(crate) converter: ConverterState,
}

/// The state of a [`crate::VllmSource`], consistent with every message it had sent when taken
/// ([`crate::VllmSourceHandle::state`]); a source built with
/// [`crate::VllmSourceBuilder::with_state`] resumes from it.
///
/// # Examples
///
/// ```
/// use kvtier_router::VllmSourceState;
///
/// let state = VllmSourceState::empty("engine-a");
/// let bytes = state.to_bytes();
/// assert_eq!(VllmSourceState::from_bytes(&bytes)?, state);
/// assert!(VllmSourceState::from_bytes(&bytes[..bytes.len() - 1]).is_err());
/// # Ok::<(), kvtier_router::VllmStateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VllmSourceState {
    pub(crate) name: String,
    pub(crate) ranks: Vec<RankState>,
}

impl VllmSourceState {
    /// The state of a source called `name` that has seen nothing.
    pub fn empty(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ranks: Vec::new(),
        }
    }

    /// The name of the source it was taken from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many data-parallel ranks it holds.
    pub fn ranks(&self) -> usize {
        self.ranks.len()
    }

    /// How many blocks its converters' maps hold, ghosts included.
    pub fn entries(&self) -> usize {
        self.ranks.iter().map(|r| r.converter.entries.len()).sum()
    }

    /// The state as bytes (see the module docs): versioned and checksummed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.entries() * ENTRY_BYTES);
        put_u32(&mut body, len32(self.name.len()));
        body.extend_from_slice(self.name.as_bytes());
        put_u32(&mut body, len32(self.ranks.len()));
        for rank in &self.ranks {
            body.extend_from_slice(&rank.rank.to_le_bytes());
            body.push(u8::from(rank.last_applied.is_some()));
            put_u64(&mut body, rank.last_applied.unwrap_or(0));
            let conv = &rank.converter;
            put_u64(&mut body, conv.next_event_id);
            put_u32(&mut body, len32(conv.groups.len()));
            for (group, indexed) in &conv.groups {
                body.extend_from_slice(&group.to_le_bytes());
                body.push(u8::from(*indexed));
            }
            put_u64(&mut body, conv.entries.len() as u64);
            for (fp, entry) in &conv.entries {
                let (hash, parent, copies) = entry.parts();
                put_u64(&mut body, *fp);
                body.extend_from_slice(&hash.to_le_bytes());
                put_u64(&mut body, parent);
                for c in copies {
                    body.extend_from_slice(&c.to_le_bytes());
                }
            }
            put_u64(&mut body, conv.ghosts.len() as u64);
            for fp in &conv.ghosts {
                put_u64(&mut body, *fp);
            }
        }
        let mut out = Vec::with_capacity(body.len() + 28);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, VERSION);
        put_u64(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        let sum = xxh3_64(&out);
        put_u64(&mut out, sum);
        out
    }

    /// Reads a state written by [`VllmSourceState::to_bytes`].
    ///
    /// # Errors
    ///
    /// A [`VllmStateError`] for anything else; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VllmStateError> {
        let mut r = Reader { bytes };
        if r.take(8)? != MAGIC {
            return Err(VllmStateError::BadMagic);
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(VllmStateError::UnsupportedVersion { found: version });
        }
        let body_len = usize::try_from(r.u64()?).map_err(|_| VllmStateError::Truncated)?;
        if r.bytes.len() != body_len.checked_add(8).ok_or(VllmStateError::Truncated)? {
            return Err(if r.bytes.len() < body_len.saturating_add(8) {
                VllmStateError::Truncated
            } else {
                VllmStateError::Malformed {
                    what: "bytes after the checksum",
                }
            });
        }
        let summed = bytes.len() - 8;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[summed..]);
        if xxh3_64(&bytes[..summed]) != u64::from_le_bytes(sum) {
            return Err(VllmStateError::Checksum);
        }
        let mut r = Reader {
            bytes: &r.bytes[..body_len],
        };
        let name_len = r.u32()? as usize;
        let name = String::from_utf8(r.take(name_len)?.to_vec()).map_err(|_| {
            VllmStateError::Malformed {
                what: "name is not UTF-8",
            }
        })?;
        let rank_count = r_u32_len(&mut r)?;
        let rank_count = r.count(rank_count, 8 + 9 + 8 + 4 + 8 + 8)?;
        let mut ranks = Vec::with_capacity(rank_count);
        for _ in 0..rank_count {
            let rank = r.u64()? as i64;
            let has_seq = r.u8()?;
            let seq = r.u64()?;
            let last_applied = match has_seq {
                0 => None,
                1 => Some(seq),
                _ => {
                    return Err(VllmStateError::Malformed {
                        what: "sequence flag",
                    });
                }
            };
            let next_event_id = r.u64()?;
            let group_count = r_u32_len(&mut r)?;
            let group_count = r.count(group_count, 9)?;
            let mut groups = Vec::with_capacity(group_count);
            for _ in 0..group_count {
                let group = r.u64()? as i64;
                let indexed = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(VllmStateError::Malformed { what: "group flag" }),
                };
                groups.push((group, indexed));
            }
            let entry_count = r_u64_len(&mut r)?;
            let entry_count = r.count(entry_count, ENTRY_BYTES)?;
            let mut entries = Vec::with_capacity(entry_count);
            for _ in 0..entry_count {
                let fp = r.u64()?;
                let hash = u128::from(r.u64()?) | (u128::from(r.u64()?) << 64);
                let parent = r.u64()?;
                let mut copies = [0u16; 4];
                for c in &mut copies {
                    *c = r.u16()?;
                }
                entries.push((fp, MapEntry::from_parts(hash, parent, copies)));
            }
            let ghost_count = r_u64_len(&mut r)?;
            let ghost_count = r.count(ghost_count, 8)?;
            let mut ghosts = Vec::with_capacity(ghost_count);
            for _ in 0..ghost_count {
                ghosts.push(r.u64()?);
            }
            ranks.push(RankState {
                rank,
                last_applied,
                converter: ConverterState {
                    next_event_id,
                    groups,
                    entries,
                    ghosts,
                },
            });
        }
        if !r.bytes.is_empty() {
            return Err(VllmStateError::Malformed {
                what: "bytes after the last rank",
            });
        }
        Ok(Self { name, ranks })
    }
}

fn r_u32_len(r: &mut Reader<'_>) -> Result<usize, VllmStateError> {
    Ok(r.u32()? as usize)
}

fn r_u64_len(r: &mut Reader<'_>) -> Result<usize, VllmStateError> {
    usize::try_from(r.u64()?).map_err(|_| VllmStateError::Truncated)
}

fn len32(n: usize) -> u32 {
    // Names, ranks (≤ 1024) and groups are far below 4 G.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], VllmStateError> {
        if self.bytes.len() < n {
            return Err(VllmStateError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], VllmStateError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, VllmStateError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, VllmStateError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, VllmStateError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, VllmStateError> {
        self.array().map(u64::from_le_bytes)
    }

    /// `n` items of at least `min_bytes` each must fit in what is left.
    fn count(&self, n: usize, min_bytes: usize) -> Result<usize, VllmStateError> {
        if n.checked_mul(min_bytes)
            .is_none_or(|needed| needed > self.bytes.len())
        {
            return Err(VllmStateError::Truncated);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> VllmSourceState {
        VllmSourceState {
            name: "engine-a".into(),
            ranks: vec![
                RankState {
                    rank: 0,
                    last_applied: Some(41),
                    converter: ConverterState {
                        next_event_id: 17,
                        groups: vec![(0, true), (1, false)],
                        entries: vec![
                            (5, MapEntry::from_parts(u128::MAX - 3, 0, [1, 0, 2, 0])),
                            (6, MapEntry::from_parts(99, 5, [0; 4])),
                        ],
                        ghosts: vec![6],
                    },
                },
                RankState {
                    rank: -1,
                    last_applied: None,
                    converter: ConverterState::default(),
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let state = sample();
        let bytes = state.to_bytes();
        assert_eq!(VllmSourceState::from_bytes(&bytes).unwrap(), state);
        assert_eq!(state.entries(), 2);
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(
            VllmSourceState::from_bytes(&flipped),
            Err(VllmStateError::Checksum)
        );
        let mut versioned = bytes.clone();
        versioned[8] = 9;
        assert_eq!(
            VllmSourceState::from_bytes(&versioned),
            Err(VllmStateError::UnsupportedVersion { found: 9 })
        );
        assert_eq!(
            VllmSourceState::from_bytes(b"not a state at all"),
            Err(VllmStateError::BadMagic)
        );
        for len in 0..bytes.len() {
            assert!(VllmSourceState::from_bytes(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn huge_counts_behind_a_valid_checksum_are_rejected() {
        // A body claiming 2^60 entries, checksummed correctly.
        let mut body = Vec::new();
        put_u32(&mut body, 0);
        put_u32(&mut body, 1);
        body.extend_from_slice(&0i64.to_le_bytes());
        body.push(0);
        put_u64(&mut body, 0);
        put_u64(&mut body, 1);
        put_u32(&mut body, 0);
        put_u64(&mut body, 1 << 60);
        let mut bytes = MAGIC.to_vec();
        put_u32(&mut bytes, VERSION);
        put_u64(&mut bytes, body.len() as u64);
        bytes.extend_from_slice(&body);
        let sum = xxh3_64(&bytes);
        put_u64(&mut bytes, sum);
        assert_eq!(
            VllmSourceState::from_bytes(&bytes),
            Err(VllmStateError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = VllmSourceState::from_bytes(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = VllmSourceState::from_bytes(&framed);
        }
    }
}
