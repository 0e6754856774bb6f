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

use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_64_with_seed};

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

/// Checks a header's magic, version, owner and declared length (not the checksum).
fn check_header(
    h: &[u8],
    expect: Expect,
    expected_len: Option<usize>,
    actual: usize,
) -> Result<u64, FrameError> {
    if h[..4] != MAGIC || h[4] != FORMAT_VERSION {
        return Err(FrameError::BadMagic);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&h[24..40]);
    if h[5] != expect.kind as u8
        || u64_at(h, 16) != expect.namespace
        || u128::from_le_bytes(key) != expect.key
    {
        return Err(FrameError::WrongOwner);
    }
    let declared = u64_at(h, 8);
    let length_ok = u64::try_from(actual).is_ok_and(|n| n == declared)
        && expected_len.is_none_or(|n| n == actual);
    if !length_ok {
        return Err(FrameError::Length {
            declared,
            actual,
            expected: expected_len,
        });
    }
    Ok(declared)
}

/// Bytes hashed at a time by [`Receiver`]: the checksum of one chunk runs while the kernel
/// receives the next.
const CHUNK: usize = 64 << 10;

/// Checks a block frame whose bytes arrive in pieces (a backend streaming a reply): the header
/// goes into the receiver's own array, the payload straight into its final place (a caller's
/// buffer), and the checksum is computed chunk by chunk as the bytes land, so it overlaps the
/// transfer instead of following it. Nothing is copied twice.
///
/// Protocol: [`start`](Self::start) with the value's length, then repeatedly
/// [`region`](Self::region) (where the next bytes go; empty once no more are wanted) and
/// [`filled`](Self::filled), then [`finish`](Self::finish).
#[derive(Clone)]
pub(crate) struct Receiver {
    expect: Expect,
    payload_len: usize,
    header: [u8; HEADER_BYTES],
    /// Bytes of the value received so far.
    got: usize,
    hasher: Option<Box<Xxh3>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `start` not called yet.
    Idle,
    /// Receiving a value of this many bytes.
    Receiving(usize),
    /// The key holds no value.
    Absent,
    /// The value was refused; the rest of it is not wanted.
    Refused(FrameError),
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("got", &self.got)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver for a frame of `expect` whose payload must be `payload_len` bytes.
    pub(crate) fn new(expect: Expect, payload_len: usize) -> Self {
        Self {
            expect,
            payload_len,
            header: [0; HEADER_BYTES],
            got: 0,
            hasher: None,
            state: State::Idle,
        }
    }

    /// The value is `len` bytes long (`None`: the key holds no value).
    pub(crate) fn start(&mut self, len: Option<usize>) {
        self.got = 0;
        self.state = match len {
            None => State::Absent,
            Some(n) if n < HEADER_BYTES => State::Refused(FrameError::Short(n)),
            Some(n) => State::Receiving(n),
        };
    }

    /// Where the next bytes of the value go: the rest of the header, or the next chunk of the
    /// payload in `dest` (which must be `payload_len` bytes). Empty when no more bytes are
    /// wanted (the value is complete or refused): the caller discards the rest.
    pub(crate) fn region<'d>(&'d mut self, dest: &'d mut [u8]) -> &'d mut [u8] {
        let State::Receiving(len) = self.state else {
            return &mut [];
        };
        if self.got < HEADER_BYTES {
            return &mut self.header[self.got..];
        }
        let at = self.got - HEADER_BYTES;
        let end = (at + CHUNK).min(len - HEADER_BYTES).min(dest.len());
        if at >= end {
            return &mut [];
        }
        &mut dest[at..end]
    }

    /// The last region handed out has its first `n` bytes filled (`dest` as given there).
    pub(crate) fn filled(&mut self, n: usize, dest: &[u8]) {
        let State::Receiving(len) = self.state else {
            return;
        };
        if self.got < HEADER_BYTES {
            self.got += n;
            if self.got == HEADER_BYTES {
                match check_header(
                    &self.header,
                    self.expect,
                    Some(self.payload_len),
                    len - HEADER_BYTES,
                ) {
                    Ok(_) if dest.len() == self.payload_len => {
                        let seed = xxh3_64(&self.header[..48]);
                        self.hasher = Some(Box::new(Xxh3::with_seed(seed)));
                    }
                    Ok(declared) => {
                        self.state = State::Refused(FrameError::Length {
                            declared,
                            actual: dest.len(),
                            expected: Some(self.payload_len),
                        })
                    }
                    Err(e) => self.state = State::Refused(e),
                }
            }
            return;
        }
        let at = self.got - HEADER_BYTES;
        if let Some(h) = &mut self.hasher {
            h.update(&dest[at..at + n]);
        }
        self.got += n;
    }

    /// The outcome: `Ok(Some(expiry_ms))` for a complete frame whose checksum matches,
    /// `Ok(None)` when the key held no value, the reason otherwise.
    pub(crate) fn finish(&self) -> Result<Option<u64>, FrameError> {
        match self.state {
            State::Absent => Ok(None),
            State::Refused(e) => Err(e),
            State::Idle => Err(FrameError::Short(0)),
            State::Receiving(len) if self.got != len => Err(FrameError::Length {
                declared: u64_at(&self.header, 8),
                actual: self.got.saturating_sub(HEADER_BYTES),
                expected: Some(self.payload_len),
            }),
            State::Receiving(_) => {
                let sum = self.hasher.as_ref().map(|h| h.digest());
                if sum != Some(u64_at(&self.header, 48)) {
                    return Err(FrameError::Checksum);
                }
                Ok(Some(u64_at(&self.header, 40)))
            }
        }
    }
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
    let payload = &frame[HEADER_BYTES..];
    check_header(frame, expect, expected_len, payload.len())?;
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

    /// Feeds `value` to a receiver the way a backend does, at most `piece` bytes per read.
    fn receive(
        value: Option<&[u8]>,
        piece: usize,
        dest: &mut [u8],
    ) -> Result<Option<u64>, FrameError> {
        let mut rx = Receiver::new(E, dest.len());
        rx.start(value.map(<[u8]>::len));
        let value = value.unwrap_or_default();
        let mut at = 0;
        loop {
            let region = rx.region(dest);
            if region.is_empty() {
                break;
            }
            let n = region.len().min(piece).min(value.len() - at);
            region[..n].copy_from_slice(&value[at..at + n]);
            at += n;
            rx.filled(n, dest);
        }
        rx.finish()
    }

    #[test]
    fn receiver_lands_the_payload_in_place_whatever_the_pieces() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let frame = encode(E, 9, &payload);
        for piece in [1, 7, 56, 4096, 1 << 20] {
            let mut dest = vec![0u8; payload.len()];
            assert_eq!(
                receive(Some(&frame), piece, &mut dest),
                Ok(Some(9)),
                "piece {piece}"
            );
            assert!(dest == payload, "piece {piece}: payload differs");
        }
        let mut dest = vec![0u8; 300_000];
        assert_eq!(receive(None, 10, &mut dest), Ok(None));
    }

    #[test]
    fn receiver_refuses_what_decode_refuses() {
        let payload: Vec<u8> = (0..200u8).collect();
        let frame = encode(E, 0, &payload);
        let mut dest = vec![0u8; 200];
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x40;
            assert!(
                receive(Some(&bad), 33, &mut dest).is_err(),
                "flip at byte {i} accepted"
            );
        }
        assert_eq!(
            receive(Some(&frame[..20]), 8, &mut dest),
            Err(FrameError::Short(20))
        );
        assert!(matches!(
            receive(Some(&frame[..frame.len() - 1]), 8, &mut dest),
            Err(FrameError::Length { .. })
        ));
        let mut small = vec![0u8; 199];
        assert!(matches!(
            receive(Some(&frame), 8, &mut small),
            Err(FrameError::Length { .. })
        ));
        let other = encode(Expect { namespace: 8, ..E }, 0, &payload);
        assert_eq!(
            receive(Some(&other), 64, &mut dest),
            Err(FrameError::WrongOwner)
        );
    }
}
