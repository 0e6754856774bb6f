//! Requests served in place ([`Service::serve_in_place`](crate::Service::serve_in_place)): a
//! complete frame still in the connection's read buffer is answered on the IO thread, its
//! reply bytes appended to one buffer that the whole read's replies share, as redis-server
//! does with its per-client reply buffer. No pool buffer, no [`Context`](crate::Context), no
//! [`Response`](crate::Response) per request, and one segment (one iovec) for a pipeline of
//! small replies.
//!
//! # Invariants
//!
//! - A frame is offered in place only when no earlier request of its connection is still in
//!   flight or parked, so the reply lands after every earlier reply and before every later
//!   one: order holds on ordered listeners without sequence numbers.
//! - Bytes written into a [`ReplyBuf`] enter the connection's write queue (and its queued
//!   bytes count) before anything else is queued and at the latest when the read's frames are
//!   cut; nothing lent to the kernel is ever appended to (the buffer is not in the queue
//!   until it is flushed).

use std::collections::VecDeque;

use crate::service::Segment;

/// Capacity a fresh reply buffer starts with (redis' reply chunk size).
const TAIL_CAPACITY: usize = 16 << 10;

/// What [`Service::serve_in_place`](crate::Service::serve_in_place) did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlace {
    /// Not served here: the frame goes the usual way ([`Service::run_inline`](crate::Service::run_inline)
    /// or a worker). Nothing may have been written to the [`ReplyBuf`].
    Declined,
    /// Served; its reply (possibly empty) is in the [`ReplyBuf`].
    Served,
    /// Served, and the connection closes once the reply is written (RESP `QUIT`, a protocol
    /// error found only while parsing).
    ServedThenClose,
}

/// Where a request served in place writes its reply: protocol bytes into
/// [`bytes`](Self::bytes) (shared with the replies before and after it), large payloads as
/// [guarded](Self::guarded) segments sent straight from where they live.
pub struct ReplyBuf<'a> {
    tail: &'a mut Vec<u8>,
    wq: &'a mut VecDeque<Segment>,
    /// Bytes moved into `wq` during this call.
    entered: usize,
}

impl<'a> ReplyBuf<'a> {
    pub(crate) fn new(tail: &'a mut Vec<u8>, wq: &'a mut VecDeque<Segment>) -> Self {
        Self {
            tail,
            wq,
            entered: 0,
        }
    }

    /// The reply's bytes so far (append to it; earlier replies' bytes may precede them).
    #[inline]
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        if self.tail.capacity() == 0 {
            self.tail.reserve(TAIL_CAPACITY);
        }
        self.tail
    }

    /// Appends `bytes`.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes().extend_from_slice(bytes);
    }

    /// Appends bytes borrowed from `guard`, written without a copy; the guard drops once they
    /// are on the socket (or the connection is gone).
    pub fn guarded<G: AsRef<[u8]> + Send + 'static>(&mut self, guard: G) {
        self.entered += flush(self.tail, self.wq);
        let len = guard.as_ref().len();
        if len > 0 {
            self.entered += len;
            self.wq.push_back(Segment::Guarded(Box::new(guard)));
        }
    }

    /// Bytes this buffer moved into the write queue (the caller counts them as queued).
    pub(crate) fn entered(&self) -> usize {
        self.entered
    }
}

impl std::fmt::Write for ReplyBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Moves the bytes of `tail` to the back of `wq` as one owned segment; returns how many.
pub(crate) fn flush(tail: &mut Vec<u8>, wq: &mut VecDeque<Segment>) -> usize {
    let n = tail.len();
    if n > 0 {
        wq.push_back(Segment::Owned(std::mem::take(tail)));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_segments_keep_their_place_between_buffered_bytes() {
        let (mut tail, mut wq) = (Vec::new(), VecDeque::new());
        let mut out = ReplyBuf::new(&mut tail, &mut wq);
        out.extend_from_slice(b"$5\r\n");
        out.guarded(b"hello".to_vec());
        out.extend_from_slice(b"\r\n+OK\r\n");
        assert_eq!(
            out.entered(),
            9,
            "header and value are queued, the rest waits"
        );
        out.guarded(Vec::<u8>::new());
        assert_eq!(
            out.entered(),
            16,
            "a guard flushes the bytes before it, even when empty"
        );
        out.extend_from_slice(b":1\r\n");
        assert_eq!(flush(&mut tail, &mut wq), 4);
        let bytes: Vec<u8> = wq.iter().flat_map(|s| s.bytes().to_vec()).collect();
        assert_eq!(bytes, b"$5\r\nhello\r\n+OK\r\n:1\r\n");
        assert_eq!(wq.len(), 4, "an empty guard adds no segment");
        assert!(tail.is_empty() && flush(&mut tail, &mut wq) == 0);
    }
}
