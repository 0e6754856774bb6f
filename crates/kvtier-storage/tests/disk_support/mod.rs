//! Fixtures shared by the disk tier's tests: deterministic block contents and hashes.

#![allow(dead_code, reason = "each test file uses a different subset")]

use kvtier_core::SequenceHash;

/// The hash of test block `i`.
pub fn hash(i: u64) -> SequenceHash {
    SequenceHash::from_u128(((i as u128) << 64) | (i ^ 0x5EED_0000_0000_0001) as u128)
}

/// The bytes of version `version` of test block `i`: an 16-byte header (`i`, `version`) and a
/// SplitMix64 stream seeded by both, so a torn or mixed-up block is recognisable.
pub fn block(i: u64, version: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&i.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.rotate_left(32);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether `bytes` is exactly some version of block `i`; returns that version.
pub fn version_of(i: u64, bytes: &[u8]) -> Option<u64> {
    let version = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    (block(i, version, bytes.len()) == bytes).then_some(version)
}

/// A tiny deterministic generator for test choices (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next value in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}
