//! Errors of the binary protocol: [`ProtoError`] (what a decoder or encoder found wrong) and
//! [`ErrorCode`] (the stable code an ERROR frame carries on the wire).
//!
//! Every `ProtoError` maps to one `ErrorCode` ([`ProtoError::code`]), so a server answers a bad
//! frame with the code of what was wrong. Codes are part of the wire format: a code's number
//! never changes meaning; new codes get new numbers.

/// Something in a frame (or a frame about to be encoded) breaks the protocol.
///
/// Decoding returns these for any malformed input; nothing in this crate panics on bytes a
/// peer can send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The header's `len` is below [`crate::HEADER_LEN`].
    #[error("frame length {len} is shorter than the 16-byte header")]
    FrameTooShort {
        /// The length the header declared.
        len: u32,
    },
    /// The header's `len` is above the receiver's (or encoder's) maximum frame size.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The length declared (or that the encoded frame would have).
        len: u64,
        /// The limit ([`crate::Limits::max_frame_bytes`]).
        max: u32,
    },
    /// The header's version byte is not one this crate speaks.
    #[error(
        "unsupported protocol version {version} (this side speaks {})",
        crate::VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The opcode byte names no operation (or a response where a request was expected, and
    /// the other way round).
    #[error("unknown or unexpected opcode {opcode:#04x}")]
    UnknownOpcode {
        /// The opcode byte received.
        opcode: u8,
    },
    /// The flags have bits set that the opcode does not define.
    #[error("flags {flags:#06x} are not defined for opcode {opcode:#04x}")]
    UnknownFlags {
        /// The opcode of the frame.
        opcode: u8,
        /// The flags received.
        flags: u16,
    },
    /// The payload ends before a field does.
    #[error("truncated {what}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        available: usize,
    },
    /// A count announces more entries than the rest of the payload can hold.
    #[error("{what} count {count} needs {needed} bytes, only {available} left")]
    CountOverrun {
        /// What is counted.
        what: &'static str,
        /// The count received.
        count: u64,
        /// Bytes the count needs at least.
        needed: u64,
        /// Bytes left in the payload.
        available: usize,
    },
    /// The payload has bytes after its last field.
    #[error("{count} trailing bytes after the payload")]
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A request or response lists more blocks or hashes than the limit.
    #[error("{count} entries exceed the limit of {max} per frame")]
    TooManyBlocks {
        /// The count received.
        count: u64,
        /// The limit ([`crate::Limits::max_blocks_per_request`]).
        max: u32,
    },
    /// A length-prefixed field (namespace, token, message, name) is longer than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    FieldTooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A field holds a value its type does not define (a status byte, a tier code).
    #[error("invalid {what} value {value}")]
    InvalidValue {
        /// The field.
        what: &'static str,
        /// The value received.
        value: u64,
    },
    /// Declared lengths disagree with the bytes present (block lengths against the data
    /// section, or hash and block counts given to an encoder).
    #[error("{what}: declared {declared} bytes, found {actual}")]
    LengthMismatch {
        /// What disagrees.
        what: &'static str,
        /// The declared total.
        declared: u64,
        /// The actual total.
        actual: u64,
    },
}

impl ProtoError {
    /// The wire code an ERROR frame reports for this error.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_proto::{ErrorCode, ProtoError};
    /// assert_eq!(ProtoError::UnsupportedVersion { version: 9 }.code(), ErrorCode::UnsupportedVersion);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtoError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtoError::UnknownOpcode { .. } => ErrorCode::UnknownOpcode,
            ProtoError::UnknownFlags { .. } => ErrorCode::UnknownFlags,
            ProtoError::TooManyBlocks { .. } | ProtoError::FieldTooLong { .. } => {
                ErrorCode::LimitExceeded
            }
            ProtoError::FrameTooShort { .. }
            | ProtoError::Truncated { .. }
            | ProtoError::CountOverrun { .. }
            | ProtoError::TrailingBytes { .. }
            | ProtoError::InvalidUtf8 { .. }
            | ProtoError::InvalidValue { .. }
            | ProtoError::LengthMismatch { .. } => ErrorCode::Malformed,
        }
    }
}

/// The error codes of the ERROR frame (opcode `0xFF`), a `u16` on the wire.
///
/// Codes 1..=15 are defined by protocol version 1; a receiver keeps any other value as
/// [`ErrorCode::Other`] (a newer peer's code), so unknown codes never fail decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: the frame's payload does not parse (truncated, overrun counts, trailing bytes,
    /// bad values).
    Malformed,
    /// 2: the header's version is not spoken by the receiver.
    UnsupportedVersion,
    /// 3: the opcode names no operation.
    UnknownOpcode,
    /// 4: flags the opcode does not define.
    UnknownFlags,
    /// 5: the frame is longer than the receiver's limit.
    FrameTooLarge,
    /// 6: too many blocks, or a field longer than its limit.
    LimitExceeded,
    /// 7: the server requires HELLO (with a token when auth is configured) before this.
    HelloRequired,
    /// 8: the HELLO token was refused.
    AuthFailed,
    /// 9: a block's length differs from the namespace's fixed block size.
    BlockSizeMismatch,
    /// 10: no space left to store the blocks.
    NoSpace,
    /// 11: too many requests in flight; retry later.
    Busy,
    /// 12: the server is shutting down.
    ShuttingDown,
    /// 13: the namespace is not allowed or not known.
    BadNamespace,
    /// 14: the subscription cannot be served (no event stream, or replay failed).
    SubscribeFailed,
    /// 15: a server-side failure (I/O error in a tier...).
    Internal,
    /// A code this side does not know (sent by a newer peer). Build codes with
    /// [`ErrorCode::from_u16`]: `Other(1)` would be sent as 1 and read back as `Malformed`.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::UnknownOpcode => 3,
            ErrorCode::UnknownFlags => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::LimitExceeded => 6,
            ErrorCode::HelloRequired => 7,
            ErrorCode::AuthFailed => 8,
            ErrorCode::BlockSizeMismatch => 9,
            ErrorCode::NoSpace => 10,
            ErrorCode::Busy => 11,
            ErrorCode::ShuttingDown => 12,
            ErrorCode::BadNamespace => 13,
            ErrorCode::SubscribeFailed => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Other(v) => v,
        }
    }

    /// The code for a wire value; unknown values become [`ErrorCode::Other`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_proto::ErrorCode;
    /// assert_eq!(ErrorCode::from_u16(10), ErrorCode::NoSpace);
    /// assert_eq!(ErrorCode::from_u16(999), ErrorCode::Other(999));
    /// ```
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::UnknownOpcode,
            4 => ErrorCode::UnknownFlags,
            5 => ErrorCode::FrameTooLarge,
            6 => ErrorCode::LimitExceeded,
            7 => ErrorCode::HelloRequired,
            8 => ErrorCode::AuthFailed,
            9 => ErrorCode::BlockSizeMismatch,
            10 => ErrorCode::NoSpace,
            11 => ErrorCode::Busy,
            12 => ErrorCode::ShuttingDown,
            13 => ErrorCode::BadNamespace,
            14 => ErrorCode::SubscribeFailed,
            15 => ErrorCode::Internal,
            v => ErrorCode::Other(v),
        }
    }
}
