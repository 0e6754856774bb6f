//! [`WriteBuf`]: encoded frames as one metadata buffer plus borrowed payload slices, ready for
//! a vectored write.
//!
//! Encoders append headers, indexes and small fields to one `Vec<u8>` and record block bytes
//! (and large RESP bulk values) as borrowed slices, never copying them. The segments, in
//! order, are the bytes to send; [`WriteBuf::io_slices`] hands them to `writev`, and its
//! `skip` argument resumes after a partial write. One `WriteBuf` can hold many frames
//! (pipelined responses go out in one `writev`), and `clear` keeps its capacity for reuse.

use std::io::IoSlice;

/// Below this size a borrowed slice is copied into the metadata buffer: an extra iovec costs
/// more than copying a few bytes.
const COPY_BELOW: usize = 64;

#[derive(Clone, Copy, Debug)]
enum Segment<'a> {
    /// `meta[start..end]`.
    Meta { start: usize, end: usize },
    /// Bytes the caller owns.
    Borrowed(&'a [u8]),
}

/// Encoded frames: metadata owned here, payload bytes borrowed for `'a`.
///
/// # Examples
///
/// ```
/// use kvtier_proto::WriteBuf;
///
/// let block = vec![7u8; 4096];
/// let mut out = WriteBuf::new();
/// out.push_meta(b"header");
/// out.push_borrowed(&block);
/// out.push_meta(b"\r\n");
/// assert_eq!(out.len(), 6 + 4096 + 2);
/// let mut iov = Vec::new();
/// out.io_slices(0, &mut iov);
/// assert_eq!(iov.len(), 3); // the 4 KiB block is not copied
/// iov.clear();
/// out.io_slices(4000, &mut iov); // after a partial write of 4000 bytes
/// assert_eq!(iov.iter().map(|s| s.len()).sum::<usize>(), 6 + 4096 + 2 - 4000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct WriteBuf<'a> {
    meta: Vec<u8>,
    segments: Vec<Segment<'a>>,
    len: usize,
}

impl<'a> WriteBuf<'a> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes to send.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is to be sent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the contents, keeping the allocations.
    pub fn clear(&mut self) {
        self.meta.clear();
        self.segments.clear();
        self.len = 0;
    }

    /// Number of segments (iovecs) [`WriteBuf::io_slices`] yields from the start.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends bytes copied into the metadata buffer.
    pub fn push_meta(&mut self, bytes: &[u8]) {
        let start = self.meta.len();
        self.meta.extend_from_slice(bytes);
        self.grow_meta(start);
    }

    /// Appends borrowed bytes, sent from where they are (copied only when tiny).
    pub fn push_borrowed(&mut self, bytes: &'a [u8]) {
        if bytes.len() < COPY_BELOW {
            self.push_meta(bytes);
        } else if !bytes.is_empty() {
            self.segments.push(Segment::Borrowed(bytes));
            self.len += bytes.len();
        }
    }

    /// The metadata buffer, for an encoder that writes fields in place. Call
    /// [`WriteBuf::commit_meta`] with the length it had before.
    pub(crate) fn meta_mut(&mut self) -> &mut Vec<u8> {
        &mut self.meta
    }

    /// Records the bytes appended to the metadata buffer since it was `start` long.
    pub(crate) fn commit_meta(&mut self, start: usize) {
        self.grow_meta(start);
    }

    fn grow_meta(&mut self, start: usize) {
        let end = self.meta.len();
        if end == start {
            return;
        }
        self.len += end - start;
        if let Some(Segment::Meta { end: last_end, .. }) = self.segments.last_mut()
            && *last_end == start
        {
            *last_end = end;
            return;
        }
        self.segments.push(Segment::Meta { start, end });
    }

    /// Iterates over the segments' bytes in order.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments.iter().map(|s| match *s {
            Segment::Meta { start, end } => self.meta.get(start..end).unwrap_or_default(),
            Segment::Borrowed(b) => b,
        })
    }

    /// Appends to `out` the slices still to send after `skip` bytes were written.
    pub fn io_slices<'s>(&'s self, skip: usize, out: &mut Vec<IoSlice<'s>>) {
        let mut skip = skip;
        for seg in self.segments() {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            out.push(IoSlice::new(seg.get(skip..).unwrap_or_default()));
            skip = 0;
        }
    }

    /// All bytes in one vector (tests, fuzzing, or a transport without vectored writes).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for s in self.segments() {
            v.extend_from_slice(s);
        }
        v
    }
}
