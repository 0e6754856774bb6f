//! The G4 error type.

use super::FrameError;

/// Why a G4 operation failed. Every failure is also counted in [`G4Stats`](super::G4Stats).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum G4Error {
    /// A namespace field is empty, too long or out of range.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// A manifest name is empty, too long, or has characters other than `[A-Za-z0-9._-]`.
    #[error("invalid manifest name {0:?}")]
    InvalidName(String),
    /// A block or buffer of the wrong size for the namespace.
    #[error("block of {actual} bytes where the namespace holds {expected}")]
    WrongSize {
        /// The namespace's block size.
        expected: usize,
        /// The size given.
        actual: usize,
    },
    /// A stored value failed its check; it was not served.
    #[error("corrupt value under {key}: {source}")]
    Corrupt {
        /// The store key.
        key: String,
        /// What the check found.
        source: FrameError,
    },
    /// The store did not answer within the timeout.
    #[error("external store timed out")]
    Timeout,
    /// The store could not be reached.
    #[error("external store unavailable: {0}")]
    Unavailable(String),
    /// The circuit breaker is open after repeated outages; no request was sent.
    #[error("external store marked down; retrying after a short back-off")]
    BreakerOpen,
    /// The store answered with an error.
    #[error("external store error: {0}")]
    Backend(String),
    /// The store could not be set up from its configuration.
    #[error("external store configuration: {0}")]
    Config(String),
}
