//! Starting and stopping a server: [`ServerBuilder`] (listeners, backend, threads, limits),
//! the running [`Server`] handle and its graceful [`shutdown`](Server::shutdown), and the
//! SIGINT/SIGTERM helper for the CLI.
//!
//! ```text
//! shutdown(): every IO thread stops accepting and reading, closes reply streams (their
//!             sends fail), answers what else is in flight and flushes it (or gives up at
//!             shutdown_timeout), closes its connections, exits
//!          -> the ring closes, workers finish and exit
//!          -> Service::drain()
//!          -> return
//! ```

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{BACKEND_ENV, Backend, BackendChoice, Bind, ListenerConfig, ServerConfig};
use crate::conn::Limits;
use crate::counters::CountersSnapshot;
use crate::epoll::EpollLoop;
use crate::framing::Framer;
use crate::inbox::{Inbox, IoMsg};
use crate::pool::PoolClass;
use crate::runtime::{EventLoop, ListenerSpec, Shared};
use crate::service::Service;
use crate::uring;

/// Why a server did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The builder has no listener.
    #[error("no listener configured")]
    NoListener,
    /// io_uring was forced but the kernel refuses it.
    #[error("io_uring backend unavailable: {0}")]
    UringUnavailable(io::Error),
    /// A setting is out of range.
    #[error("invalid setting {key}: {reason}")]
    Config {
        /// The setting's name.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Creating a thread, ring or eventfd failed.
    #[error("server setup failed: {0}")]
    Io(#[from] io::Error),
    /// A server thread panicked or failed; the others were still stopped and joined.
    #[error("server thread {thread} failed: {reason}")]
    Thread {
        /// The thread's name.
        thread: String,
        /// The error or panic message.
        reason: String,
    },
}

/// Builds a [`Server`]: listeners with their framers, then knobs (each setter states its
/// default), then [`start`](Self::start).
pub struct ServerBuilder<S: Service> {
    service: Arc<S>,
    listeners: Vec<ListenerConfig>,
    config: ServerConfig,
}

impl<S: Service> ServerBuilder<S> {
    /// A builder serving `service`.
    pub fn new(service: S) -> Self {
        Self::with_shared_service(Arc::new(service))
    }

    /// A builder serving a service the caller keeps a handle to (to read its state in tests,
    /// or share it with other parts of the process).
    pub fn with_shared_service(service: Arc<S>) -> Self {
        Self {
            service,
            listeners: Vec::new(),
            config: ServerConfig::default(),
        }
    }

    /// Listens on `addr` (port 0: any free port; see [`Server::local_addrs`]) and cuts its
    /// connections' bytes with `framer`. Listener indices follow the order of calls.
    pub fn listen(self, addr: SocketAddr, framer: impl Framer) -> Self {
        self.with_listener(ListenerConfig::new(addr, framer))
    }

    /// Like [`listen`](Self::listen), on an already bound listener.
    pub fn listen_on(self, listener: TcpListener, framer: impl Framer) -> Self {
        self.with_listener(ListenerConfig::from_listener(listener, framer))
    }

    /// Adds a listener with its own options (ordered replies, limits).
    pub fn with_listener(mut self, listener: ListenerConfig) -> Self {
        self.listeners.push(listener);
        self
    }

    /// IO backend. Default: [`BackendChoice::Auto`].
    pub fn with_backend(mut self, backend: BackendChoice) -> Self {
        self.config.backend = backend;
        self
    }

    /// IO threads. Default: half the cores, rounded up (1 on 2 cores).
    pub fn with_io_threads(mut self, n: usize) -> Self {
        self.config.io_threads = n;
        self
    }

    /// Worker threads calling [`Service::handle`]. Default: one per core.
    pub fn with_workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// Largest frame, header included, on every listener. Default: 64 MiB.
    pub fn with_max_frame_bytes(mut self, n: usize) -> Self {
        self.config.max_frame_bytes = n;
        self
    }

    /// Connections open at once; more are accepted and closed at once (counted). Default 4096.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Requests of one connection handed to workers and not yet answered; at the cap the
    /// connection is not read. Default: 128.
    pub fn with_max_in_flight_per_conn(mut self, n: usize) -> Self {
        self.config.max_in_flight_per_conn = n;
        self
    }

    /// Request bytes of one connection handed to workers and not yet answered; at the cap the
    /// connection is not read (a frame being read may still complete, so the bound is this
    /// plus one `max_frame_bytes`). Default: 64 MiB.
    pub fn with_max_in_flight_bytes_per_conn(mut self, n: usize) -> Self {
        self.config.max_in_flight_bytes_per_conn = n;
        self
    }

    /// Response bytes queued for one connection before it stops being read (a client that
    /// does not read its replies), and the most a [`ReplyStream`](crate::ReplyStream) may
    /// have pending on it (beyond it frames are refused as congested). Default: 16 MiB. A
    /// connection's memory is bounded by this plus `max_in_flight_per_conn` replies (and one
    /// stream frame, or each stream's last reply).
    pub fn with_max_queued_response_bytes(mut self, n: usize) -> Self {
        self.config.max_queued_response_bytes = n;
        self
    }

    /// TCP congestion control for connections whose peer is a loopback address (`None`: the
    /// system's default, for every connection). Default: `None`.
    ///
    /// On a host whose default is a pacing algorithm (`bbr`), `cubic` on loopback trades
    /// throughput between few and many connections: on the 2-core test machine, 256 KiB GETs
    /// and PUTs through 1–4 connections ran 7–39% faster with it, through 64 connections 9–16%
    /// slower (`docs/server-bench.md`). Other peers keep the system's choice. A name the
    /// kernel does not offer is logged once and ignored.
    pub fn with_loopback_congestion(mut self, name: Option<String>) -> Self {
        self.config.loopback_congestion = name.filter(|n| !n.is_empty());
        self
    }

    /// Initial read buffer per connection. Default: 64 KiB.
    pub fn with_read_buffer_bytes(mut self, n: usize) -> Self {
        self.config.read_buffer_bytes = n;
        self
    }

    /// The request buffer pool's size classes. Default: 1024 × 4 KiB, 64 × 260 KiB,
    /// 32 × 1 MiB + 4 KiB.
    pub fn with_pool_classes(mut self, classes: Vec<PoolClass>) -> Self {
        self.config.pool_classes = classes;
        self
    }

    /// Bytes of heap buffers (frames larger than every pool class, or beyond a class's
    /// chunks) kept for reuse instead of freed. Default: 256 MiB.
    pub fn with_pool_spare_bytes(mut self, n: usize) -> Self {
        self.config.pool_spare_bytes = n;
        self
    }

    /// Slots of the ring from IO threads to workers (rounded up to a power of two).
    /// Default: 4096.
    pub fn with_ring_slots(mut self, n: usize) -> Self {
        self.config.ring_slots = n;
        self
    }

    /// Spin rounds of an idle worker before it parks. Default: 200.
    pub fn with_worker_spins(mut self, n: u32) -> Self {
        self.config.worker_spins = n;
        self
    }

    /// How long a graceful shutdown waits for in-flight requests before closing their
    /// connections. Default: 30 s.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Binds the listeners, picks the backend (logged), starts the IO threads and workers.
    ///
    /// # Errors
    ///
    /// [`ServerError`]: no listener, a bind failure, a forced io_uring the kernel refuses, a
    /// zero thread count, or a setup syscall failing.
    pub fn start(self) -> Result<Server, ServerError> {
        let Self {
            service,
            listeners,
            config,
        } = self;
        if listeners.is_empty() {
            return Err(ServerError::NoListener);
        }
        for (key, value) in [
            ("io_threads", config.io_threads),
            ("workers", config.workers),
            ("max_frame_bytes", config.max_frame_bytes),
        ] {
            if value == 0 {
                return Err(ServerError::Config {
                    key,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let mut bound = Vec::new();
        let mut specs = Vec::new();
        for listener in listeners {
            let ListenerConfig {
                bind,
                framer,
                ordered,
                max_frame_bytes,
                max_in_flight_per_conn,
            } = listener;
            bound.push(match bind {
                Bind::Addr(addr) => {
                    bind_patiently(addr).map_err(|source| ServerError::Bind { addr, source })?
                }
                Bind::Bound(l) => l,
            });
            let max_frame = max_frame_bytes.unwrap_or(config.max_frame_bytes);
            if max_frame == 0 {
                return Err(ServerError::Config {
                    key: "max_frame_bytes",
                    reason: "must be at least 1".into(),
                });
            }
            specs.push(ListenerSpec {
                framer,
                ordered,
                limits: Limits {
                    max_frame,
                    max_in_flight: max_in_flight_per_conn
                        .unwrap_or(config.max_in_flight_per_conn)
                        .max(1),
                    max_in_flight_bytes: config.max_in_flight_bytes_per_conn.max(1),
                    max_queued: config.max_queued_response_bytes.max(1),
                    read_buffer: config.read_buffer_bytes,
                },
            });
        }
        let local_addrs = bound
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let backend = choose_backend(config.backend)?;
        tracing::info!(
            backend = backend.name(),
            io_threads = config.io_threads,
            workers = config.workers,
            ?local_addrs,
            "kvtier server starting"
        );

        let inboxes = (0..config.io_threads)
            .map(|_| Inbox::new().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared::new(
            service.clone(),
            config.clone(),
            specs,
            inboxes.clone(),
        ));

        let mut server = Server {
            local_addrs,
            backend,
            inboxes,
            io_threads: Vec::new(),
            workers: Vec::new(),
            stop: Some(Box::new({
                let shared = shared.clone();
                move || shared.ring.close()
            })),
            drain: Some(Box::new(move || service.drain())),
            snapshot: Arc::new({
                let counters = shared.counters.clone();
                move || counters.snapshot()
            }),
        };
        for i in 0..config.workers {
            let shared = shared.clone();
            server.workers.push(
                std::thread::Builder::new()
                    .name(format!("kvtier-worker-{i}"))
                    .spawn(move || {
                        shared.run_worker();
                        Ok(())
                    })?,
            );
        }
        let mut listeners = Some(bound);
        for i in 0..config.io_threads {
            // IO thread 0 accepts on every listener and hands connections round robin.
            let mine = if i == 0 {
                listeners.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let shared = shared.clone();
            let spawned = match backend {
                Backend::Epoll => spawn_io_thread::<EpollLoop<S>, S>(shared, i, mine),
                Backend::Uring => spawn_io_thread::<uring::UringLoop<S>, S>(shared, i, mine),
            };
            match spawned {
                Ok(handle) => server.io_threads.push(handle),
                Err(e) => {
                    // Dropping `server` stops the threads already started; a service that
                    // never served has nothing to drain.
                    server.drain = None;
                    return Err(e.into());
                }
            }
        }
        Ok(server)
    }
}

/// Starts IO thread `index` on backend `L`. The loop is built on its own thread (io_uring's
/// operation table holds raw pointers and never leaves it); a setup error is returned here.
fn spawn_io_thread<L: EventLoop<S>, S: Service>(
    shared: Arc<Shared<S>>,
    index: usize,
    listeners: Vec<TcpListener>,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let (ready, started) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("kvtier-io-{index}"))
        .spawn(move || match L::new(shared, index, listeners) {
            Ok(event_loop) => {
                let _ = ready.send(Ok(()));
                event_loop.run()
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                Ok(())
            }
        })?;
    match started.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("IO thread exited during setup")),
    }
}

fn choose_backend(choice: BackendChoice) -> Result<Backend, ServerError> {
    resolve_backend(
        choice,
        std::env::var(BACKEND_ENV).ok().as_deref(),
        uring::probe,
    )
}

/// The backend for `choice`, the value of [`BACKEND_ENV`] (consulted only for `Auto`) and
/// whether io_uring works here (`probe`, called only when io_uring is a candidate).
fn resolve_backend(
    choice: BackendChoice,
    env: Option<&str>,
    probe: impl FnOnce() -> io::Result<()>,
) -> Result<Backend, ServerError> {
    let choice = match (choice, env) {
        (BackendChoice::Auto, Some("epoll")) => BackendChoice::Force(Backend::Epoll),
        (BackendChoice::Auto, Some("uring" | "io_uring")) => BackendChoice::Force(Backend::Uring),
        (BackendChoice::Auto, Some(other)) if other != "auto" && !other.is_empty() => {
            tracing::warn!(
                value = other,
                "unknown {BACKEND_ENV}; choosing automatically"
            );
            BackendChoice::Auto
        }
        (choice, _) => choice,
    };
    match choice {
        BackendChoice::Force(Backend::Epoll) => Ok(Backend::Epoll),
        BackendChoice::Force(Backend::Uring) => probe()
            .map(|()| Backend::Uring)
            .map_err(ServerError::UringUnavailable),
        BackendChoice::Auto => match probe() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                tracing::info!(%e, "io_uring unavailable; using epoll");
                Ok(Backend::Epoll)
            }
        },
    }
}

type Stopper = Box<dyn FnOnce() + Send>;

/// A running server. [`shutdown`](Self::shutdown) stops it gracefully; dropping it does the
/// same (errors are then only logged).
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    backend: Backend,
    inboxes: Vec<Arc<Inbox>>,
    io_threads: Vec<JoinHandle<io::Result<()>>>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    stop: Option<Stopper>,
    drain: Option<Stopper>,
    snapshot: CountersSource,
}

/// Reads a server's counters; see [`Server::counters_source`].
pub type CountersSource = Arc<dyn Fn() -> CountersSnapshot + Send + Sync>;

impl Server {
    /// The bound address of each listener, in the order they were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The backend the server runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The counters now.
    pub fn counters(&self) -> CountersSnapshot {
        (self.snapshot)()
    }

    /// A handle that reads the counters from anywhere, for as long as it is kept (a metrics
    /// endpoint served by the service itself); after shutdown it reads the final values.
    pub fn counters_source(&self) -> CountersSource {
        Arc::clone(&self.snapshot)
    }

    /// Stops accepting, answers and flushes in-flight requests, closes connections, stops the
    /// workers, calls [`Service::drain`], and joins every thread.
    ///
    /// Open [`ReplyStream`](crate::ReplyStream)s are not waited for: they are closed at once
    /// (`try_send` fails with [`StreamError::Closed`](crate::StreamError::Closed)) and their
    /// connections close once everything else is answered and written. Waiting for the rest
    /// is bounded by the shutdown timeout.
    ///
    /// # Errors
    ///
    /// [`ServerError::Thread`] if a thread panicked or its loop failed (every other thread
    /// is still stopped and joined first).
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop_all()
    }

    /// Blocks until SIGINT or SIGTERM, then shuts down gracefully (for `kvtier serve`).
    ///
    /// # Errors
    ///
    /// Installing the signal handlers fails, or as [`shutdown`](Self::shutdown).
    pub fn run_until_signal(self) -> Result<(), ServerError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "signal received; shutting down");
        }
        self.shutdown()
    }

    fn stop_all(&mut self) -> Result<(), ServerError> {
        let Some(stop) = self.stop.take() else {
            return Ok(());
        };
        for inbox in &self.inboxes {
            inbox.push(IoMsg::Shutdown);
        }
        let mut first_error = None;
        for (i, t) in self.io_threads.drain(..).enumerate() {
            record(&mut first_error, format!("kvtier-io-{i}"), t.join());
        }
        stop();
        for (i, t) in self.workers.drain(..).enumerate() {
            record(&mut first_error, format!("kvtier-worker-{i}"), t.join());
        }
        if let Some(drain) = self.drain.take() {
            drain();
        }
        tracing::info!("kvtier server stopped");
        first_error.map_or(Ok(()), Err)
    }
}

fn record(
    first: &mut Option<ServerError>,
    thread: String,
    joined: std::thread::Result<io::Result<()>>,
) {
    let reason = match joined {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into()),
    };
    tracing::error!(%thread, %reason, "server thread failed");
    first.get_or_insert(ServerError::Thread { thread, reason });
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("backend", &self.backend)
            .finish()
    }
}

/// How long a bind waits for the port to be released.
const BIND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Binds `addr`, waiting up to [`BIND_PATIENCE`] while it is in use: a process killed a
/// moment ago may still hold its listener (an io_uring instance is torn down by the kernel
/// in the background, with its pending accept holding the socket), and a restart right
/// after `kill -9` must not fail for that.
fn bind_patiently(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + BIND_PATIENCE;
    loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn auto_falls_back_to_epoll_when_io_uring_is_refused() {
        let auto = BackendChoice::Auto;
        assert_eq!(
            resolve_backend(auto, None, || Ok(())).unwrap(),
            Backend::Uring
        );
        assert_eq!(
            resolve_backend(auto, None, refused).unwrap(),
            Backend::Epoll
        );
        assert_eq!(
            resolve_backend(auto, Some("auto"), refused).unwrap(),
            Backend::Epoll
        );
        assert_eq!(
            resolve_backend(auto, Some("bogus"), || Ok(())).unwrap(),
            Backend::Uring
        );
    }

    #[test]
    fn forcing_picks_one_backend_or_fails() {
        let never = || -> io::Result<()> { panic!("epoll must not probe io_uring") };
        let epoll = BackendChoice::Force(Backend::Epoll);
        let uring = BackendChoice::Force(Backend::Uring);
        assert_eq!(
            resolve_backend(epoll, Some("uring"), never).unwrap(),
            Backend::Epoll
        );
        assert!(matches!(
            resolve_backend(uring, None, refused),
            Err(ServerError::UringUnavailable(_))
        ));
        // The environment forces too, when the configuration leaves the choice open.
        assert_eq!(
            resolve_backend(BackendChoice::Auto, Some("epoll"), never).unwrap(),
            Backend::Epoll
        );
        assert!(resolve_backend(BackendChoice::Auto, Some("uring"), refused).is_err());
    }
}
