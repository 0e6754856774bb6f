//! [`NodeError`]: why a node did not start, or why a request could not be served.

use kvtier_proto::ErrorCode;

/// Errors of a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A configuration value is unusable; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// A storage tier could not be opened or failed a write that must not fail.
    #[error("storage: {0}")]
    Storage(String),
    /// A durable PUT on a node without a disk tier.
    #[error("durable PUT refused: this node has no disk tier (disk_bytes = 0)")]
    NotDurable,
    /// The IO runtime could not start or stop.
    #[error("server: {0}")]
    Server(#[from] kvtier_server::ServerError),
    /// A thread could not be started.
    #[error("thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl NodeError {
    /// The wire code a request failing with this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::NotDurable => ErrorCode::NoSpace,
            _ => ErrorCode::Internal,
        }
    }
}
