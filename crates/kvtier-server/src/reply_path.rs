//! The way back from any thread to one connection: its IO thread's inbox and slab key, and
//! what a thread pushing stream frames must know without asking the IO thread (whether the
//! connection is ending, how many reply bytes it has pending, how many streams are open).
//!
//! One per connection, created with its [`Conn`](crate::conn::Conn) and shared by every
//! request's [`Context`](crate::Context) and [`ReplyStream`](crate::ReplyStream). The IO
//! thread owns the connection; the atomics here are the only state other threads read.
//!
//! # Invariants
//!
//! - `pending` is the connection's queued, unwritten reply bytes (parked ones included) plus
//!   the bytes of stream frames pushed to the inbox and not yet taken by the IO thread. A
//!   sender adds a frame's bytes ([`ReplyPath::reserve`]) before pushing it; the IO thread
//!   moves them into its queue without adding them again and subtracts bytes as they leave.
//!   Every change is a read-modify-write, so however many threads send, an admitted stream
//!   frame never takes `pending` past `max_queued` (unless nothing else was pending: one
//!   frame longer than the limit). Ordinary replies are not gated here (the IO thread bounds
//!   them by not reading).
//! - `closing` only goes from false to true: the IO thread sets it once the connection is
//!   ending (peer EOF, socket error, close requested, server draining) and when it drops.
//! - `streams` counts open streams. A stream decrements it *before* pushing its final
//!   completion, so as the IO thread sees them `streams <= in_flight`; a closing connection
//!   whose in-flight requests are all open streams does not wait for them.
//! - Opening a stream increments `streams`, then reads `closing`; the IO thread stores
//!   `closing`, then reads `streams` (all `SeqCst`). So either the IO thread counts the new
//!   stream, or the opener sees `closing` and pokes the IO thread to look again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::counters::Counters;
use crate::inbox::{ConnEvent, Inbox, IoMsg};
use crate::service::{ConnId, Response};

/// One connection's inbox address and the state shared with threads that reply to it.
pub(crate) struct ReplyPath {
    inbox: Arc<Inbox>,
    conn: ConnId,
    slab_key: usize,
    /// The listener writes replies in request order: streaming is refused.
    pub(crate) ordered: bool,
    /// The connection's queued-response-bytes limit.
    pub(crate) max_queued: usize,
    pub(crate) counters: Arc<Counters>,
    closing: AtomicBool,
    pending: AtomicUsize,
    streams: AtomicUsize,
}

impl ReplyPath {
    pub(crate) fn new(
        inbox: Arc<Inbox>,
        conn: ConnId,
        slab_key: usize,
        ordered: bool,
        max_queued: usize,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            inbox,
            conn,
            slab_key,
            ordered,
            max_queued,
            counters,
            closing: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    fn send(&self, event: ConnEvent) {
        self.inbox.push(IoMsg::Conn {
            slab_key: self.slab_key,
            conn: self.conn,
            event,
        });
    }

    /// Request `seq` finished (with a final response or none).
    pub(crate) fn complete(
        &self,
        request_bytes: usize,
        seq: u64,
        response: Option<Response>,
        close: bool,
    ) {
        self.send(ConnEvent::Completion {
            request_bytes,
            seq,
            response,
            close,
        });
    }

    /// Pushes a stream frame whose bytes [`reserve`](Self::reserve) already counted.
    pub(crate) fn push_frame(&self, response: Response) {
        self.send(ConnEvent::StreamFrame(response));
    }

    /// Counts `len` more pending bytes unless the connection is over its limit; a frame on
    /// a connection with nothing pending is always admitted (however long). `Err` carries the
    /// pending bytes seen.
    pub(crate) fn reserve(&self, len: usize) -> Result<(), usize> {
        let before = self.pending.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > self.max_queued {
            self.pending.fetch_sub(len, Ordering::Relaxed);
            return Err(before);
        }
        Ok(())
    }

    /// The IO thread queued `n` reply bytes that no sender counted.
    pub(crate) fn add_pending(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// The IO thread wrote (or dropped) `n` queued bytes.
    pub(crate) fn sub_pending(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::Relaxed);
    }

    /// Reply bytes pending now (queued plus on their way to the IO thread).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Whether the connection is ending or gone: stream frames are refused.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The IO thread: the connection is ending (idempotent).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Open streams now.
    pub(crate) fn open_streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// A request of this connection became a stream.
    pub(crate) fn open_stream(&self) {
        self.streams.fetch_add(1, Ordering::SeqCst);
        self.counters.stream_opened();
        if self.is_closing() {
            // The IO thread may have counted the connection's open streams before this one:
            // have it look again, or it would wait for a stream that nobody may ever end.
            self.send(ConnEvent::Poke);
        }
    }

    /// A stream ended; its completion is pushed after this.
    pub(crate) fn close_stream(&self) {
        self.streams.fetch_sub(1, Ordering::SeqCst);
        self.counters.stream_closed();
    }
}
