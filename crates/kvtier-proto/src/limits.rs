//! [`Limits`]: the bounds a decoder enforces on untrusted frames.
//!
//! Every count and length in a frame is checked against these and against the bytes actually
//! present before anything is allocated, so a peer cannot make a receiver allocate more than
//! the frame it sent.

/// Bounds on what a frame may contain. Both sides should use the same values (the server
/// announces its own in the HELLO reply).
///
/// # Examples
///
/// ```
/// use kvtier_proto::Limits;
/// let limits = Limits { max_blocks_per_request: 64, ..Limits::default() };
/// assert_eq!(limits.max_frame_bytes, Limits::DEFAULT_MAX_FRAME_BYTES);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (header included). Default [`Limits::DEFAULT_MAX_FRAME_BYTES`]
    /// (64 MiB + 1 MiB of metadata room: sixteen 4 MiB blocks with their index).
    pub max_frame_bytes: u32,
    /// Most blocks (PUT, GET) or hashes (MATCH, EXISTS, DELETE) in one frame. Default 16,384
    /// (a 256k-token context in 16-token blocks).
    pub max_blocks_per_request: u32,
    /// Longest HELLO namespace, in bytes. Default 255.
    pub max_namespace_len: usize,
    /// Longest HELLO auth token, in bytes. Default 4,096.
    pub max_token_len: usize,
    /// Longest text field otherwise (error message, server name, stat name). Default 4,096.
    pub max_text_len: usize,
    /// Most counters in a STATS reply. Default 1,024.
    pub max_stats_entries: u32,
}

impl Limits {
    /// Default of [`Limits::max_frame_bytes`]: 65 MiB.
    pub const DEFAULT_MAX_FRAME_BYTES: u32 = 65 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_blocks_per_request: 16_384,
            max_namespace_len: 255,
            max_token_len: 4_096,
            max_text_len: 4_096,
            max_stats_entries: 1_024,
        }
    }
}
