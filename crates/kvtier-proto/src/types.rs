//! The value types frames carry: tier codes, per-block statuses, and the zero-copy lists of
//! hashes and blocks.
//!
//! [`HashList`], [`PutBlocks`] and [`GetBlocks`] have two forms behind one API: *typed* (built
//! by a sender from its own slices, encoded without copying block bytes) and *wire* (a
//! decoded view over the received frame, validated once at decode time, iterated without
//! allocating). The two forms of equal content compare equal.

use kvtier_core::{Medium, SequenceHash};

use crate::ProtoError;

/// Bytes of one sequence hash on the wire (`u128`, little-endian).
pub const HASH_BYTES: usize = 16;
/// Bytes of one PUT index entry: hash `u128` + block length `u32`.
pub const PUT_ENTRY_BYTES: usize = HASH_BYTES + 4;
/// Bytes of one GET reply index entry: tier `u8` (0 = missing) + length `u32`.
pub const GET_ENTRY_BYTES: usize = 5;

/// A storage tier as one byte on the wire (`1..=4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TierId {
    /// 1: accelerator memory.
    G1 = 1,
    /// 2: host memory.
    G2 = 2,
    /// 3: local disk.
    G3 = 3,
    /// 4: external store.
    G4 = 4,
}

impl TierId {
    /// Every tier, fastest first.
    pub const ALL: [TierId; 4] = [TierId::G1, TierId::G2, TierId::G3, TierId::G4];

    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        self as u8
    }

    /// The tier of a wire byte; `None` outside `1..=4`.
    pub const fn from_u8(v: u8) -> Option<TierId> {
        match v {
            1 => Some(TierId::G1),
            2 => Some(TierId::G2),
            3 => Some(TierId::G3),
            4 => Some(TierId::G4),
            _ => None,
        }
    }

    /// The medium of the tier (as kvtier-core and the event stream name it).
    pub const fn medium(self) -> Medium {
        match self {
            TierId::G1 => Medium::Gpu,
            TierId::G2 => Medium::Cpu,
            TierId::G3 => Medium::Disk,
            TierId::G4 => Medium::External,
        }
    }

    /// The tier of a medium (`None` for a medium added after this crate).
    pub fn from_medium(medium: Medium) -> Option<TierId> {
        TierId::ALL.into_iter().find(|t| t.medium() == medium)
    }
}

/// A set of tiers as a bitmask byte (bit 0 = G1 ... bit 3 = G4; bits 4..8 must be 0).
///
/// # Examples
///
/// ```
/// use kvtier_proto::{TierId, TierSet};
/// let set = TierSet::EMPTY.with(TierId::G3).with(TierId::G2);
/// assert_eq!(set.fastest(), Some(TierId::G2));
/// assert_eq!(set.bits(), 0b0110);
/// assert!(TierSet::from_bits(0x10).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TierSet(u8);

impl TierSet {
    /// No tier (the block is absent).
    pub const EMPTY: TierSet = TierSet(0);

    /// The set of valid bits.
    pub const MASK: u8 = 0x0F;

    /// The set with `tier` added.
    pub const fn with(self, tier: TierId) -> TierSet {
        TierSet(self.0 | (1 << (tier as u8 - 1)))
    }

    /// Whether `tier` is in the set.
    pub const fn contains(self, tier: TierId) -> bool {
        self.0 & (1 << (tier as u8 - 1)) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The fastest tier in the set.
    pub fn fastest(self) -> Option<TierId> {
        TierId::ALL.into_iter().find(|t| self.contains(*t))
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set of a wire byte; `None` if bits above G4 are set.
    pub const fn from_bits(bits: u8) -> Option<TierSet> {
        if bits & !Self::MASK == 0 {
            Some(TierSet(bits))
        } else {
            None
        }
    }
}

/// What happened to one block of a PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutStatus {
    /// 0: stored now.
    Stored,
    /// 1: the hash was already stored; the bytes sent were not used.
    AlreadyPresent,
    /// 2: no space (every slot in use and nothing evictable).
    NoSpace,
    /// 3: the block's length is not the namespace's block size (or is over its gate).
    BadSize,
}

impl PutStatus {
    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            PutStatus::Stored => 0,
            PutStatus::AlreadyPresent => 1,
            PutStatus::NoSpace => 2,
            PutStatus::BadSize => 3,
        }
    }

    /// The status of a wire byte; `None` for an undefined value.
    pub const fn from_u8(v: u8) -> Option<PutStatus> {
        match v {
            0 => Some(PutStatus::Stored),
            1 => Some(PutStatus::AlreadyPresent),
            2 => Some(PutStatus::NoSpace),
            3 => Some(PutStatus::BadSize),
            _ => None,
        }
    }
}

fn read_hash(bytes: &[u8]) -> SequenceHash {
    let mut raw = [0u8; HASH_BYTES];
    if let Some(src) = bytes.get(..HASH_BYTES) {
        raw.copy_from_slice(src);
    }
    SequenceHash::from_u128(u128::from_le_bytes(raw))
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(src) = bytes.get(..4) {
        raw.copy_from_slice(src);
    }
    u32::from_le_bytes(raw)
}

#[derive(Clone, Copy, Debug)]
enum HashRepr<'a> {
    Wire(&'a [u8]),
    Typed(&'a [SequenceHash]),
}

/// A list of sequence hashes: borrowed from the sender's slice, or a view over a frame.
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
/// use kvtier_proto::HashList;
/// let hashes = [SequenceHash::root(1), SequenceHash::root(2)];
/// let list = HashList::new(&hashes);
/// assert_eq!(list.len(), 2);
/// assert_eq!(list.get(1), Some(SequenceHash::root(2)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct HashList<'a>(HashRepr<'a>);

impl<'a> HashList<'a> {
    /// A list to encode, borrowing `hashes`.
    pub fn new(hashes: &'a [SequenceHash]) -> Self {
        HashList(HashRepr::Typed(hashes))
    }

    /// A view over `count * 16` wire bytes (length checked by the caller).
    pub(crate) fn from_wire(bytes: &'a [u8]) -> Self {
        HashList(HashRepr::Wire(bytes))
    }

    /// Number of hashes.
    pub fn len(&self) -> usize {
        match self.0 {
            HashRepr::Wire(b) => b.len() / HASH_BYTES,
            HashRepr::Typed(h) => h.len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash at `index`.
    pub fn get(&self, index: usize) -> Option<SequenceHash> {
        match self.0 {
            HashRepr::Wire(b) => {
                let start = index.checked_mul(HASH_BYTES)?;
                b.get(start..start.checked_add(HASH_BYTES)?).map(read_hash)
            }
            HashRepr::Typed(h) => h.get(index).copied(),
        }
    }

    /// The hashes in order.
    pub fn iter(&self) -> HashIter<'a> {
        HashIter(match self.0 {
            HashRepr::Wire(b) => HashIterRepr::Wire(b.chunks_exact(HASH_BYTES)),
            HashRepr::Typed(h) => HashIterRepr::Typed(h.iter()),
        })
    }

    /// The hashes collected into a vector.
    pub fn to_vec(&self) -> Vec<SequenceHash> {
        self.iter().collect()
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self.0 {
            HashRepr::Wire(b) => out.extend_from_slice(b),
            HashRepr::Typed(h) => {
                for hash in h {
                    out.extend_from_slice(&hash.as_u128().to_le_bytes());
                }
            }
        }
    }
}

/// Iterator over a [`HashList`].
#[derive(Clone, Debug)]
pub struct HashIter<'a>(HashIterRepr<'a>);

#[derive(Clone, Debug)]
enum HashIterRepr<'a> {
    Wire(std::slice::ChunksExact<'a, u8>),
    Typed(std::slice::Iter<'a, SequenceHash>),
}

impl Iterator for HashIter<'_> {
    type Item = SequenceHash;

    fn next(&mut self) -> Option<SequenceHash> {
        match &mut self.0 {
            HashIterRepr::Wire(chunks) => chunks.next().map(read_hash),
            HashIterRepr::Typed(iter) => iter.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            HashIterRepr::Wire(chunks) => chunks.size_hint(),
            HashIterRepr::Typed(iter) => iter.size_hint(),
        }
    }
}

impl ExactSizeIterator for HashIter<'_> {}

impl PartialEq for HashList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HashList<'_> {}

#[derive(Clone, Copy, Debug)]
enum PutRepr<'a> {
    Wire {
        index: &'a [u8],
        data: &'a [u8],
    },
    Typed {
        hashes: &'a [SequenceHash],
        blocks: &'a [&'a [u8]],
    },
}

/// The blocks of a PUT: the sender's hashes and block slices, or a view over a frame whose
/// block bytes are borrowed from it.
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
/// use kvtier_proto::PutBlocks;
/// let hashes = [SequenceHash::root(1)];
/// let block = vec![0u8; 4096];
/// let blocks = [block.as_slice()];
/// let put = PutBlocks::new(&hashes, &blocks)?;
/// assert_eq!(put.data_len(), 4096);
/// assert!(PutBlocks::new(&hashes, &[]).is_err());
/// # Ok::<(), kvtier_proto::ProtoError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PutBlocks<'a>(PutRepr<'a>);

impl<'a> PutBlocks<'a> {
    /// Blocks to encode: `blocks[i]` is the block of `hashes[i]`.
    ///
    /// # Errors
    ///
    /// [`ProtoError::LengthMismatch`] when the two slices differ in length.
    pub fn new(hashes: &'a [SequenceHash], blocks: &'a [&'a [u8]]) -> Result<Self, ProtoError> {
        if hashes.len() != blocks.len() {
            return Err(ProtoError::LengthMismatch {
                what: "hashes and blocks given to PutBlocks",
                declared: hashes.len() as u64,
                actual: blocks.len() as u64,
            });
        }
        Ok(PutBlocks(PutRepr::Typed { hashes, blocks }))
    }

    /// A view; `index` is `count * 20` bytes whose lengths sum to `data.len()` (checked by
    /// the decoder).
    pub(crate) fn from_wire(index: &'a [u8], data: &'a [u8]) -> Self {
        PutBlocks(PutRepr::Wire { index, data })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        match self.0 {
            PutRepr::Wire { index, .. } => index.len() / PUT_ENTRY_BYTES,
            PutRepr::Typed { hashes, .. } => hashes.len(),
        }
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total block bytes.
    pub fn data_len(&self) -> usize {
        match self.0 {
            PutRepr::Wire { data, .. } => data.len(),
            PutRepr::Typed { blocks, .. } => blocks.iter().map(|b| b.len()).sum(),
        }
    }

    /// The blocks in order: each hash with its bytes (borrowed, never copied).
    pub fn iter(&self) -> impl Iterator<Item = (SequenceHash, &'a [u8])> + 'a {
        let this = *self;
        let mut offset = 0usize;
        (0..self.len()).map(move |i| match this.0 {
            PutRepr::Wire { index, data } => {
                let entry = index.get(i * PUT_ENTRY_BYTES..).unwrap_or_default();
                let len = read_u32(entry.get(HASH_BYTES..).unwrap_or_default()) as usize;
                let bytes = data.get(offset..offset + len).unwrap_or_default();
                offset += len;
                (read_hash(entry), bytes)
            }
            PutRepr::Typed { hashes, blocks } => (
                hashes.get(i).copied().unwrap_or_default(),
                blocks.get(i).copied().unwrap_or_default(),
            ),
        })
    }
}

impl PartialEq for PutBlocks<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PutBlocks<'_> {}

/// One entry of a GET reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockResult<'a> {
    /// The hash is not stored (not an error: a miss).
    Missing,
    /// The block, and the tier it was read from.
    Found {
        /// Where the bytes came from.
        tier: TierId,
        /// The block bytes.
        bytes: &'a [u8],
    },
}

#[derive(Clone, Copy, Debug)]
enum GetRepr<'a> {
    Wire { index: &'a [u8], data: &'a [u8] },
    Typed(&'a [BlockResult<'a>]),
}

/// The entries of a GET reply, in request order: the server's results (block bytes borrowed
/// from its storage), or a view over a received frame.
#[derive(Clone, Copy, Debug)]
pub struct GetBlocks<'a>(GetRepr<'a>);

impl<'a> GetBlocks<'a> {
    /// Results to encode, one per requested hash.
    pub fn new(results: &'a [BlockResult<'a>]) -> Self {
        GetBlocks(GetRepr::Typed(results))
    }

    /// A view; `index` is `count * 5` bytes validated by the decoder.
    pub(crate) fn from_wire(index: &'a [u8], data: &'a [u8]) -> Self {
        GetBlocks(GetRepr::Wire { index, data })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self.0 {
            GetRepr::Wire { index, .. } => index.len() / GET_ENTRY_BYTES,
            GetRepr::Typed(r) => r.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = BlockResult<'a>> + 'a {
        let this = *self;
        let mut offset = 0usize;
        (0..self.len()).map(move |i| match this.0 {
            GetRepr::Wire { index, data } => {
                let entry = index.get(i * GET_ENTRY_BYTES..).unwrap_or_default();
                let len = read_u32(entry.get(1..).unwrap_or_default()) as usize;
                match entry.first().copied().and_then(TierId::from_u8) {
                    None => BlockResult::Missing,
                    Some(tier) => {
                        let bytes = data.get(offset..offset + len).unwrap_or_default();
                        offset += len;
                        BlockResult::Found { tier, bytes }
                    }
                }
            }
            GetRepr::Typed(r) => r.get(i).copied().unwrap_or(BlockResult::Missing),
        })
    }
}

impl PartialEq for GetBlocks<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for GetBlocks<'_> {}
