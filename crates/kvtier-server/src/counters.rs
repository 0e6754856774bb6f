//! The server's counters and gauges: relaxed atomics bumped on every path, read as one
//! [`CountersSnapshot`] (the lead's Prometheus exporter reads the snapshot).
//!
//! A snapshot is not atomic across fields: two fields read while traffic flows may be a few
//! events apart. Gauges (`connections_open`, `response_bytes_queued`, `streams_open`) are exact
//! once the server is quiet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by every thread of one server.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    malformed: AtomicU64,
    backpressure_pauses: AtomicU64,
    pool_fallbacks: AtomicU64,
    ring_full: AtomicU64,
    response_bytes_queued: AtomicU64,
    streams_open: AtomicU64,
    stream_frames: AtomicU64,
    stream_congested: AtomicU64,
}

/// A reading of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountersSnapshot {
    /// Connections open now (gauge).
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused (closed at once) because `max_connections` were open.
    pub connections_refused: u64,
    /// Complete request frames handed to workers.
    pub frames_in: u64,
    /// Responses queued for writing (one per reply with bytes).
    pub frames_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Connections closed for a framing error.
    pub malformed: u64,
    /// Times a connection stopped being read: in-flight cap or queued-response bound reached.
    pub backpressure_pauses: u64,
    /// Request frames that did not fit a pooled chunk and got a heap buffer.
    pub pool_fallbacks: u64,
    /// Times a frame waited on its IO thread because the ring to the workers was full.
    pub ring_full: u64,
    /// Response bytes queued and not yet written, all connections together (gauge).
    pub response_bytes_queued: u64,
    /// Reply streams ([`ReplyStream`](crate::ReplyStream)) not yet ended (gauge).
    pub streams_open: u64,
    /// Stream frames accepted by [`ReplyStream::try_send`](crate::ReplyStream::try_send).
    pub stream_frames: u64,
    /// Stream frames refused because their connection's pending output was at its limit
    /// ([`StreamError::Congested`](crate::StreamError::Congested)).
    pub stream_congested: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            connections_open: self.connections_open.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            backpressure_pauses: self.backpressure_pauses.load(Relaxed),
            pool_fallbacks: self.pool_fallbacks.load(Relaxed),
            ring_full: self.ring_full.load(Relaxed),
            response_bytes_queued: self.response_bytes_queued.load(Relaxed),
            streams_open: self.streams_open.load(Relaxed),
            stream_frames: self.stream_frames.load(Relaxed),
            stream_congested: self.stream_congested.load(Relaxed),
        }
    }

    pub(crate) fn conn_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }
    pub(crate) fn conn_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn conn_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Relaxed);
    }
    pub(crate) fn frame_out(&self) {
        self.frames_out.fetch_add(1, Relaxed);
    }
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn written(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn malformed(&self) {
        self.malformed.fetch_add(1, Relaxed);
    }
    pub(crate) fn paused(&self) {
        self.backpressure_pauses.fetch_add(1, Relaxed);
    }
    pub(crate) fn pool_fallback(&self) {
        self.pool_fallbacks.fetch_add(1, Relaxed);
    }
    pub(crate) fn ring_full(&self) {
        self.ring_full.fetch_add(1, Relaxed);
    }
    pub(crate) fn queued(&self, n: usize) {
        self.response_bytes_queued.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn dequeued(&self, n: usize) {
        self.response_bytes_queued.fetch_sub(n as u64, Relaxed);
    }
    pub(crate) fn stream_opened(&self) {
        self.streams_open.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_closed(&self) {
        self.streams_open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn stream_frame(&self) {
        self.stream_frames.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_congested(&self) {
        self.stream_congested.fetch_add(1, Relaxed);
    }
}
