//! Framing shared by requests and responses: writing a header around a payload into a
//! [`WriteBuf`], and splitting a received frame into header and payload.

use crate::{FrameHeader, HEADER_LEN, Limits, ProtoError, WriteBuf};

/// Starts a frame: reserves the header in the metadata buffer. Returns where it starts.
pub(crate) fn begin(buf: &mut WriteBuf<'_>) -> usize {
    let meta = buf.meta_mut();
    let start = meta.len();
    meta.extend_from_slice(&[0u8; HEADER_LEN]);
    start
}

/// Ends the metadata part of a frame begun at `start`, whose borrowed data (pushed next by the
/// caller) will add `data_len` bytes: checks the size limit, writes the header, commits the
/// metadata. On error the metadata is rolled back and `buf` is as before [`begin`].
pub(crate) fn finish(
    buf: &mut WriteBuf<'_>,
    start: usize,
    header: &FrameHeader,
    data_len: usize,
    limits: &Limits,
) -> Result<(), ProtoError> {
    let meta = buf.meta_mut();
    let total = (meta.len() - start) as u64 + data_len as u64;
    if total > u64::from(limits.max_frame_bytes) {
        meta.truncate(start);
        return Err(ProtoError::FrameTooLarge {
            len: total,
            max: limits.max_frame_bytes,
        });
    }
    let mut bytes = [0u8; HEADER_LEN];
    header.write(&mut bytes, total as u32);
    if let Some(dst) = meta.get_mut(start..start + HEADER_LEN) {
        dst.copy_from_slice(&bytes);
    }
    buf.commit_meta(start);
    Ok(())
}

/// Rolls back a frame begun at `start` whose payload could not be encoded.
pub(crate) fn abort(buf: &mut WriteBuf<'_>, start: usize) {
    buf.meta_mut().truncate(start);
}

/// Splits one whole frame into its checked header and its payload.
///
/// # Errors
///
/// Header errors ([`FrameHeader::parse_limited`]); [`ProtoError::Truncated`] when `frame` is
/// shorter than the header says, [`ProtoError::TrailingBytes`] when longer.
pub fn split_frame<'a>(
    frame: &'a [u8],
    limits: &Limits,
) -> Result<(FrameHeader, &'a [u8]), ProtoError> {
    let Some(header) = FrameHeader::parse_limited(frame, limits.max_frame_bytes)? else {
        return Err(ProtoError::Truncated {
            what: "frame header",
            needed: HEADER_LEN,
            available: frame.len(),
        });
    };
    let len = header.len as usize;
    if frame.len() < len {
        return Err(ProtoError::Truncated {
            what: "frame",
            needed: len - HEADER_LEN,
            available: frame.len() - HEADER_LEN,
        });
    }
    if frame.len() > len {
        return Err(ProtoError::TrailingBytes {
            count: frame.len() - len,
        });
    }
    Ok((header, frame.get(HEADER_LEN..).unwrap_or_default()))
}
