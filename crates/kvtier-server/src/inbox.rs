//! An IO thread's inbox: completions and stream frames from workers, connections handed over
//! by the accepting thread, and control messages, behind one mutex, plus the eventfd that
//! wakes the IO thread (an epoll readiness source, or an io_uring read).
//!
//! # Invariants
//!
//! - `armed` is true from the first push after a drain until the next drain: at most one
//!   eventfd write per batch of pushes, so a busy server does not pay a syscall per reply.
//! - The IO thread clears `armed` (SeqCst) *before* taking the queue; a pusher sets it (SeqCst)
//!   *after* queueing. So a message is either taken by the drain in progress or its pusher
//!   writes the eventfd again: none is left behind with the thread asleep.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rustix::event::{EventfdFlags, eventfd};

use crate::service::{ConnId, Response};

/// What an IO thread is told.
pub(crate) enum IoMsg {
    /// Something for one connection; ignored if the connection is gone (its slab key may
    /// hold another connection by then: `conn` tells them apart).
    Conn {
        slab_key: usize,
        conn: ConnId,
        event: ConnEvent,
    },
    /// A connection accepted by another IO thread, now owned by this one.
    Adopt {
        stream: std::net::TcpStream,
        listener: usize,
        peer: std::net::SocketAddr,
    },
    /// Graceful shutdown: stop accepting and reading, finish and flush, then exit.
    Shutdown,
}

/// What happened to one connection, away from its IO thread.
pub(crate) enum ConnEvent {
    /// A request finished (a stream ended).
    Completion {
        /// Size of the request frame, released from the connection's in-flight bytes.
        request_bytes: usize,
        /// The request's position on its connection (for in-order replies).
        seq: u64,
        response: Option<Response>,
        close: bool,
    },
    /// One frame of an open stream; its bytes are already counted in the connection's
    /// pending bytes ([`ReplyPath`](crate::reply_path::ReplyPath)).
    StreamFrame(Response),
    /// Look at the connection again (a stream opened on a closing connection).
    Poke,
}

/// An IO thread's message queue and its wake-up eventfd.
pub(crate) struct Inbox {
    queue: Mutex<Vec<IoMsg>>,
    armed: AtomicBool,
    efd: OwnedFd,
}

impl Inbox {
    pub(crate) fn new() -> io::Result<Self> {
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self {
            queue: Mutex::new(Vec::with_capacity(256)),
            armed: AtomicBool::new(false),
            efd,
        })
    }

    /// Queues `msg` and wakes the IO thread if it has not been woken since its last drain.
    pub(crate) fn push(&self, msg: IoMsg) {
        self.queue.lock().push(msg);
        if !self.armed.swap(true, Ordering::SeqCst) {
            // Only fails if the counter would overflow (it is reset on every wake), so the
            // thread is awake anyway.
            let _ = rustix::io::write(&self.efd, &1u64.to_ne_bytes());
        }
    }

    /// Takes every queued message into `out` (which is swapped with the queue: no copy, and
    /// both vectors keep their capacity).
    pub(crate) fn drain(&self, out: &mut Vec<IoMsg>) {
        self.armed.store(false, Ordering::SeqCst);
        std::mem::swap(&mut *self.queue.lock(), out);
    }

    /// Resets the eventfd counter after a wake-up (epoll backend; io_uring reads it itself).
    pub(crate) fn clear_wake(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.efd, &mut buf);
    }
}

impl AsFd for Inbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}
