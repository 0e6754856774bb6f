//! Block checksums, and overlapping them with the I/O they guard.
//!
//! The checksum is xxh3-64 of the block's bytes, seeded with the block's hash and write
//! generation (so an older version of the block, or another block's bytes, fail as surely as
//! flipped bits). Hashing 16 MiB costs about as long as copying it into the page cache, so for
//! batches of at least [`PARALLEL_MIN_BYTES`] the tier hashes on a second thread while the
//! first one does the I/O: writes hash while the data is written and synced; reads are cut into
//! pieces of [`PIECE_BYTES`] and each piece is verified while the next one is read.

use std::sync::mpsc;

use super::DiskError;
use super::files::DataFiles;

/// Batches smaller than this hash on the calling thread (a thread costs more than it saves).
pub(crate) const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Reads are issued in pieces of about this many bytes (whole blocks) when pipelined.
pub(crate) const PIECE_BYTES: usize = 2 << 20;

/// The checksum stored for a block.
pub(crate) fn checksum(hash: u128, generation: u64, bytes: &[u8]) -> u64 {
    let seed = (hash as u64)
        ^ ((hash >> 64) as u64).rotate_left(29)
        ^ generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// Runs `io` on this thread and `hash` on a scoped second one when `bytes` is large enough,
/// else one after the other; returns both results.
pub(crate) fn overlap<A: Send, B: Send>(
    bytes: usize,
    io: impl FnOnce() -> A + Send,
    hash: impl FnOnce() -> B + Send,
) -> (A, B) {
    if bytes < PARALLEL_MIN_BYTES {
        return (io(), hash());
    }
    std::thread::scope(|scope| {
        let hashing = scope.spawn(hash);
        let io = io();
        let hashed = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (io, hashed)
    })
}

/// One read: blocks `first..first + count` of the output buffer, from consecutive slots
/// starting at `slot`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub(crate) first: usize,
    pub(crate) count: usize,
    pub(crate) slot: u64,
}

/// Reads every piece into `out` (pieces in ascending, disjoint order) and returns, for each
/// block index in a piece, whether `check(index, bytes)` accepted it. Verification of a piece
/// overlaps the read of the next one when the total is large enough.
///
/// # Errors
///
/// The first read error; blocks read before it are not reported.
pub(crate) fn read_and_verify(
    files: &DataFiles,
    block: usize,
    pieces: &[Piece],
    out: &mut [u8],
    check: impl Fn(usize, &[u8]) -> bool + Sync,
) -> Result<Vec<(usize, bool)>, DiskError> {
    let total: usize = pieces.iter().map(|p| p.count * block).sum();
    let verify = |first: usize, bytes: &[u8], into: &mut Vec<(usize, bool)>| {
        for (k, chunk) in bytes.chunks_exact(block).enumerate() {
            into.push((first + k, check(first + k, chunk)));
        }
    };
    let mut verdicts = Vec::new();
    if total < PARALLEL_MIN_BYTES || pieces.len() < 2 {
        for piece in pieces {
            let bytes = &mut out[piece.first * block..(piece.first + piece.count) * block];
            files.read(piece.slot, bytes)?;
            verify(piece.first, bytes, &mut verdicts);
        }
        return Ok(verdicts);
    }
    std::thread::scope(|scope| {
        let (send, receive) = mpsc::channel::<(usize, &[u8])>();
        let verifier = scope.spawn(move || {
            let mut verdicts = Vec::new();
            for (first, bytes) in receive {
                verify(first, bytes, &mut verdicts);
            }
            verdicts
        });
        let mut rest: &mut [u8] = out;
        let mut at = 0;
        let mut failure = None;
        for piece in pieces {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((piece.first - at) * block);
            let (bytes, tail) = tail.split_at_mut(piece.count * block);
            rest = tail;
            at = piece.first + piece.count;
            if let Err(e) = files.read(piece.slot, bytes) {
                failure = Some(e);
                break;
            }
            let bytes: &[u8] = bytes;
            if send.send((piece.first, bytes)).is_err() {
                break;
            }
        }
        drop(send);
        let verdicts = verifier
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        failure.map_or(Ok(verdicts), Err)
    })
}
