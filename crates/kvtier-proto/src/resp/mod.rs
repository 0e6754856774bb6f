//! RESP2, the Redis protocol, for kvtier's Redis-compatible port: what it parses, recognises
//! and writes. Like the rest of the crate it owns no sockets.
//!
//! - [`parse_command`] / [`parse_command_into`]: one client command from a growing buffer
//!   (multibulk or inline); [`command_len`]: its length as soon as it is known (a framer),
//!   `None` until complete, limited by [`RespLimits`]; a [`RespError`] is fatal for the
//!   connection (reply [`RespError::reply_text`] and close, as redis-server does).
//! - [`Command::from_args`]: the commands served (PING, ECHO, GET, SET with
//!   NX/XX/GET/EX/PX/EXAT/PXAT/KEEPTTL, MGET, EXISTS, DEL, SCAN with MATCH/COUNT/TYPE, INFO,
//!   DBSIZE, SELECT 0, QUIT, and the connect-time CONFIG GET, CLIENT SETNAME/GETNAME/SETINFO/ID,
//!   COMMAND [COUNT|DOCS], HELLO answered in RESP2 or with NOPROTO); a [`CommandError`] is answered and the connection continues.
//! - [`Reply`], [`write_bulk`], [`write_array_len`], [`scan_reply`], [`config_get_reply`]:
//!   replies into a [`crate::WriteBuf`], bulk payloads borrowed for `writev`.
//! - [`glob_match`]: SCAN MATCH patterns with redis' semantics.
//!
//! # Example
//!
//! ```
//! use kvtier_proto::WriteBuf;
//! use kvtier_proto::resp::{parse_command, Command, Reply, RespLimits};
//!
//! let received = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
//! let limits = RespLimits::default();
//! let mut stored: Option<Vec<u8>> = None;
//! let mut offset = 0;
//! let mut replies = Vec::new();
//! while let Some(parsed) = parse_command(&received[offset..], &limits)? {
//!     offset += parsed.consumed;
//!     match Command::from_args(&parsed.args) {
//!         Ok(Command::Set(set)) => { stored = Some(set.value.to_vec()); replies.push(b"+OK\r\n".to_vec()) }
//!         Ok(Command::Get(_)) => {
//!             let mut out = WriteBuf::new();
//!             stored.as_deref().map_or(Reply::Null, Reply::Bulk).encode(&mut out);
//!             replies.push(out.to_vec());
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! assert_eq!(offset, received.len());
//! assert_eq!(replies[1], b"$5\r\nvalue\r\n");
//! # Ok::<(), kvtier_proto::resp::RespError>(())
//! ```

use std::borrow::Cow;

mod command;
mod glob;
mod parse;
mod reply;

pub use command::{
    ClientCommand, Command, CommandError, CommandInfo, Expiry, Hello, Scan, Set, SetCondition,
};
pub use glob::glob_match;
pub use parse::{Parsed, command_len, parse_command, parse_command_into};
pub use reply::{
    DEFAULT_CONFIG, Reply, config_get_reply, hello_reply, scan_reply, write_array_len, write_bulk,
    write_integer,
};

/// One command argument: borrowed from the receive buffer, or owned when an inline argument
/// had escapes.
pub type Arg<'a> = Cow<'a, [u8]>;

/// Bounds the RESP parser enforces.
///
/// # Examples
///
/// ```
/// use kvtier_proto::resp::RespLimits;
/// let limits = RespLimits { max_bulk_len: 4 << 20, ..RespLimits::default() };
/// assert_eq!(limits.max_inline_len, 64 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string (the configured value limit). Default 64 MiB.
    pub max_bulk_len: usize,
    /// Most arguments in one command. Default 1,048,576 (redis' own).
    pub max_array_len: usize,
    /// Longest inline command line. Default 64 KiB (redis' own).
    pub max_inline_len: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_bulk_len: 64 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Bytes that are not a RESP command, or break a limit. The connection cannot continue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespError {
    /// `*` not followed by a valid count line.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// More arguments than [`RespLimits::max_array_len`].
    #[error("multibulk length {len} exceeds the limit of {max}")]
    ArrayTooLong {
        /// The count received.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An array element that is not a bulk string.
    #[error("expected '$', got '{}'", char::from(*got))]
    ExpectedBulk {
        /// The byte found.
        got: u8,
    },
    /// `$` not followed by a valid length line.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A bulk longer than [`RespLimits::max_bulk_len`].
    #[error("bulk length {len} exceeds the limit of {max}")]
    BulkTooLong {
        /// The length received.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A bulk's bytes not followed by CRLF.
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    /// An inline line longer than [`RespLimits::max_inline_len`].
    #[error("too big inline request (over {max} bytes)")]
    InlineTooLong {
        /// The limit.
        max: usize,
    },
    /// An inline quote that does not close properly.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl RespError {
    /// The error reply to send before closing (without the leading `-`), in redis-server's
    /// words.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_proto::resp::{parse_command, RespLimits};
    /// let err = parse_command(b"*1\r\n+PING\r\n", &RespLimits::default()).unwrap_err();
    /// assert_eq!(err.reply_text(), "ERR Protocol error: expected '$', got '+'");
    /// ```
    pub fn reply_text(&self) -> String {
        format!("ERR Protocol error: {self}")
    }
}
