//! The server's counters and gauges: relaxed atomics bumped on every path, read as one
//! [`CountersSnapshot`] (the lead's Prometheus exporter reads the snapshot).
//!
//! A snapshot is not atomic across fields: two fields read while traffic flows may be a few
//! events apart. Gauges (`connections_open`, `response_bytes_queued`, `streams_open`) are exact
//! once the server is quiet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Live counters, shared by every thread of one server.
/// Counters are kept per thread slot (16 cache-line-aligned copies, a thread picks one when
/// it first counts): IO threads counting every frame would otherwise bounce one cache line
/// between cores on every request. A snapshot sums the slots (gauges are sums of deltas, in
/// wrapping arithmetic).
#[derive(Debug)]
pub(crate) struct Counters {
    slots: Box<[Slot]>,
}

/// Slots of [`Counters`].
const SLOTS: usize = 16;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
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
    fn slot(&self) -> &Slot {
        let i = MY_SLOT.with(|i| *i);
        &self.slots[i % self.slots.len()]
    }

    fn sum(&self, field: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(field(s).load(Relaxed)))
    }

    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            connections_open: self.sum(|s| &s.connections_open),
            connections_accepted: self.sum(|s| &s.connections_accepted),
            connections_refused: self.sum(|s| &s.connections_refused),
            frames_in: self.sum(|s| &s.frames_in),
            frames_out: self.sum(|s| &s.frames_out),
            bytes_in: self.sum(|s| &s.bytes_in),
            bytes_out: self.sum(|s| &s.bytes_out),
            malformed: self.sum(|s| &s.malformed),
            backpressure_pauses: self.sum(|s| &s.backpressure_pauses),
            pool_fallbacks: self.sum(|s| &s.pool_fallbacks),
            ring_full: self.sum(|s| &s.ring_full),
            response_bytes_queued: self.sum(|s| &s.response_bytes_queued),
            streams_open: self.sum(|s| &s.streams_open),
            stream_frames: self.sum(|s| &s.stream_frames),
            stream_congested: self.sum(|s| &s.stream_congested),
        }
    }

    pub(crate) fn conn_opened(&self) {
        self.slot().connections_accepted.fetch_add(1, Relaxed);
        self.slot().connections_open.fetch_add(1, Relaxed);
    }
    pub(crate) fn conn_closed(&self) {
        self.slot().connections_open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn conn_refused(&self) {
        self.slot().connections_refused.fetch_add(1, Relaxed);
    }
    pub(crate) fn frame_in(&self) {
        self.slot().frames_in.fetch_add(1, Relaxed);
    }
    pub(crate) fn frame_out(&self) {
        self.slot().frames_out.fetch_add(1, Relaxed);
    }
    pub(crate) fn read(&self, n: usize) {
        self.slot().bytes_in.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn written(&self, n: usize) {
        self.slot().bytes_out.fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn malformed(&self) {
        self.slot().malformed.fetch_add(1, Relaxed);
    }
    pub(crate) fn paused(&self) {
        self.slot().backpressure_pauses.fetch_add(1, Relaxed);
    }
    pub(crate) fn pool_fallback(&self) {
        self.slot().pool_fallbacks.fetch_add(1, Relaxed);
    }
    pub(crate) fn ring_full(&self) {
        self.slot().ring_full.fetch_add(1, Relaxed);
    }
    pub(crate) fn queued(&self, n: usize) {
        self.slot()
            .response_bytes_queued
            .fetch_add(n as u64, Relaxed);
    }
    pub(crate) fn dequeued(&self, n: usize) {
        self.slot()
            .response_bytes_queued
            .fetch_sub(n as u64, Relaxed);
    }
    pub(crate) fn stream_opened(&self) {
        self.slot().streams_open.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_closed(&self) {
        self.slot().streams_open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn stream_frame(&self) {
        self.slot().stream_frames.fetch_add(1, Relaxed);
    }
    pub(crate) fn stream_congested(&self) {
        self.slot().stream_congested.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_sum_to_the_totals_whatever_thread_counts() {
        let c = std::sync::Arc::new(Counters::default());
        let other = std::sync::Arc::clone(&c);
        std::thread::spawn(move || {
            for _ in 0..1000 {
                other.frame_in();
                other.queued(10);
            }
        })
        .join()
        .unwrap();
        for _ in 0..500 {
            c.frame_in();
            c.dequeued(20); // a gauge raised on one thread, lowered on another
        }
        let snap = c.snapshot();
        assert_eq!(snap.frames_in, 1500);
        assert_eq!(snap.response_bytes_queued, 0);
    }
}
