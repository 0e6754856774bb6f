//! What every thread of one server shares, the job that travels the ring, the worker loop, and
//! the steps both IO backends take the same way (admitting a connection, handing frames to the
//! ring, applying a completion).
//!
//! # Invariants
//!
//! - `connections_open` is incremented when a connection is admitted and decremented when its
//!   [`Conn`] drops; admission refuses (closes at once, counted) at `max_connections`.
//! - A job that finds the ring full waits in its IO thread's `stalled` queue, in order, and is
//!   retried on the next loop turn; memory stays bounded by the per-connection in-flight cap.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::ServerConfig;
use crate::conn::{Conn, Limits};
use crate::counters::Counters;
use crate::framing::Framer;
use crate::in_place::{InPlace, ReplyBuf};
use crate::inbox::Inbox;
use crate::pool::{BufferPool, FrameBuf};
use crate::reply_path::ReplyPath;
use crate::ring::Ring;
use crate::service::{ConnId, ConnInfo, Context, Request, Route, Service};

/// One IO thread's event loop: a backend. Built on the thread that runs it.
pub(crate) trait EventLoop<S: Service>: Sized {
    /// Sets up the loop of IO thread `index`, accepting on `listeners` (thread 0 only).
    fn new(
        shared: Arc<Shared<S>>,
        index: usize,
        listeners: Vec<std::net::TcpListener>,
    ) -> std::io::Result<Self>;

    /// Runs until a graceful shutdown has closed every connection (or timed out).
    fn run(self) -> std::io::Result<()>;
}

/// One request on its way to a worker.
pub(crate) struct Job<S> {
    info: ConnInfo,
    session: Arc<S>,
    path: Arc<ReplyPath>,
    seq: u64,
    frame: FrameBuf,
}

/// What the IO threads know about one listener.
pub(crate) struct ListenerSpec {
    pub(crate) framer: Arc<dyn Framer>,
    pub(crate) ordered: bool,
    pub(crate) limits: Limits,
}

/// State shared by the IO threads and workers of one server.
pub(crate) struct Shared<S: Service> {
    pub(crate) service: Arc<S>,
    pub(crate) config: ServerConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) pool: BufferPool,
    pub(crate) ring: Ring<Job<S::Session>>,
    pub(crate) inboxes: Vec<Arc<Inbox>>,
    pub(crate) listeners: Vec<ListenerSpec>,
    next_conn: AtomicU64,
    next_thread: AtomicUsize,
}

impl<S: Service> Shared<S> {
    pub(crate) fn new(
        service: Arc<S>,
        config: ServerConfig,
        listeners: Vec<ListenerSpec>,
        inboxes: Vec<Arc<Inbox>>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        Self {
            pool: BufferPool::new(
                &config.pool_classes,
                config.pool_spare_bytes,
                counters.clone(),
            ),
            ring: Ring::new(config.ring_slots),
            service,
            counters,
            inboxes,
            listeners,
            config,
            next_conn: AtomicU64::new(1),
            next_thread: AtomicUsize::new(0),
        }
    }

    /// Socket options of an accepted connection (see [`crate::tcp::tune_accepted`]); a
    /// failure only costs speed, and the first is logged.
    pub(crate) fn tune_socket(&self, socket: &impl std::os::fd::AsFd, peer: std::net::SocketAddr) {
        let congestion = self.config.loopback_congestion.as_deref();
        if let Err(e) = crate::tcp::tune_accepted(socket, peer, congestion) {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::warn!(?congestion, error = %e, "cannot tune an accepted socket; keeping the system's settings");
            });
        }
    }

    /// Admission control for a freshly accepted socket: `Some(io_thread)` that will own it,
    /// or `None` when the server is full (the caller drops the socket; counted).
    pub(crate) fn admit(&self) -> Option<usize> {
        let open = self.counters.snapshot().connections_open;
        if open >= self.config.max_connections as u64 {
            self.counters.conn_refused();
            return None;
        }
        self.counters.conn_opened();
        Some(self.next_thread.fetch_add(1, Ordering::Relaxed) % self.inboxes.len())
    }

    /// The connection state of a socket admitted on `listener`, owned by `io_thread` in its
    /// slab entry `slab_key`.
    pub(crate) fn new_conn(
        &self,
        listener: usize,
        peer: std::net::SocketAddr,
        io_thread: usize,
        slab_key: usize,
    ) -> Conn<S::Session> {
        let info = ConnInfo {
            id: ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed)),
            listener,
            peer,
            io_thread,
        };
        let session = self.service.open(&info);
        Conn::new(
            info,
            session,
            &self.listeners[listener],
            self.counters.clone(),
            self.inboxes[io_thread].clone(),
            slab_key,
        )
    }

    /// Cuts `conn`'s buffered frames and sends them to the workers (or to `stalled` when the
    /// ring is full). On a framing error, queues the service's error frame and marks the
    /// connection to close.
    pub(crate) fn dispatch(
        &self,
        conn: &mut Conn<S::Session>,
        scratch: &mut Vec<(u64, FrameBuf)>,
        stalled: &mut VecDeque<Job<S::Session>>,
    ) {
        // Frames completed inline free in-flight room at once (no inbox message will come
        // to trigger another cut), and cutting stops after each inline frame (so its reply
        // counts against `max_queued` before the next is cut): cut again after running one.
        let service = &*self.service;
        let mut serve =
            |info: &ConnInfo, session: &S::Session, frame: &[u8], out: &mut ReplyBuf<'_>| {
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    service.serve_in_place(info, session, frame, out)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!(
                        conn = info.id.0,
                        "service panicked serving a request in place; closing"
                    );
                    InPlace::ServedThenClose
                })
            };
        let runs_inline = |info: &ConnInfo, frame: &[u8]| service.run_inline(info, frame);
        loop {
            if let Err(err) = conn.cut_frames_serving(&self.pool, scratch, &mut serve, &runs_inline)
            {
                tracing::debug!(conn = conn.info.id.0, %err, "malformed frame; closing");
                let reply = self.service.malformed(&conn.info, &err);
                conn.fail_framing(reply);
            }
            if scratch.is_empty() {
                return;
            }
            let mut again = false;
            for (seq, frame) in scratch.drain(..) {
                if self.service.run_inline(&conn.info, frame.as_slice()) {
                    let route = Route {
                        path: conn.path.clone(),
                        request_bytes: frame.len(),
                        seq,
                    };
                    crate::inline::arm(conn.info.id, seq);
                    self.call(Context::new(conn.info, conn.session.clone(), route), frame);
                    if let Some((response, close, request_bytes)) = crate::inline::take() {
                        conn.complete(seq, response, close, request_bytes);
                    }
                    again = true;
                    continue;
                }
                let job = Job {
                    info: conn.info,
                    session: conn.session.clone(),
                    path: conn.path.clone(),
                    seq,
                    frame,
                };
                if stalled.is_empty() {
                    if let Err(job) = self.ring.push(job) {
                        self.counters.ring_full();
                        stalled.push_back(job);
                    }
                } else {
                    stalled.push_back(job);
                }
            }
            if !again {
                return;
            }
        }
    }

    /// Retries jobs that found the ring full; returns whether some are still waiting.
    pub(crate) fn retry_stalled(&self, stalled: &mut VecDeque<Job<S::Session>>) -> bool {
        while let Some(job) = stalled.pop_front() {
            if let Err(job) = self.ring.push(job) {
                stalled.push_front(job);
                return true;
            }
        }
        false
    }

    /// A worker: takes batches of jobs from the ring until it is closed and empty.
    pub(crate) fn run_worker(&self) {
        let mut batch = Vec::with_capacity(self.config.worker_batch);
        while self.ring.pop_wait(
            &mut batch,
            self.config.worker_batch.max(1),
            self.config.worker_spins,
        ) {
            for job in batch.drain(..) {
                let route = Route {
                    path: job.path,
                    request_bytes: job.frame.len(),
                    seq: job.seq,
                };
                self.call(Context::new(job.info, job.session, route), job.frame);
            }
        }
    }

    /// Calls the service. A panicking service loses that request (its context completes with
    /// no reply as it unwinds), not the thread.
    fn call(&self, ctx: Context<S::Session>, frame: FrameBuf) {
        let request = Request::new(frame);
        if std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.service.handle(ctx, request);
        }))
        .is_err()
        {
            tracing::error!("service panicked while handling a request");
        }
    }
}
