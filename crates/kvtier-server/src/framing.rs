//! Where one frame ends: the [`Framer`] trait that cuts a byte stream into frames, kvtier's
//! binary framer and a newline framer (tests, simple text protocols).
//!
//! A framer only answers "how long is the frame that starts here?"; it never copies, decodes or
//! allocates. The IO threads call it on the bytes received so far and check the answer against
//! the listener's `max_frame_bytes` *before* buffering the body, so a huge length costs
//! nothing. What a frame means is the [`Service`](crate::Service)'s business.
//!
//! # Invariants
//!
//! - `frame_len(buf)` returns `Ok(Some(n))` with `n >= 1` as soon as the length is known,
//!   possibly before `buf` holds the whole frame (`n > buf.len()`): the IO layer then reads the
//!   body straight into a buffer of `n` bytes.
//! - `Ok(None)` means "need more bytes"; it is only legal while `buf` cannot yet tell the
//!   length. A framer that needs the whole frame to know its length (a line) keeps returning
//!   `None`; the IO layer stops it at `max_frame_bytes`.
//! - Errors are final: the connection gets the service's error frame and is closed.

use std::fmt;

/// Why a connection's byte stream cannot be cut into frames; the connection is closed after
/// the service's [`malformed`](crate::Service::malformed) reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The announced frame length is above the listener's limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length (whole frame); for length-less framers, the bytes buffered so far.
        len: u64,
        /// The listener's `max_frame_bytes`.
        max: usize,
    },
    /// The announced frame length is below the header size.
    #[error("frame length {len} is below the minimum of {min} bytes")]
    TooShort {
        /// Announced length.
        len: u64,
        /// Smallest legal frame.
        min: usize,
    },
    /// The frame announces a protocol version this server does not speak.
    #[error("unsupported protocol version {version}")]
    Version {
        /// The version byte received.
        version: u8,
    },
    /// Any other violation of the framing rules (for framers other than the binary one).
    #[error("malformed frame: {reason}")]
    Invalid {
        /// Human-readable reason, for the error frame and the log.
        reason: String,
    },
}

/// Cuts a byte stream into frames. One framer per listener; shared by all IO threads.
///
/// # Examples
///
/// ```
/// use kvtier_server::{BinaryFramer, Framer};
///
/// let mut frame = vec![0u8; 20];
/// frame[..4].copy_from_slice(&20u32.to_le_bytes());
/// frame[4] = 1; // version
/// let framer = BinaryFramer::new();
/// assert_eq!(framer.frame_len(&frame[..3]), Ok(None)); // length not in yet
/// assert_eq!(framer.frame_len(&frame[..5]), Ok(Some(20))); // known before the body is in
/// ```
pub trait Framer: Send + Sync + fmt::Debug + 'static {
    /// Length in bytes of the frame starting at `buf[0]`, `None` while `buf` is too short to
    /// tell.
    ///
    /// # Errors
    ///
    /// A [`FramingError`] when the bytes cannot start a legal frame.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError>;
}

/// Size of kvtier's binary frame header: `len: u32, version: u8, opcode: u8, flags: u16,
/// request_id: u64`, little-endian.
pub const BINARY_HEADER_LEN: usize = 16;

/// The only binary protocol version this framer accepts by default.
pub const BINARY_VERSION: u8 = 1;

/// kvtier's binary framing: a 16-byte little-endian header whose first field, `len: u32`, is
/// the whole frame's length (header included), then `len - 16` payload bytes.
///
/// The length is known from the first 4 bytes; the version byte is checked as soon as it is
/// in (byte 4).
#[derive(Debug, Clone, Copy)]
pub struct BinaryFramer {
    version: u8,
}

impl BinaryFramer {
    /// A framer accepting protocol version [`BINARY_VERSION`].
    pub fn new() -> Self {
        Self::with_version(BINARY_VERSION)
    }

    /// A framer accepting protocol version `version` only.
    pub fn with_version(version: u8) -> Self {
        Self { version }
    }
}

impl Default for BinaryFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer for BinaryFramer {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        let Some(len_bytes) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len_bytes);
        if (len as usize) < BINARY_HEADER_LEN {
            return Err(FramingError::TooShort {
                len: u64::from(len),
                min: BINARY_HEADER_LEN,
            });
        }
        if let Some(&version) = buf.get(4)
            && version != self.version
        {
            return Err(FramingError::Version { version });
        }
        Ok(Some(len as usize))
    }
}

/// Newline-terminated frames (`\n` included in the frame). For tests and simple text
/// protocols; the length is only known once the newline is in.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFramer;

impl Framer for LineFramer {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        Ok(buf.iter().position(|&b| b == b'\n').map(|i| i + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, version: u8) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4] = version;
        h
    }

    #[test]
    fn binary_length_known_from_four_bytes() {
        let f = BinaryFramer::new();
        let h = header(1 << 20, 1);
        for cut in 0..4 {
            assert_eq!(f.frame_len(&h[..cut]), Ok(None));
        }
        assert_eq!(f.frame_len(&h[..4]), Ok(Some(1 << 20)));
        assert_eq!(f.frame_len(&h), Ok(Some(1 << 20)));
    }

    #[test]
    fn binary_rejects_short_length_and_wrong_version() {
        let f = BinaryFramer::new();
        assert_eq!(
            f.frame_len(&header(15, 1)),
            Err(FramingError::TooShort { len: 15, min: 16 })
        );
        assert_eq!(
            f.frame_len(&header(16, 2)),
            Err(FramingError::Version { version: 2 })
        );
        assert_eq!(f.frame_len(&header(16, 1)), Ok(Some(16)));
        assert_eq!(
            BinaryFramer::with_version(2).frame_len(&header(16, 2)),
            Ok(Some(16))
        );
    }

    #[test]
    fn line_framer_cuts_after_newline() {
        assert_eq!(LineFramer.frame_len(b"abc"), Ok(None));
        assert_eq!(LineFramer.frame_len(b"abc\ndef\n"), Ok(Some(4)));
        assert_eq!(LineFramer.frame_len(b"\n"), Ok(Some(1)));
    }
}
