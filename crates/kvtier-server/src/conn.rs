//! One connection's state, shared by both IO backends: the read buffer and framing, the
//! in-flight count, the queue of response segments and the close decision. The backend owns
//! the socket and moves bytes; this type decides where they go.
//!
//! ```text
//! read ──▶ rbuf ──frame_len──▶ complete frame: copied into a pool buffer ──▶ worker
//!                  └─ long frame, body not in yet: pool buffer of `len`, body read straight into it
//! reply ──▶ wq (segments) ──vectored write──▶ socket; guards dropped as their bytes leave
//! ```
//!
//! # Invariants
//!
//! - Reading stops while `in_flight >= max_in_flight`, `in_flight_bytes >=
//!   max_in_flight_bytes` or `queued_bytes >= max_queued` (backpressure); frames already
//!   buffered are cut only while under all three.
//! - A frame's announced length is checked against `max_frame` before any of its body is
//!   buffered; a framer that cannot tell the length is stopped at `max_frame` buffered bytes.
//! - The buffer returned by [`Conn::read_buf`] is not moved or touched until the matching
//!   [`Conn::on_read`] (the io_uring backend lends it to the kernel in between).
//! - `queued_bytes` equals the unwritten bytes of `wq` (and parked replies) and is mirrored
//!   in the server's `response_bytes_queued` gauge, which `Drop` settles, and in the
//!   connection's pending bytes on its [`ReplyPath`] (which stream frames in the inbox also
//!   count: their senders added them already).
//! - Once ending (EOF, socket error, close requested, draining) the connection closes its
//!   [`ReplyPath`], refusing stream frames; it is then done when nothing is queued and every
//!   request still in flight is an open stream (streams end on their own time; nobody waits).

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::sync::Arc;

use crate::counters::Counters;
use crate::framing::{Framer, FramingError};
use crate::in_place::{self, InPlace, ReplyBuf};
use crate::inbox::{ConnEvent, Inbox};
use crate::pool::{BufferPool, FrameBuf};
use crate::reply_path::ReplyPath;
use crate::runtime::ListenerSpec;
use crate::service::{ConnInfo, Response, Segment};

/// A frame whose length is known but whose body is at least this long and not yet in is read
/// straight into its own buffer instead of through the read buffer (saves a copy).
const DIRECT_BODY_MIN: usize = 16 << 10;

/// Largest written buffer kept for the next in-place replies.
const SPARE_MAX: usize = 256 << 10;

/// The service's [`serve_in_place`](crate::Service::serve_in_place), as the IO thread calls it.
pub(crate) type ServeInPlace<'a, S> =
    dyn FnMut(&ConnInfo, &S, &[u8], &mut ReplyBuf<'_>) -> InPlace + 'a;

/// The service's [`run_inline`](crate::Service::run_inline).
pub(crate) type RunsInline<'a> = dyn Fn(&ConnInfo, &[u8]) -> bool + 'a;

/// Per-connection limits, copied from the server configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_frame: usize,
    pub max_in_flight: usize,
    pub max_in_flight_bytes: usize,
    pub max_queued: usize,
    pub read_buffer: usize,
}

struct Body {
    buf: FrameBuf,
    filled: usize,
}

/// A connection's read buffer lent out for one completion-based read (io_uring): the bytes
/// past `at` receive the data. Returned with [`Conn::return_read_target`].
pub(crate) enum ReadTarget {
    /// The read buffer; valid bytes end at `at`.
    Buffer { buf: Vec<u8>, at: usize },
    /// A long frame's own buffer, filled up to `at`.
    Body { buf: FrameBuf, at: usize },
}

impl ReadTarget {
    /// Where the data goes.
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        match self {
            ReadTarget::Buffer { buf, at } => &mut buf[*at..],
            ReadTarget::Body { buf, at } => &mut buf.as_mut_slice()[*at..],
        }
    }
}

pub(crate) struct Conn<S> {
    pub(crate) info: ConnInfo,
    pub(crate) session: Arc<S>,
    /// How replies (and stream frames) come back to this connection from other threads.
    pub(crate) path: Arc<ReplyPath>,
    framer: Arc<dyn Framer>,
    limits: Limits,
    counters: Arc<Counters>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    body: Option<Body>,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Replies leave in request order (`seq`), early finishers wait in `parked`.
    ordered: bool,
    /// Sequence number of the next frame cut.
    next_seq: u64,
    /// Sequence number of the next reply to write (ordered connections).
    next_reply: u64,
    parked: BTreeMap<u64, (Option<Response>, bool)>,
    wq: VecDeque<Segment>,
    /// Replies of requests served in place, not yet in `wq` (empty outside `cut_frames`).
    tail: Vec<u8>,
    /// An empty buffer recycled from a written segment: the next `tail`.
    spare: Vec<u8>,
    wq_offset: usize,
    queued_bytes: usize,
    paused: bool,
    /// The read buffer is lent out (`lend_read_target`): no framing until it is back.
    lent: bool,
    /// The peer closed its side (read returned 0).
    pub(crate) eof: bool,
    /// A socket error: close now, drop what is queued.
    pub(crate) failed: bool,
    /// Close once in-flight requests are answered and everything queued is written.
    pub(crate) close_when_flushed: bool,
}

impl<S> Conn<S> {
    /// A connection in slab entry `slab_key` of the IO thread whose inbox is `inbox`.
    pub(crate) fn new(
        info: ConnInfo,
        session: S,
        listener: &ListenerSpec,
        counters: Arc<Counters>,
        inbox: Arc<Inbox>,
        slab_key: usize,
    ) -> Self {
        let limits = listener.limits;
        let path = ReplyPath::new(
            inbox,
            info.id,
            slab_key,
            listener.ordered,
            limits.max_queued,
            counters.clone(),
        );
        Self {
            info,
            session: Arc::new(session),
            path: Arc::new(path),
            framer: listener.framer.clone(),
            ordered: listener.ordered,
            next_seq: 0,
            next_reply: 0,
            parked: BTreeMap::new(),
            rbuf: vec![0; limits.read_buffer.max(64)],
            limits,
            counters,
            rstart: 0,
            rend: 0,
            body: None,
            in_flight: 0,
            in_flight_bytes: 0,
            wq: VecDeque::new(),
            tail: Vec::new(),
            spare: Vec::new(),
            wq_offset: 0,
            queued_bytes: 0,
            paused: false,
            lent: false,
            eof: false,
            failed: false,
            close_when_flushed: false,
        }
    }

    /// Whether the backend should read from the socket now.
    pub(crate) fn wants_read(&mut self, draining: bool) -> bool {
        let blocked = self.at_in_flight_cap() || self.queued_bytes >= self.limits.max_queued;
        if blocked && !self.paused {
            self.counters.paused();
        }
        self.paused = blocked;
        !blocked && !self.eof && !self.failed && !self.close_when_flushed && !draining
    }

    fn at_in_flight_cap(&self) -> bool {
        self.in_flight >= self.limits.max_in_flight
            || self.in_flight_bytes >= self.limits.max_in_flight_bytes
    }

    /// Where the next read lands: the rest of a long frame's body, or the read buffer's free
    /// tail (compacted or grown first when needed). Never empty.
    pub(crate) fn read_buf(&mut self) -> &mut [u8] {
        if let Some(body) = &mut self.body {
            let filled = body.filled;
            return &mut body.buf.as_mut_slice()[filled..];
        }
        if self.rend == self.rbuf.len() {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            } else {
                // A frame whose length is still unknown fills the buffer: grow, up to the
                // frame limit (`cut_frames` fails the connection at the limit).
                let len = (self.rbuf.len() * 2).min(self.limits.max_frame.max(self.rbuf.len() + 1));
                self.rbuf.resize(len, 0);
            }
        }
        &mut self.rbuf[self.rend..]
    }

    /// Lends the buffer [`read_buf`](Self::read_buf) would return, for a read that completes
    /// later; framing waits until [`return_read_target`](Self::return_read_target).
    pub(crate) fn lend_read_target(&mut self) -> ReadTarget {
        let _ = self.read_buf();
        self.lent = true;
        match self.body.take() {
            Some(body) => ReadTarget::Body {
                buf: body.buf,
                at: body.filled,
            },
            None => ReadTarget::Buffer {
                buf: std::mem::take(&mut self.rbuf),
                at: self.rend,
            },
        }
    }

    /// Takes a lent buffer back, with `n` new bytes in it.
    pub(crate) fn return_read_target(&mut self, target: ReadTarget, n: usize) {
        self.lent = false;
        match target {
            ReadTarget::Buffer { buf, .. } => self.rbuf = buf,
            ReadTarget::Body { buf, at } => self.body = Some(Body { buf, filled: at }),
        }
        if n > 0 {
            self.on_read(n);
        }
    }

    /// `n` bytes arrived in the buffer last returned by [`read_buf`](Self::read_buf).
    pub(crate) fn on_read(&mut self, n: usize) {
        self.counters.read(n);
        match &mut self.body {
            Some(body) => body.filled += n,
            None => self.rend += n,
        }
    }

    /// Cuts complete frames (while under the in-flight cap) into pool buffers, pushed to
    /// `out`; each counts as in flight until its completion.
    #[cfg(test)]
    pub(crate) fn cut_frames(
        &mut self,
        pool: &BufferPool,
        out: &mut Vec<(u64, FrameBuf)>,
    ) -> Result<(), FramingError> {
        self.cut_frames_serving(pool, out, &mut |_, _, _, _| InPlace::Declined, &|_, _| {
            false
        })
    }

    /// [`cut_frames`](Self::cut_frames), first offering each complete frame to `serve`
    /// (the service's [`serve_in_place`](crate::Service::serve_in_place)) while nothing
    /// earlier is in flight; a frame it serves is done, its reply queued in order. Cutting
    /// stops after a frame `runs_inline` (the service's
    /// [`run_inline`](crate::Service::run_inline)) says is answered on the IO thread: the
    /// caller runs it, its reply is queued, and the next cut sees those bytes, so a client
    /// that does not read stays within one reply of `max_queued`.
    pub(crate) fn cut_frames_serving(
        &mut self,
        pool: &BufferPool,
        out: &mut Vec<(u64, FrameBuf)>,
        serve: &mut ServeInPlace<'_, S>,
        runs_inline: &RunsInline<'_>,
    ) -> Result<(), FramingError> {
        let result = self.cut(pool, out, serve, runs_inline);
        self.flush_tail();
        result
    }

    fn cut(
        &mut self,
        pool: &BufferPool,
        out: &mut Vec<(u64, FrameBuf)>,
        serve: &mut ServeInPlace<'_, S>,
        runs_inline: &RunsInline<'_>,
    ) -> Result<(), FramingError> {
        if self.lent {
            return Ok(());
        }
        let inline_last = |info: &ConnInfo, out: &[(u64, FrameBuf)]| {
            out.last()
                .is_some_and(|(_, frame)| runs_inline(info, frame.as_slice()))
        };
        if let Some(body) = &self.body {
            if body.filled < body.buf.len() {
                return Ok(());
            }
            if let Some(body) = self.body.take() {
                self.emit(body.buf, out);
                if inline_last(&self.info, out) {
                    return Ok(());
                }
            }
        }
        // Replies not yet written count too: a client that pipelines requests but does not
        // read replies stops being served once `max_queued` bytes wait for it (frames answered
        // on the IO thread complete at once, so the in-flight cap alone would not stop them).
        while !self.at_in_flight_cap()
            && self.queued_bytes + self.tail.len() < self.limits.max_queued
            && !self.close_when_flushed
        {
            let avail = &self.rbuf[self.rstart..self.rend];
            if avail.is_empty() {
                break;
            }
            let Some(len) = self.framer.frame_len(avail)? else {
                if avail.len() >= self.limits.max_frame {
                    return Err(FramingError::TooLarge {
                        len: avail.len() as u64,
                        max: self.limits.max_frame,
                    });
                }
                break;
            };
            if len > self.limits.max_frame {
                return Err(FramingError::TooLarge {
                    len: len as u64,
                    max: self.limits.max_frame,
                });
            }
            if len == 0 {
                return Err(FramingError::Invalid {
                    reason: "framer returned an empty frame".into(),
                });
            }
            if len <= avail.len() && self.in_flight == 0 && self.parked.is_empty() {
                let frame = &self.rbuf[self.rstart..self.rstart + len];
                let mut reply = ReplyBuf::new(&mut self.tail, &mut self.wq);
                let outcome = serve(&self.info, &self.session, frame, &mut reply);
                let entered = reply.entered();
                self.account(entered);
                if outcome != InPlace::Declined {
                    self.rstart += len;
                    self.next_seq += 1;
                    self.next_reply += 1;
                    self.counters.frame_in();
                    self.counters.frame_out();
                    if outcome == InPlace::ServedThenClose {
                        self.close_when_flushed = true;
                    }
                    continue;
                }
            }
            let avail = &self.rbuf[self.rstart..self.rend];
            if len <= avail.len() {
                let mut buf = pool.take(len);
                buf.as_mut_slice().copy_from_slice(&avail[..len]);
                self.rstart += len;
                self.emit(buf, out);
                if inline_last(&self.info, out) {
                    break;
                }
            } else if len > self.rbuf.len() || len >= DIRECT_BODY_MIN {
                let have = avail.len();
                let mut buf = pool.take(len);
                buf.as_mut_slice()[..have].copy_from_slice(avail);
                self.rstart = self.rend;
                self.body = Some(Body { buf, filled: have });
                break;
            } else {
                break;
            }
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        Ok(())
    }

    fn emit(&mut self, buf: FrameBuf, out: &mut Vec<(u64, FrameBuf)>) {
        // Replies served in place so far go before this frame's.
        self.flush_tail();
        self.in_flight += 1;
        self.in_flight_bytes += buf.len();
        self.counters.frame_in();
        out.push((self.next_seq, buf));
        self.next_seq += 1;
    }

    /// Applies what another thread sent this connection.
    pub(crate) fn apply(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Completion {
                request_bytes,
                seq,
                response,
                close,
            } => self.complete(seq, response, close, request_bytes),
            // Streams are refused on ordered connections: a frame goes out as it comes.
            ConnEvent::StreamFrame(response) => self.queue(response, true),
            ConnEvent::Poke => {}
        }
    }

    /// Request `seq` of this connection completed.
    pub(crate) fn complete(
        &mut self,
        seq: u64,
        response: Option<Response>,
        close: bool,
        request_bytes: usize,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(request_bytes);
        if !self.ordered {
            self.finish(response, close);
            return;
        }
        if seq == self.next_reply {
            // Next in order (the common case): no parking.
            self.next_reply += 1;
            self.finish(response, close);
            if !self.parked.is_empty() {
                self.release_parked();
            }
            return;
        }
        // Parked replies count as queued at once: they hold memory like queued ones.
        self.enqueued(response.as_ref().map_or(0, Response::len));
        self.parked.insert(seq, (response, close));
        self.release_parked();
    }

    /// Writes the parked replies that are next in request order.
    fn release_parked(&mut self) {
        while let Some((response, close)) = self.parked.remove(&self.next_reply) {
            self.next_reply += 1;
            self.dequeued(response.as_ref().map_or(0, Response::len));
            self.finish(response, close);
        }
    }

    fn finish(&mut self, response: Option<Response>, close: bool) {
        if let Some(response) = response {
            self.queue(response, false);
        }
        if close {
            self.close_when_flushed = true;
        }
    }

    /// The bytes could not be framed: queue the service's error frame (if any) and close
    /// once it is written.
    /// On an ordered connection the error frame takes the next request's place in order: it
    /// goes out after the replies to every frame cut before the bad bytes.
    pub(crate) fn fail_framing(&mut self, response: Option<Response>) {
        self.counters.malformed();
        if self.ordered {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.enqueued(response.as_ref().map_or(0, Response::len));
            self.parked.insert(seq, (response, true));
            self.release_parked();
        } else if let Some(response) = response {
            self.queue(response, false);
        }
        self.close_when_flushed = true;
        self.body = None;
        self.rstart = 0;
        self.rend = 0;
    }

    /// Queues `response` for writing; `in_pending`: its bytes are already counted in the
    /// path's pending bytes (a stream frame, counted by its sender).
    fn queue(&mut self, response: Response, in_pending: bool) {
        self.flush_tail();
        self.counters.frame_out();
        let mut total = 0;
        for segment in response.segments {
            let len = segment.bytes().len();
            if len > 0 {
                total += len;
                self.wq.push_back(segment);
            }
        }
        self.queued_bytes += total;
        self.counters.queued(total);
        if !in_pending {
            self.path.add_pending(total);
        }
    }

    /// Moves the replies served in place into the write queue.
    fn flush_tail(&mut self) {
        let n = in_place::flush(&mut self.tail, &mut self.wq);
        if n > 0 {
            self.tail = std::mem::take(&mut self.spare);
        }
        self.account(n);
    }

    /// A written segment: an owned buffer of a reply buffer's size becomes the next reply
    /// buffer (no allocation, no page faults, no growth copies per read); the rest drop.
    fn recycle(&mut self, segment: Segment) {
        if let Segment::Owned(mut v) = segment
            && (4 << 10..=SPARE_MAX).contains(&v.capacity())
            && v.capacity() > self.spare.capacity().max(self.tail.capacity())
        {
            v.clear();
            self.spare = v;
        }
    }

    /// `n` bytes entered the write queue outside [`queue`](Self::queue).
    fn account(&mut self, n: usize) {
        if n > 0 {
            self.queued_bytes += n;
            self.counters.queued(n);
            self.path.add_pending(n);
        }
    }

    /// `n` more reply bytes held (parked).
    fn enqueued(&mut self, n: usize) {
        self.queued_bytes += n;
        self.counters.queued(n);
        self.path.add_pending(n);
    }

    /// `n` held reply bytes written or released.
    fn dequeued(&mut self, n: usize) {
        self.queued_bytes -= n;
        self.counters.dequeued(n);
        self.path.sub_pending(n);
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.wq.is_empty()
    }

    /// Fills `out` with the queued bytes, in order, up to `out.len()` slices; returns how many.
    pub(crate) fn write_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, segment) in self.wq.iter().enumerate() {
            if n == out.len() {
                break;
            }
            let bytes = segment.bytes();
            out[n] = IoSlice::new(if i == 0 {
                &bytes[self.wq_offset..]
            } else {
                bytes
            });
            n += 1;
        }
        n
    }

    /// Takes up to `max` queued segments (and the offset into the first) for a write that
    /// completes later; they still count as queued until [`return_writes`](Self::return_writes).
    pub(crate) fn lend_writes(&mut self, max: usize) -> (Vec<Segment>, usize) {
        let n = max.min(self.wq.len());
        let segments = self.wq.drain(..n).collect();
        (segments, std::mem::take(&mut self.wq_offset))
    }

    /// A lent write finished with `written` bytes on the socket: the unwritten rest goes back
    /// in front of whatever was queued meanwhile.
    pub(crate) fn return_writes(&mut self, segments: Vec<Segment>, offset: usize, written: usize) {
        self.counters.written(written);
        self.dequeued(written);
        let mut left = written;
        let mut offset = offset;
        let mut keep = Vec::new();
        for segment in segments {
            let rest = segment.bytes().len() - offset;
            if left >= rest {
                left -= rest;
                offset = 0;
                self.recycle(segment);
            } else {
                if keep.is_empty() {
                    self.wq_offset = offset + left;
                }
                left = 0;
                offset = 0;
                keep.push(segment);
            }
        }
        for segment in keep.into_iter().rev() {
            self.wq.push_front(segment);
        }
    }

    /// `n` queued bytes are on the socket: drop finished segments (and their guards).
    pub(crate) fn on_written(&mut self, mut n: usize) {
        self.counters.written(n);
        self.dequeued(n);
        while n > 0 {
            let Some(front) = self.wq.front() else { break };
            let rest = front.bytes().len() - self.wq_offset;
            if n >= rest {
                n -= rest;
                if let Some(done) = self.wq.pop_front() {
                    self.recycle(done);
                }
                self.wq_offset = 0;
            } else {
                self.wq_offset += n;
                n = 0;
            }
        }
    }

    /// Whether the connection is finished and should be dropped (closing the socket). Once
    /// it is ending, also tells its streams (their sends fail from now on).
    pub(crate) fn done(&self, draining: bool) -> bool {
        if !(self.failed || self.eof || self.close_when_flushed || draining) {
            return false;
        }
        // Close before counting streams: a stream opened after this count sees `closing`
        // and pokes us (see `reply_path`).
        self.path.close();
        self.failed || (self.wq.is_empty() && self.in_flight <= self.path.open_streams())
    }
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.path.close();
        // `queued_bytes` covers parked replies too.
        self.counters.dequeued(self.queued_bytes);
        self.path.sub_pending(self.queued_bytes);
        self.counters.conn_closed();
    }
}

#[cfg(test)]
mod tests;
