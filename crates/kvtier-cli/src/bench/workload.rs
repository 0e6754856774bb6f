//! What `kvtier bench` asks of a server: the operation mix, the block size, the keyspace, and
//! the per-connection choice of the next operation.
//!
//! A [`Mix`] is three integer weights, `put:get:match`; each connection draws its next
//! operation and key from its own seeded generator, so two runs with the same arguments send
//! the same sequence.

use std::fmt;
use std::str::FromStr;

/// Hashes per MATCH request (the "32-hash prefixes").
pub const MATCH_HASHES: usize = 32;

/// The largest block `kvtier bench` sends (the server's default frame limit is larger).
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// Relative weights of PUT, GET and MATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of PUT (Redis: SET).
    pub put: u32,
    /// Weight of GET.
    pub get: u32,
    /// Weight of MATCH (a 32-hash prefix lookup; kvtier and raw TCP only).
    pub matches: u32,
}

impl Mix {
    fn total(self) -> u32 {
        self.put + self.get + self.matches
    }

    /// The operation that `draw` (uniform in `0..u32::MAX`) selects.
    pub fn pick(self, draw: u32) -> OpKind {
        let at = ((u64::from(draw) * u64::from(self.total())) >> 32) as u32;
        if at < self.put {
            OpKind::Put
        } else if at < self.put + self.get {
            OpKind::Get
        } else {
            OpKind::Match
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(format!("mix {s:?}: expected put:get:match, e.g. 1:1:0"));
        }
        let weight = |i: usize, name: &str| {
            parts[i]
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| {
                    format!("mix {s:?}: {name} weight {:?} is not 0..=1000000", parts[i])
                })
        };
        let mix = Mix {
            put: weight(0, "put")?,
            get: weight(1, "get")?,
            matches: weight(2, "match")?,
        };
        if mix.total() == 0 {
            return Err(format!("mix {s:?}: every weight is 0"));
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.put, self.get, self.matches)
    }
}

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Store one block.
    Put,
    /// Fetch one block.
    Get,
    /// Longest cached prefix of [`MATCH_HASHES`] hashes.
    Match,
}

/// One request: its kind and the key (block number in `0..keyspace`) it names. A MATCH names
/// the prefix `key, key + 1, ...` (wrapping in the keyspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// What to do.
    pub kind: OpKind,
    /// Which block (or the first block of the prefix).
    pub key: u64,
}

/// A small deterministic generator (SplitMix64) per connection.
#[derive(Clone, Debug)]
pub struct OpSource {
    state: u64,
    mix: Mix,
    keyspace: u64,
}

impl OpSource {
    /// The generator of connection `conn`.
    pub fn new(mix: Mix, keyspace: u64, conn: usize) -> Self {
        Self {
            state: 0x9E37_79B9_7F4A_7C15 ^ (conn as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            mix,
            keyspace: keyspace.max(1),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next request.
    pub fn next_op(&mut self) -> Op {
        let r = self.next_u64();
        let kind = self.mix.pick((r >> 32) as u32);
        let key = ((u128::from(r & 0xFFFF_FFFF) * u128::from(self.keyspace)) >> 32) as u64;
        Op { kind, key }
    }
}

/// The keyspace used when none is given: at most 10,000 blocks and at most 1 GiB of them.
pub fn default_keyspace(block_bytes: usize) -> u64 {
    ((1u64 << 30) / block_bytes.max(1) as u64).clamp(1, 10_000)
}

/// Writes the stamp that lets a reader check it got the block it asked for: the key in the
/// first and last 8 bytes (fewer for blocks under 16 bytes).
pub fn stamp(block: &mut [u8], key: u64) {
    let k = key.to_le_bytes();
    let n = block.len().min(8);
    block[..n].copy_from_slice(&k[..n]);
    if block.len() >= 16 {
        let end = block.len();
        block[end - 8..].copy_from_slice(&k);
    }
}

/// Whether `block` carries `key`'s stamp and has `len` bytes.
pub fn stamped(block: &[u8], key: u64, len: usize) -> bool {
    if block.len() != len {
        return false;
    }
    let k = key.to_le_bytes();
    let n = block.len().min(8);
    block[..n] == k[..n] && (block.len() < 16 || block[block.len() - 8..] == k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_bad_ones_are_errors() {
        let m: Mix = "3:1:0".parse().unwrap();
        assert_eq!((m.put, m.get, m.matches), (3, 1, 0));
        assert_eq!(m.to_string(), "3:1:0");
        for bad in [
            "",
            "1:1",
            "1:1:1:1",
            "a:1:0",
            "-1:1:0",
            "0:0:0",
            "1:2000000:0",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn draws_follow_the_weights_and_stay_in_the_keyspace() {
        let mix: Mix = "1:3:0".parse().unwrap();
        let mut ops = OpSource::new(mix, 100, 0);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            let op = ops.next_op();
            assert!(op.key < 100);
            counts[op.kind as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        let gets = f64::from(counts[1]) / 40_000.0;
        assert!((0.72..0.78).contains(&gets), "get share {gets}");
        // Deterministic per connection, different across connections.
        let a: Vec<Op> = (0..8)
            .map(|_| OpSource::new(mix, 100, 1).next_op())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut c0 = OpSource::new(mix, 1 << 40, 0);
        let mut c1 = OpSource::new(mix, 1 << 40, 1);
        assert_ne!(c0.next_op(), c1.next_op());
    }

    #[test]
    fn stamps_round_trip_and_catch_mixups() {
        for len in [1, 7, 8, 15, 16, 4096] {
            let mut b = vec![0u8; len];
            stamp(&mut b, 0x0102_0304_0506_0708);
            assert!(stamped(&b, 0x0102_0304_0506_0708, len));
            assert!(!stamped(&b, 9, len));
            assert!(!stamped(&b, 0x0102_0304_0506_0708, len + 1));
        }
        assert_eq!(default_keyspace(4 << 20), 256);
        assert_eq!(default_keyspace(4096), 10_000);
    }
}
