//! [`ClientError`]: everything a client call can fail with.
//!
//! Which errors leave the connection usable:
//!
//! | error | connection afterwards |
//! |---|---|
//! | [`ClientError::Server`] with `fatal: false` | usable: the server refused this request only |
//! | [`ClientError::Server`] with `fatal: true` | closed (the server closes after a fatal ERROR frame) |
//! | [`ClientError::Timeout`] waiting for a reply | usable: a late reply is still matched by its request id |
//! | [`ClientError::Timeout`] writing a request | closed (part of a frame may have been sent) |
//! | [`ClientError::Request`] (a request over the limits) | usable: nothing was sent |
//! | [`ClientError::Proto`] (a received frame does not parse), [`ClientError::Io`] | closed |
//! | [`ClientError::UnexpectedReply`], [`ClientError::BadReply`] | usable (the frame was whole) |
//! | [`ClientError::Closed`] | closed; every later call gets it too |
//!
//! [`ClientError::is_fatal`] says which case a value is.

use std::time::Duration;

use kvtier_proto::{ErrorCode, Opcode, ProtoError};

/// A client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed (connect, read or write). The connection is closed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame from the server does not parse. The connection is closed: the stream cannot
    /// be trusted past it.
    #[error("protocol error in a frame from the server: {0}")]
    Proto(ProtoError),
    /// The request cannot be encoded: it breaks the limits negotiated at HELLO (too many
    /// blocks, a frame too large, a namespace too long). Nothing was sent; split the batch.
    #[error("request refused before sending: {0}")]
    Request(ProtoError),
    /// The server answered the request with an ERROR frame.
    #[error("server error {code:?}{}: {message}", if *.fatal { " (fatal)" } else { "" })]
    Server {
        /// The wire code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// Whether the server closes the connection after it; the client is then closed.
        fatal: bool,
    },
    /// The connection is closed: by the server, after an error, or by [`close`]. Every call
    /// made afterwards fails with this.
    ///
    /// [`close`]: crate::Client::close
    #[error("connection closed: {reason}")]
    Closed {
        /// Why, including the error that closed it.
        reason: String,
    },
    /// No reply (or no progress reading or writing one) within the configured timeout.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The server answered with a reply of another kind than the request's.
    #[error("unexpected {got:?} reply to a {expected:?} request")]
    UnexpectedReply {
        /// The request's opcode.
        expected: Opcode,
        /// The reply's opcode.
        got: Opcode,
    },
    /// The reply has the right kind but not the right shape (e.g. a count that differs from
    /// the request's).
    #[error("bad reply: {reason}")]
    BadReply {
        /// What is wrong.
        reason: String,
    },
    /// The ticket or subscription does not belong to this client, or was already consumed.
    #[error("request {id} is not outstanding on this connection")]
    UnknownRequest {
        /// Its request id.
        id: u64,
    },
}

impl ClientError {
    /// Whether the connection is unusable after this error (see the module table).
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Proto(_) | ClientError::Closed { .. } => true,
            ClientError::Server { fatal, .. } => *fatal,
            // A write timeout also closes the client; `is_closed` tells that case apart.
            ClientError::Request(_)
            | ClientError::Timeout { .. }
            | ClientError::UnexpectedReply { .. }
            | ClientError::BadReply { .. }
            | ClientError::UnknownRequest { .. } => false,
        }
    }

    pub(crate) fn closed(reason: impl Into<String>) -> Self {
        ClientError::Closed {
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_reply(reason: impl Into<String>) -> Self {
        ClientError::BadReply {
            reason: reason.into(),
        }
    }
}
