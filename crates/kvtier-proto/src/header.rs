//! The 16-byte frame header every request and response starts with, and the opcodes.
//!
//! ```text
//!  0        4    5      6       8                16
//! +--------+----+------+-------+----------------+----------------------+
//! | len u32| ver|opcode| flags |  request_id u64 | payload (len - 16)   |
//! +--------+----+------+-------+----------------+----------------------+
//! ```
//!
//! All integers little-endian. `len` counts the whole frame, header included. A request opcode
//! is in `0x01..=0x7F`; its response carries `opcode | 0x80`; `0xFF` is the ERROR frame.
//! Parsing checks everything the header alone can tell: length floor (and ceiling, given a
//! limit), version, opcode, and flags defined for that opcode.

use crate::ProtoError;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// The protocol version this crate speaks (header byte 4).
pub const VERSION: u8 = 1;

/// The operations. A response uses the request's opcode with the high bit set
/// ([`Opcode::response_byte`]); [`Opcode::Error`] is `0xFF` in both directions' sense (it
/// only ever travels from server to client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Opcode {
    /// `0x01`: open a session (version, namespace, optional token).
    Hello,
    /// `0x02`: store blocks.
    Put,
    /// `0x03`: fetch blocks.
    Get,
    /// `0x04`: longest cached prefix of a hash list, with tiers.
    Match,
    /// `0x05`: which tiers hold each hash.
    Exists,
    /// `0x06`: remove blocks.
    Delete,
    /// `0x07`: server counters.
    Stats,
    /// `0x08`: follow the block-event stream.
    Subscribe,
    /// `0x09`: stop a subscription.
    Unsubscribe,
    /// `0x0A`: liveness check; the payload is echoed.
    Ping,
    /// `0xFF`: an error (server to client only).
    Error,
}

impl Opcode {
    /// Every request opcode, in wire order.
    pub const REQUESTS: [Opcode; 10] = [
        Opcode::Hello,
        Opcode::Put,
        Opcode::Get,
        Opcode::Match,
        Opcode::Exists,
        Opcode::Delete,
        Opcode::Stats,
        Opcode::Subscribe,
        Opcode::Unsubscribe,
        Opcode::Ping,
    ];

    /// The request byte (`0x01..=0x7F`); `0xFF` for [`Opcode::Error`].
    pub const fn request_byte(self) -> u8 {
        match self {
            Opcode::Hello => 0x01,
            Opcode::Put => 0x02,
            Opcode::Get => 0x03,
            Opcode::Match => 0x04,
            Opcode::Exists => 0x05,
            Opcode::Delete => 0x06,
            Opcode::Stats => 0x07,
            Opcode::Subscribe => 0x08,
            Opcode::Unsubscribe => 0x09,
            Opcode::Ping => 0x0A,
            Opcode::Error => 0xFF,
        }
    }

    /// The response byte: `request_byte | 0x80` (`0xFF` for [`Opcode::Error`]).
    pub const fn response_byte(self) -> u8 {
        self.request_byte() | 0x80
    }

    /// The flag bits this opcode defines (others must be 0), for a request or a response.
    pub const fn allowed_flags(self, response: bool) -> u16 {
        match (self, response) {
            (Opcode::Hello, false) => flags::HELLO_HAS_TOKEN,
            (Opcode::Put, false) => flags::PUT_DURABLE,
            (Opcode::Error, _) => flags::ERROR_FATAL,
            _ => 0,
        }
    }

    /// Decodes an opcode byte: the operation and whether it is a response.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_proto::Opcode;
    /// assert_eq!(Opcode::from_byte(0x83), Some((Opcode::Get, true)));
    /// assert_eq!(Opcode::from_byte(0x03), Some((Opcode::Get, false)));
    /// assert_eq!(Opcode::from_byte(0x42), None);
    /// ```
    pub fn from_byte(byte: u8) -> Option<(Opcode, bool)> {
        if byte == 0xFF {
            return Some((Opcode::Error, true));
        }
        let response = byte & 0x80 != 0;
        let op = Self::REQUESTS
            .into_iter()
            .find(|op| op.request_byte() == byte & 0x7F)?;
        Some((op, response))
    }
}

/// The flag bits defined by version 1.
pub mod flags {
    /// HELLO request: the payload carries an auth token.
    pub const HELLO_HAS_TOKEN: u16 = 0x0001;
    /// PUT request: acknowledge only once the blocks are durable (written to the disk tier
    /// and synced), so they survive a crash of the server.
    pub const PUT_DURABLE: u16 = 0x0001;
    /// ERROR frame: the connection closes after this frame.
    pub const ERROR_FATAL: u16 = 0x0001;
}

/// A parsed and checked frame header.
///
/// # Examples
///
/// ```
/// use kvtier_proto::{FrameHeader, Opcode, HEADER_LEN};
///
/// let header = FrameHeader::request(Opcode::Stats, 0, 42);
/// let mut bytes = [0u8; HEADER_LEN];
/// header.write(&mut bytes, HEADER_LEN as u32);
/// let parsed = FrameHeader::parse(&bytes)?.expect("16 bytes are a whole header");
/// assert_eq!(parsed.request_id, 42);
/// assert_eq!(parsed.len as usize, HEADER_LEN);
/// assert_eq!(FrameHeader::parse(&bytes[..10])?, None); // need more bytes
/// # Ok::<(), kvtier_proto::ProtoError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whole frame length, header included (filled in by [`FrameHeader::parse`]; encoders
    /// compute it).
    pub len: u32,
    /// The operation.
    pub opcode: Opcode,
    /// Whether this is a response (`opcode | 0x80`, or the ERROR frame).
    pub response: bool,
    /// Flag bits, all defined for the opcode.
    pub flags: u16,
    /// The client's id for the request, echoed by its responses.
    pub request_id: u64,
}

impl FrameHeader {
    /// A request header (length 0 until written).
    pub fn request(opcode: Opcode, flags: u16, request_id: u64) -> Self {
        FrameHeader {
            len: 0,
            opcode,
            response: opcode == Opcode::Error,
            flags,
            request_id,
        }
    }

    /// A response header (length 0 until written).
    pub fn response(opcode: Opcode, flags: u16, request_id: u64) -> Self {
        FrameHeader {
            len: 0,
            opcode,
            response: true,
            flags,
            request_id,
        }
    }

    /// The opcode byte as sent.
    pub fn opcode_byte(&self) -> u8 {
        if self.response {
            self.opcode.response_byte()
        } else {
            self.opcode.request_byte()
        }
    }

    /// Parses the header at the start of `buf`: `Ok(None)` while fewer than
    /// [`HEADER_LEN`] bytes are there.
    ///
    /// Checks `len >= 16`, the version, the opcode and the flags; it does **not** check `len`
    /// against a maximum (use [`FrameHeader::parse_limited`] or [`frame_len`] on a receive
    /// path).
    ///
    /// # Errors
    ///
    /// [`ProtoError::FrameTooShort`], [`ProtoError::UnsupportedVersion`],
    /// [`ProtoError::UnknownOpcode`], [`ProtoError::UnknownFlags`].
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, ProtoError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if (len as usize) < HEADER_LEN {
            return Err(ProtoError::FrameTooShort { len });
        }
        if h[4] != VERSION {
            return Err(ProtoError::UnsupportedVersion { version: h[4] });
        }
        let (opcode, response) =
            Opcode::from_byte(h[5]).ok_or(ProtoError::UnknownOpcode { opcode: h[5] })?;
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if flags & !opcode.allowed_flags(response) != 0 {
            return Err(ProtoError::UnknownFlags {
                opcode: h[5],
                flags,
            });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[8..16]);
        Ok(Some(FrameHeader {
            len,
            opcode,
            response,
            flags,
            request_id: u64::from_le_bytes(id),
        }))
    }

    /// [`FrameHeader::parse`], plus `len <= max_frame_bytes`.
    ///
    /// # Errors
    ///
    /// As [`FrameHeader::parse`], and [`ProtoError::FrameTooLarge`].
    pub fn parse_limited(
        buf: &[u8],
        max_frame_bytes: u32,
    ) -> Result<Option<FrameHeader>, ProtoError> {
        let header = Self::parse(buf)?;
        if let Some(h) = header
            && h.len > max_frame_bytes
        {
            return Err(ProtoError::FrameTooLarge {
                len: u64::from(h.len),
                max: max_frame_bytes,
            });
        }
        Ok(header)
    }

    /// Writes the header with the given whole-frame length into `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN], len: u32) {
        out[0..4].copy_from_slice(&len.to_le_bytes());
        out[4] = VERSION;
        out[5] = self.opcode_byte();
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
    }
}

/// The request id of the frame at the start of `buf` without checking anything else, so a
/// server can echo it in the ERROR frame for a frame whose header is bad. `None` before 16
/// bytes are there.
///
/// # Examples
///
/// ```
/// use kvtier_proto::{peek_request_id, FrameHeader};
/// let mut bad = [0u8; 16];
/// bad[8] = 42; // version 0, opcode 0: FrameHeader::parse refuses it
/// assert!(FrameHeader::parse(&bad).is_err());
/// assert_eq!(peek_request_id(&bad), Some(42));
/// ```
pub fn peek_request_id(buf: &[u8]) -> Option<u64> {
    let h = buf.first_chunk::<HEADER_LEN>()?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[8..16]);
    Some(u64::from_le_bytes(id))
}

/// For a receive buffer that starts at a frame boundary: the length of the first frame once
/// its header is there (`Ok(None)` before that). The server reads until `buf.len()` reaches it.
///
/// # Errors
///
/// Any header error of [`FrameHeader::parse_limited`] with `max_frame_bytes`: the stream cannot
/// be trusted past it, so the connection should get an ERROR frame and close.
///
/// # Examples
///
/// ```
/// use kvtier_proto::{frame_len, ProtoError};
/// let mut buf = vec![40, 0, 0, 0, 1, 0x07, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
/// assert_eq!(frame_len(&buf[..4], 1 << 20)?, None);
/// assert_eq!(frame_len(&buf, 1 << 20)?, Some(40));
/// buf[0] = 0xFF; buf[3] = 0xFF;
/// assert!(matches!(frame_len(&buf, 1 << 20), Err(ProtoError::FrameTooLarge { .. })));
/// # Ok::<(), ProtoError>(())
/// ```
pub fn frame_len(buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, ProtoError> {
    Ok(FrameHeader::parse_limited(buf, max_frame_bytes)?.map(|h| h.len as usize))
}
