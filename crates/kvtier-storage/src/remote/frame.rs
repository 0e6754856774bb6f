//! The frame every G4 value is stored in: a 56-byte header, then the payload.
//!
//! This module owns the byte format and its checks; it does no I/O. A frame read back from an
//! external store is untrusted: [`decode`] never panics and says what is wrong in a small
//! error value.
//!
//! ```text
//! offset  size  field (little-endian)
//!      0     4  magic b"KVG4"
//!      4     1  format version (1)
//!      5     1  kind (1 = block, 2 = manifest)
//!      6     2  reserved, zero
//!      8     8  payload length in bytes
//!     16     8  namespace tag (Namespace::tag)
//!     24    16  key: the block's sequence hash, or xxh3-128 of a manifest's name
//!     40     8  expiry, ms since the Unix epoch (0 = none; manifests in object stores)
//!     48     8  checksum: xxh3-64 of the payload, seeded with xxh3-64 of bytes 0..48
//!     56     -  payload
//! ```
//!
//! Seeding the payload checksum with the header's own hash makes it cover every header field
//! at the cost of hashing 48 extra bytes.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Bytes of a frame's header.
pub(crate) const HEADER_BYTES: usize = 56;
const MAGIC: [u8; 4] = *b"KVG4";
const FORMAT_VERSION: u8 = 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Block = 1,
    Manifest = 2,
}

/// The fields a reader expects a frame to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expect {
    pub kind: Kind,
    pub namespace: u64,
    pub key: u128,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("value of {0} bytes is shorter than a frame header")]
    Short(usize),
    /// Not a kvtier G4 frame, or a format version this build does not read.
    #[error("not a kvtier G4 frame of a known version")]
    BadMagic,
    /// A frame of another kind, namespace or key than the one asked for.
    #[error("frame belongs to another kind, namespace or key")]
    WrongOwner,
    /// The header's length disagrees with the bytes present or the length expected.
    #[error("frame says {declared} payload bytes; {actual} present, {expected:?} expected")]
    Length {
        /// Length in the header.
        declared: u64,
        /// Payload bytes actually present.
        actual: usize,
        /// Length the caller expects, when it knows one.
        expected: Option<usize>,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch")]
    Checksum,
}

/// The header of a frame around `payload` (its checksum covers `payload`).
///
/// Callers that can send the header and the payload as two pieces (the Redis backend writes
/// both straight into its request buffer) use this instead of [`encode`] and skip one copy of
/// the payload.
pub(crate) fn header(expect: Expect, expiry_ms: u64, payload: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = expect.kind as u8;
    h[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[16..24].copy_from_slice(&expect.namespace.to_le_bytes());
    h[24..40].copy_from_slice(&expect.key.to_le_bytes());
    h[40..48].copy_from_slice(&expiry_ms.to_le_bytes());
    let sum = xxh3_64_with_seed(payload, xxh3_64(&h[..48]));
    h[48..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Builds a frame around `payload`: [`header`], then the payload, in one buffer.
pub(crate) fn encode(expect: Expect, expiry_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&header(expect, expiry_ms, payload));
    out.extend_from_slice(payload);
    out
}

/// A checked frame: its expiry and where its payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    pub expiry_ms: u64,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks `frame` (magic, version, owner, length, checksum) and returns its payload.
///
/// `expected_len` is the payload length the caller needs (a block's size), if any.
pub(crate) fn decode(
    frame: &[u8],
    expect: Expect,
    expected_len: Option<usize>,
) -> Result<(Checked, &[u8]), FrameError> {
    if frame.len() < HEADER_BYTES {
        return Err(FrameError::Short(frame.len()));
    }
    if frame[..4] != MAGIC || frame[4] != FORMAT_VERSION {
        return Err(FrameError::BadMagic);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&frame[24..40]);
    if frame[5] != expect.kind as u8
        || u64_at(frame, 16) != expect.namespace
        || u128::from_le_bytes(key) != expect.key
    {
        return Err(FrameError::WrongOwner);
    }
    let declared = u64_at(frame, 8);
    let payload = &frame[HEADER_BYTES..];
    let length_ok = u64::try_from(payload.len()).is_ok_and(|n| n == declared)
        && expected_len.is_none_or(|n| n == payload.len());
    if !length_ok {
        return Err(FrameError::Length {
            declared,
            actual: payload.len(),
            expected: expected_len,
        });
    }
    if xxh3_64_with_seed(payload, xxh3_64(&frame[..48])) != u64_at(frame, 48) {
        return Err(FrameError::Checksum);
    }
    Ok((
        Checked {
            expiry_ms: u64_at(frame, 40),
        },
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Expect = Expect {
        kind: Kind::Block,
        namespace: 7,
        key: 0xabcd,
    };

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let payload: Vec<u8> = (0..200u8).collect();
        let frame = encode(E, 0, &payload);
        let (checked, back) = decode(&frame, E, Some(200)).expect("valid frame");
        assert_eq!((checked.expiry_ms, back), (0, &payload[..]));
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&bad, E, Some(200)).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn header_is_the_encoded_frames_prefix() {
        let payload = [9u8; 77];
        let frame = encode(E, 3, &payload);
        assert_eq!(&frame[..HEADER_BYTES], &header(E, 3, &payload)[..]);
        assert_eq!(&frame[HEADER_BYTES..], &payload[..]);
    }

    #[test]
    fn length_owner_and_short_frames_are_refused() {
        let frame = encode(E, 5, b"hello");
        assert!(matches!(
            decode(&frame, E, Some(6)),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            decode(&frame[..frame.len() - 1], E, None),
            Err(FrameError::Length { .. })
        ));
        assert_eq!(decode(&frame[..10], E, None), Err(FrameError::Short(10)));
        let other = Expect { namespace: 8, ..E };
        assert_eq!(decode(&frame, other, None), Err(FrameError::WrongOwner));
        let manifest = Expect {
            kind: Kind::Manifest,
            ..E
        };
        assert_eq!(decode(&frame, manifest, None), Err(FrameError::WrongOwner));
        assert_eq!(decode(&frame, E, None).map(|(c, _)| c.expiry_ms), Ok(5));
    }
}
