//! The completion backend: one IO thread's loop on io_uring. Accept, recv, writev and the
//! inbox eventfd read are submissions; their buffers travel into the ring's operation table
//! (`sys`, the crate's only `unsafe`) and come back with the completion.
//!
//! Per connection at most one recv and one writev are in flight. A connection is dropped (its
//! socket closed) only when neither is: to finish one with a recv pending, the socket is shut
//! down, which completes the recv.
//!
//! # Invariants
//!
//! - Tags: `TAG_WAKE` the eventfd read, `TAG_LISTENER + i` an accept on listener `i`, a slab
//!   key otherwise (the connection stays in the slab while it has an operation in flight, so
//!   a key is never reused under a pending completion).
//! - Sockets are in blocking mode: io_uring waits for readiness itself, and `O_NONBLOCK`
//!   would turn that wait into `EAGAIN` completions.

mod sys;

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::conn::Conn;
use crate::inbox::IoMsg;
use crate::runtime::{EventLoop, Job, Shared};
use crate::service::Service;

pub(crate) use sys::probe;
use sys::{Done, Owned, Ring};

const TAG_WAKE: u64 = u64::MAX - 1;
const TAG_LISTENER: u64 = u64::MAX / 2;
/// Segments per writev.
const IOV: usize = 64;
/// Submission queue size.
const ENTRIES: u32 = 1024;
/// Wait before accepting again after a failing accept (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

struct UConn<S> {
    stream: TcpStream,
    core: Conn<S>,
    reading: bool,
    writing: bool,
    shut: bool,
    dirty: bool,
}

pub(crate) struct UringLoop<S: Service> {
    shared: Arc<Shared<S>>,
    index: usize,
    ring: Ring,
    listeners: Vec<Option<TcpListener>>,
    conns: Slab<UConn<S::Session>>,
    dirty: Vec<usize>,
    stalled: VecDeque<Job<S::Session>>,
    scratch: Vec<(u64, crate::pool::FrameBuf)>,
    draining: Option<Instant>,
    /// Listeners whose accept failed (EMFILE...), re-armed at the instant given instead of at
    /// once (which would spin while descriptors are exhausted).
    accept_retry: Vec<(usize, Instant)>,
}

impl<S: Service> EventLoop<S> for UringLoop<S> {
    fn new(shared: Arc<Shared<S>>, index: usize, listeners: Vec<TcpListener>) -> io::Result<Self> {
        let mut ring = Ring::new(ENTRIES)?;
        ring.read_wake(shared.inboxes[index].as_fd(), TAG_WAKE);
        for (i, l) in listeners.iter().enumerate() {
            l.set_nonblocking(false)?;
            ring.accept(l.as_fd(), TAG_LISTENER + i as u64);
        }
        Ok(Self {
            shared,
            index,
            ring,
            listeners: listeners.into_iter().map(Some).collect(),
            conns: Slab::new(),
            dirty: Vec::new(),
            stalled: VecDeque::new(),
            scratch: Vec::new(),
            draining: None,
            accept_retry: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut done = Vec::new();
        let mut msgs = Vec::new();
        let inbox = self.shared.inboxes[self.index].clone();
        loop {
            let (want, timeout) = if !self.dirty.is_empty() {
                (0, None)
            } else if !self.stalled.is_empty() {
                (1, Some(Duration::from_micros(100)))
            } else if self.draining.is_some() || !self.accept_retry.is_empty() {
                (1, Some(ACCEPT_BACKOFF))
            } else {
                (1, None)
            };
            self.ring.submit_and_wait(want, timeout)?;
            self.ring.complete(&mut done);
            let mut woke = false;
            for d in done.drain(..) {
                woke |= self.on_done(d);
            }
            if woke {
                inbox.drain(&mut msgs);
                for msg in msgs.drain(..) {
                    self.on_msg(msg);
                }
                if self.draining.is_none() {
                    self.ring.read_wake(inbox.as_fd(), TAG_WAKE);
                }
            }
            if !self.accept_retry.is_empty() {
                let now = Instant::now();
                for (i, at) in std::mem::take(&mut self.accept_retry) {
                    match self.listeners.get(i) {
                        Some(Some(l)) if at <= now && self.draining.is_none() => {
                            self.ring.accept(l.as_fd(), TAG_LISTENER + i as u64);
                        }
                        Some(Some(_)) if self.draining.is_none() => {
                            self.accept_retry.push((i, at));
                        }
                        _ => {}
                    }
                }
            }
            self.shared.retry_stalled(&mut self.stalled);
            let dirty = std::mem::take(&mut self.dirty);
            for &key in &dirty {
                self.drive(key);
            }
            if self.dirty.is_empty() {
                let mut reuse = dirty;
                reuse.clear();
                self.dirty = reuse;
            }
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() && self.stalled.is_empty() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        io_thread = self.index,
                        open = self.conns.len(),
                        "shutdown timeout: closing connections with requests in flight"
                    );
                    // Dropping the ring below cancels and reaps their operations first.
                    let conns = std::mem::take(&mut self.conns);
                    drop(self.ring);
                    drop(conns);
                    return Ok(());
                }
                // While draining the eventfd read is not re-armed: poll the inbox instead.
                inbox.drain(&mut msgs);
                for msg in msgs.drain(..) {
                    self.on_msg(msg);
                }
            }
        }
    }
}

impl<S: Service> UringLoop<S> {
    /// Applies one completion; returns whether it was the inbox wake-up.
    fn on_done(&mut self, d: Done) -> bool {
        match d.owned {
            Owned::Wake => return true,
            Owned::Cancel => {}
            Owned::Accepted(fd) => {
                let i = (d.tag - TAG_LISTENER) as usize;
                let transient = matches!(
                    -d.result,
                    libc::EINTR | libc::EAGAIN | libc::ECONNABORTED | libc::ECANCELED
                );
                if let Some(fd) = fd {
                    self.admit(TcpStream::from(fd), i);
                } else if !transient {
                    tracing::warn!(errno = -d.result, "accept failed; retrying shortly");
                    if self.draining.is_none() {
                        self.accept_retry.push((i, Instant::now() + ACCEPT_BACKOFF));
                        return false;
                    }
                }
                if self.draining.is_none()
                    && let Some(Some(l)) = self.listeners.get(i)
                {
                    self.ring.accept(l.as_fd(), d.tag);
                } else if let Some(slot) = self.listeners.get_mut(i) {
                    // Cancelled for shutdown: now the listening socket can really close.
                    *slot = None;
                }
            }
            Owned::Recv(target) => {
                let key = d.tag as usize;
                if let Some(c) = self.conns.get_mut(key) {
                    c.reading = false;
                    let n = usize::try_from(d.result).unwrap_or(0);
                    c.core.return_read_target(target, n);
                    match d.result {
                        0 => c.core.eof = true,
                        r if r < 0 && r != -libc::EINTR && r != -libc::EAGAIN => {
                            c.core.failed = true;
                        }
                        _ => {}
                    }
                    mark(&mut self.dirty, key, c);
                }
            }
            Owned::Write(segments, offset) => {
                let key = d.tag as usize;
                if let Some(c) = self.conns.get_mut(key) {
                    c.writing = false;
                    let n = usize::try_from(d.result).unwrap_or(0);
                    c.core.return_writes(segments, offset, n);
                    if d.result < 0 && d.result != -libc::EINTR && d.result != -libc::EAGAIN {
                        c.core.failed = true;
                    }
                    mark(&mut self.dirty, key, c);
                }
            }
        }
        false
    }

    fn admit(&mut self, stream: TcpStream, listener: usize) {
        let Some(owner) = self.shared.admit() else {
            drop(stream);
            return;
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => {
                self.shared.counters.conn_closed();
                return;
            }
        };
        self.shared.tune_socket(&stream, peer);
        if owner == self.index {
            self.register(stream, listener, peer);
        } else {
            self.shared.inboxes[owner].push(IoMsg::Adopt {
                stream,
                listener,
                peer,
            });
        }
    }

    fn register(&mut self, stream: TcpStream, listener: usize, peer: std::net::SocketAddr) {
        if stream.set_nonblocking(false).is_err() {
            self.shared.counters.conn_closed();
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let core = self.shared.new_conn(listener, peer, self.index, key);
        entry.insert(UConn {
            stream,
            core,
            reading: false,
            writing: false,
            shut: false,
            dirty: false,
        });
        let c = &mut self.conns[key];
        mark(&mut self.dirty, key, c);
    }

    fn on_msg(&mut self, msg: IoMsg) {
        match msg {
            IoMsg::Conn {
                slab_key,
                conn,
                event,
            } => {
                if let Some(c) = self.conns.get_mut(slab_key)
                    && c.core.info.id == conn
                {
                    c.core.apply(event);
                    mark(&mut self.dirty, slab_key, c);
                }
            }
            IoMsg::Adopt {
                stream,
                listener,
                peer,
            } => self.register(stream, listener, peer),
            IoMsg::Shutdown => {
                if self.draining.is_some() {
                    return;
                }
                self.draining = Some(Instant::now() + self.shared.config.shutdown_timeout);
                for i in 0..self.listeners.len() {
                    self.ring.cancel_tag(TAG_LISTENER + i as u64);
                }
                self.ring.cancel_tag(TAG_WAKE);
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    let c = &mut self.conns[key];
                    mark(&mut self.dirty, key, c);
                }
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let draining = self.draining.is_some();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        if !c.reading {
            self.shared
                .dispatch(&mut c.core, &mut self.scratch, &mut self.stalled);
        }
        if !c.writing && c.core.has_output() && !c.core.failed {
            let (segments, offset) = c.core.lend_writes(IOV);
            self.ring
                .writev(c.stream.as_fd(), segments, offset, key as u64);
            c.writing = true;
        }
        let finished = c.core.done(draining);
        if !c.reading && !finished && c.core.wants_read(draining) {
            let target = c.core.lend_read_target();
            self.ring.recv(c.stream.as_fd(), target, key as u64);
            c.reading = true;
        }
        if finished {
            if !c.reading && !c.writing {
                self.conns.remove(key);
            } else if !c.shut {
                // Completes the pending recv (and fails a pending write on error paths).
                let how = if c.core.failed || !c.writing {
                    Shutdown::Both
                } else {
                    Shutdown::Read
                };
                let _ = c.stream.shutdown(how);
                c.shut = true;
            }
        }
    }
}

fn mark<S>(dirty: &mut Vec<usize>, key: usize, c: &mut UConn<S>) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}
