//! [`FrameReader`]: pulls whole frames out of a growing receive buffer.
//!
//! Bytes arrive in arbitrary pieces; the reader keeps them in one buffer and hands out each
//! frame once all its bytes are there, borrowed from the buffer (no copy per frame). It
//! checks each header as soon as its 16 bytes arrive, so an oversized or garbage length is
//! refused before the reader buffers it. After an error the stream cannot be trusted: the
//! owner answers with an ERROR frame and closes.

use std::io::Read;

use crate::{FrameHeader, HEADER_LEN, Limits, ProtoError, Request, Response};

/// How much [`FrameReader::read_from`] asks for at once when no frame length is known.
const READ_CHUNK: usize = 64 * 1024;
/// The most [`FrameReader::read_from`] asks for at once (the buffer is zero-filled up to what
/// it asks for, so asking for a whole 64 MiB frame on every short read would cost a memset of
/// the rest of the frame per read).
const MAX_READ: usize = 1 << 20;

/// One complete frame, borrowed from a [`FrameReader`]'s buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The checked header.
    pub header: FrameHeader,
    /// The `header.len - 16` payload bytes.
    pub payload: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Decodes the payload as a request.
    ///
    /// # Errors
    ///
    /// As [`Request::decode`].
    pub fn request(&self, limits: &Limits) -> Result<Request<'a>, ProtoError> {
        Request::decode(&self.header, self.payload, limits)
    }

    /// Decodes the payload as a response.
    ///
    /// # Errors
    ///
    /// As [`Response::decode`].
    pub fn response(&self, limits: &Limits) -> Result<Response<'a>, ProtoError> {
        Response::decode(&self.header, self.payload, limits)
    }
}

/// A receive buffer that yields whole frames.
///
/// # Examples
///
/// ```
/// use kvtier_proto::{FrameReader, Limits, Request, WriteBuf};
///
/// let mut out = WriteBuf::new();
/// Request::Stats.encode(1, &Limits::default(), &mut out)?;
/// Request::Ping(b"hi").encode(2, &Limits::default(), &mut out)?;
/// let wire = out.to_vec();
///
/// let mut reader = FrameReader::new(Limits::default());
/// reader.extend_from_slice(&wire[..20]); // one frame and a bit
/// assert_eq!(reader.next_frame()?.map(|f| f.header.request_id), Some(1));
/// assert!(reader.next_frame()?.is_none()); // the second is incomplete
/// reader.extend_from_slice(&wire[20..]);
/// let frame = reader.next_frame()?.expect("complete now");
/// assert_eq!(frame.request(&Limits::default())?, Request::Ping(b"hi"));
/// # Ok::<(), kvtier_proto::ProtoError>(())
/// ```
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    limits: Limits,
}

impl FrameReader {
    /// An empty reader enforcing `limits.max_frame_bytes` on every header.
    pub fn new(limits: Limits) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            limits,
        }
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends received bytes.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Reads once from `source` into the buffer: as much as the frame being received still
    /// needs (at most 1 MiB), or 64 KiB when its header is not there yet. Returns the bytes
    /// read (0 = end of stream). A read interrupted by a signal is retried.
    ///
    /// # Errors
    ///
    /// The source's I/O errors, and `InvalidData` wrapping a header error (so the buffer
    /// never grows past one frame's limit).
    pub fn read_from<R: Read>(&mut self, source: &mut R) -> std::io::Result<usize> {
        self.compact();
        let want = match FrameHeader::parse_limited(&self.buf, self.limits.max_frame_bytes) {
            Ok(Some(h)) => (h.len as usize)
                .saturating_sub(self.buf.len())
                .clamp(1, MAX_READ),
            Ok(None) => READ_CHUNK,
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let n = loop {
            match source.read(self.buf.get_mut(old..).unwrap_or_default()) {
                // A signal landed before any byte arrived: nothing was read, read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buf.truncate(old + *n.as_ref().unwrap_or(&0));
        n
    }

    /// The next complete frame, if all its bytes are buffered.
    ///
    /// # Errors
    ///
    /// Any header error of [`FrameHeader::parse_limited`]; the bytes stay buffered, so every
    /// later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, ProtoError> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some(header) = FrameHeader::parse_limited(rest, self.limits.max_frame_bytes)? else {
            return Ok(None);
        };
        let len = header.len as usize;
        if rest.len() < len {
            return Ok(None);
        }
        let begin = self.start;
        self.start += len;
        let payload = self
            .buf
            .get(begin + HEADER_LEN..begin + len)
            .unwrap_or_default();
        Ok(Some(RawFrame { header, payload }))
    }
}
