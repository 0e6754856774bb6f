//! The readiness backend: one IO thread's loop on epoll (through `mio`, edge-triggered).
//!
//! Each connection remembers whether its socket is readable and writable since the last
//! `WouldBlock`; an event sets the flag and marks the connection dirty, and the loop drives
//! dirty connections (write, cut frames, read) until they would block or hit a fairness bound.
//!
//! # Invariants
//!
//! - Edge-triggered: a flag is cleared only on `WouldBlock`, so a connection paused by
//!   backpressure with data still in the socket resumes reading when a completion marks it
//!   dirty, without waiting for an edge.
//! - Token `WAKE` is the inbox eventfd, `LISTENER_BASE + i` listener `i`, anything below
//!   `LISTENER_BASE` a slab key.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::Conn;
use crate::inbox::IoMsg;
use crate::runtime::{EventLoop, Job, Shared};
use crate::service::Service;

const WAKE: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX / 2;
/// Reads or writes per connection per loop turn before the others get their turn.
const ROUNDS: usize = 16;
/// Slices per vectored write.
const IOV: usize = 64;
/// Wait before accepting again after a failing accept (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

struct EConn<S> {
    stream: TcpStream,
    core: Conn<S>,
    readable: bool,
    writable: bool,
    dirty: bool,
}

pub(crate) struct EpollLoop<S: Service> {
    shared: Arc<Shared<S>>,
    index: usize,
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<EConn<S::Session>>,
    dirty: Vec<usize>,
    stalled: VecDeque<Job<S::Session>>,
    scratch: Vec<(u64, crate::pool::FrameBuf)>,
    draining: Option<Instant>,
    /// Listeners whose accept failed (EMFILE...), to retry at the instant given: with
    /// edge-triggered readiness no new event comes for connections already in the backlog.
    accept_retry: Vec<(usize, Instant)>,
}

impl<S: Service> EventLoop<S> for EpollLoop<S> {
    fn new(
        shared: Arc<Shared<S>>,
        index: usize,
        listeners: Vec<std::net::TcpListener>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let efd = shared.inboxes[index].as_fd().as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&efd), WAKE, Interest::READABLE)?;
        let mut mio_listeners = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        Ok(Self {
            shared,
            index,
            poll,
            listeners: mio_listeners,
            conns: Slab::new(),
            dirty: Vec::new(),
            stalled: VecDeque::new(),
            scratch: Vec::new(),
            draining: None,
            accept_retry: Vec::new(),
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut msgs = Vec::new();
        let inbox = self.shared.inboxes[self.index].clone();
        loop {
            let timeout = if !self.dirty.is_empty() {
                Some(Duration::ZERO)
            } else if !self.stalled.is_empty() {
                Some(Duration::from_micros(100))
            } else if self.draining.is_some() || !self.accept_retry.is_empty() {
                Some(ACCEPT_BACKOFF)
            } else {
                None
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKE => inbox.clear_wake(),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                    Token(key) => {
                        if let Some(c) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                c.readable = true;
                            }
                            if event.is_writable() || event.is_write_closed() || event.is_error() {
                                c.writable = true;
                            }
                            mark(&mut self.dirty, key, c);
                        }
                    }
                }
            }
            inbox.drain(&mut msgs);
            for msg in msgs.drain(..) {
                self.on_msg(msg);
            }
            if !self.accept_retry.is_empty() {
                let now = Instant::now();
                let due: Vec<usize> = self
                    .accept_retry
                    .iter()
                    .filter(|(_, at)| *at <= now)
                    .map(|(i, _)| *i)
                    .collect();
                self.accept_retry.retain(|(_, at)| *at > now);
                for i in due {
                    self.accept(i);
                }
            }
            // Frames that found the ring full wait for the next turn (short poll above).
            self.shared.retry_stalled(&mut self.stalled);
            let dirty = std::mem::take(&mut self.dirty);
            for key in &dirty {
                self.drive(*key);
            }
            let mut reuse = dirty;
            reuse.clear();
            if self.dirty.is_empty() {
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
                    self.conns.clear();
                    return Ok(());
                }
            }
        }
    }
}

impl<S: Service> EpollLoop<S> {
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
            } => {
                if let Err(e) = stream.set_nonblocking(true) {
                    tracing::warn!(%e, "adopted connection unusable");
                    self.shared.counters.conn_closed();
                    return;
                }
                self.register(TcpStream::from_std(stream), listener, peer);
            }
            IoMsg::Shutdown => {
                self.draining = Some(Instant::now() + self.shared.config.shutdown_timeout);
                self.accept_retry.clear();
                for mut l in self.listeners.drain(..) {
                    let _ = self.poll.registry().deregister(&mut l);
                }
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    let c = &mut self.conns[key];
                    mark(&mut self.dirty, key, c);
                }
            }
        }
    }

    fn accept(&mut self, listener: usize) {
        loop {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            match l.accept() {
                Ok((stream, peer)) => {
                    let Some(owner) = self.shared.admit() else {
                        drop(stream);
                        continue;
                    };
                    self.shared.tune_socket(&stream, peer);
                    if owner == self.index {
                        self.register(stream, listener, peer);
                    } else {
                        let stream = std::net::TcpStream::from(OwnedFd::from(stream));
                        self.shared.inboxes[owner].push(IoMsg::Adopt {
                            stream,
                            listener,
                            peer,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log, retry shortly (the backlog raises no new edge).
                    tracing::warn!(%e, "accept failed");
                    self.accept_retry
                        .push((listener, Instant::now() + ACCEPT_BACKOFF));
                    return;
                }
            }
        }
    }

    fn register(&mut self, mut stream: TcpStream, listener: usize, peer: std::net::SocketAddr) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%e, "cannot register connection");
            self.shared.counters.conn_closed();
            return;
        }
        let core = self.shared.new_conn(listener, peer, self.index, key);
        entry.insert(EConn {
            stream,
            core,
            readable: true,
            writable: true,
            dirty: false,
        });
        let c = &mut self.conns[key];
        mark(&mut self.dirty, key, c);
    }

    fn drive(&mut self, key: usize) {
        let draining = self.draining.is_some();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let mut progress = false;
        for _ in 0..ROUNDS {
            progress = false;
            if c.readable && c.core.wants_read(draining) {
                match c.stream.read(c.core.read_buf()) {
                    Ok(0) => c.core.eof = true,
                    Ok(n) => {
                        c.core.on_read(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => c.core.failed = true,
                }
            }
            // Frames buffered earlier may be cut now (a completion freed in-flight room).
            self.shared
                .dispatch(&mut c.core, &mut self.scratch, &mut self.stalled);
            if c.core.has_output() && c.writable {
                match flush(&mut c.stream, &mut c.core) {
                    Ok(true) => progress = true,
                    Ok(false) => c.writable = false,
                    Err(_) => c.core.failed = true,
                }
            }
            if !progress || c.core.failed {
                break;
            }
        }
        if c.core.done(draining) {
            self.conns.remove(key);
        } else if progress {
            // Fairness bound hit with work left: continue on the next turn.
            mark(&mut self.dirty, key, c);
        }
    }
}

fn mark<S>(dirty: &mut Vec<usize>, key: usize, c: &mut EConn<S>) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}

/// Writes queued bytes until done or `WouldBlock`; `Ok(true)` if everything queued went out
/// or progress was made and the socket may take more, `Ok(false)` on `WouldBlock`.
fn flush<S>(stream: &mut TcpStream, core: &mut Conn<S>) -> io::Result<bool> {
    while core.has_output() {
        let mut iov = [IoSlice::new(&[]); IOV];
        let n = core.write_slices(&mut iov);
        match stream.write_vectored(&iov[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => core.on_written(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
