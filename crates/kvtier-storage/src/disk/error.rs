//! The disk tier's error values.
//!
//! Every failure of the G3 tier is one of these: wrong input from the caller, a store opened with
//! the wrong settings, a block that failed its checksum, or an I/O or index error from below.
//! None of them is raised as a panic.

use std::path::PathBuf;

use kvtier_core::SequenceHash;

/// An error from the G3 disk tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The configuration cannot describe a tier (zero sizes, overflowing file sizes, ...).
    #[error("invalid disk tier config: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// The directory holds a tier created with other settings (namespace, block size, ...).
    #[error(
        "disk tier at {} was created with {field} = {stored}, refusing to open it with {requested}",
        path.display()
    )]
    ConfigMismatch {
        /// The tier's directory.
        path: PathBuf,
        /// Which setting differs.
        field: &'static str,
        /// The value the tier was created with.
        stored: String,
        /// The value asked for now.
        requested: String,
    },
    /// A block or buffer whose length is not the tier's block size (times the batch length).
    #[error("buffer is {got} bytes, the tier expects {expected}")]
    WrongSize {
        /// The length the tier expects.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// A batch holding more distinct blocks than the tier has slots.
    #[error("batch of {blocks} blocks exceeds the tier's capacity of {capacity} blocks")]
    BatchTooLarge {
        /// Distinct blocks in the batch.
        blocks: usize,
        /// The tier's capacity in blocks.
        capacity: u64,
    },
    /// The block's bytes failed their checksum: the block was dropped from the index, counted,
    /// and its bytes were not handed out.
    #[error("block {hash} failed its checksum on read: dropped, not served")]
    Corrupt {
        /// The block that was dropped.
        hash: SequenceHash,
    },
    /// A file operation failed (a full disk or a file-size limit shows up here).
    #[error("disk tier I/O failed while {op}: {source}")]
    Io {
        /// What the tier was doing.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded index (redb) failed.
    #[error("disk tier index failed: {0}")]
    Index(#[source] Box<redb::Error>),
}

impl DiskError {
    /// An [`DiskError::Io`] for `op`.
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> DiskError {
        move |source| DiskError::Io { op, source }
    }

    /// An [`DiskError::Index`] from any of redb's error types.
    pub(crate) fn index(err: impl Into<redb::Error>) -> DiskError {
        DiskError::Index(Box::new(err.into()))
    }
}
