//! [`RouterService`]: the router as a process — ingestion from event sources, periodic expiry
//! and snapshots, and the HTTP API (see `http.rs` for the endpoints, `server.rs` for the
//! connection loop and its limits).
//!
//! ```text
//! sources (in-process subscribers, vLLM ZeroMQ streams, ...)
//!    -> mpsc channel of EventMessage -> ingest task (write lock, apply a batch of messages)
//! HTTP connections (limited; header and body timeouts) -> handlers (blocking pool, read lock)
//! housekeeping task: expire silent instances every second, snapshot every interval
//! ```
//!
//! A snapshot captures every managed source's state first, waits until the router applied
//! what those sources sent before it, serialises the router under its read lock, and writes
//! both files after releasing it (`sources.rs` explains the order). Stopping stops the
//! sources, lets ingestion apply what they sent, stops the HTTP server (open connections get
//! [`RouterServiceBuilder::with_shutdown_grace`], then are closed), and writes the final
//! snapshot.
//!
//! # Lock ordering
//!
//! The router's `RwLock` is never held across an `.await`, nor while a file is written; the
//! source list's mutex is never held across an `.await` and never taken under the router lock.

mod body;
mod http;
mod metrics;
mod server;
mod sources;
mod vllm_keys;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvtier_events::{EventMessage, InstanceId, RecvError, Subscriber};
use parking_lot::RwLock;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

pub use http::{
    DEFAULT_MAX_BODY_BYTES, ExtraKeysJson, InstanceJson, LoadUpdate, MAX_QUERY_BLOCKS,
    MAX_QUERY_MM_ITEMS, MAX_QUERY_TOKENS, MediumJson, MmItemJson, QueryRequest, QueryResponse,
    SMALL_BODY,
};
pub use sources::{SourceStates, SourceStatesError};

use crate::{LoadTable, Router, VllmSource, VllmSourceBuilder, VllmSourceError, VllmSourceHandle};

/// Capacity of the ingestion channel, in messages.
pub const INGEST_QUEUE: usize = 65_536;

/// Default most open HTTP connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long stopping waits for the router to apply what the stopped sources sent.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A source could not be added to a [`RouterService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddSourceError {
    /// The service runs a source of that name already (names key the saved states and the
    /// `source` label of the metrics).
    #[error("a source called {name:?} is running already")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// The source's configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] VllmSourceError),
}

/// Builds and starts a [`RouterService`].
pub struct RouterServiceBuilder {
    router: Router,
    listen: SocketAddr,
    snapshot: Option<PathBuf>,
    snapshot_every: Duration,
    loads: Option<LoadTable>,
    source_states: SourceStates,
    max_connections: usize,
    max_concurrent_queries: usize,
    max_body_bytes: usize,
    header_timeout: Duration,
    body_timeout: Duration,
    shutdown_grace: Duration,
    collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
}

impl RouterServiceBuilder {
    /// The HTTP listen address. Default: `127.0.0.1:0` (an ephemeral port; see
    /// [`RouterService::local_addr`]).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Write a snapshot to `path` (and the sources' states to
    /// [`SourceStates::path_for`]`(path)`) every `every` and when the service stops. Default:
    /// none. `every` must be positive ([`RouterServiceBuilder::start`] refuses zero).
    pub fn with_snapshot(mut self, path: PathBuf, every: Duration) -> Self {
        self.snapshot = Some(path);
        self.snapshot_every = every;
        self
    }

    /// The sources' saved states to resume from (read with [`SourceStates::load`]); a source
    /// added with [`RouterService::add_vllm`] resumes from the state saved under its name.
    /// Default: none.
    pub fn with_source_states(mut self, states: SourceStates) -> Self {
        self.source_states = states;
        self
    }

    /// Accept `POST /load {"instance": "<hex>", "load": 3.5}` into `table` (give the same
    /// table to [`RouterBuilder::with_load_signal`](crate::RouterBuilder::with_load_signal)).
    /// Only instances the router knows are accepted (404 otherwise), and the loads of
    /// instances that retire are forgotten. Default: no `/load` endpoint (404).
    pub fn with_load_table(mut self, table: LoadTable) -> Self {
        self.loads = Some(table);
        self
    }

    /// Most open HTTP connections; one more is answered 503 and closed. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Most queries parsed, hashed and looked up at once, and most bodies over
    /// [`SMALL_BODY`] read at once. Default: twice the available cores, at least 4.
    pub fn with_max_concurrent_queries(mut self, n: usize) -> Self {
        self.max_concurrent_queries = n;
        self
    }

    /// Largest request body; larger ones get 413. Default [`DEFAULT_MAX_BODY_BYTES`].
    pub fn with_max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Time a client has to send a request's headers, counted from its connection or from the
    /// previous response (so it is also the idle keep-alive timeout). Default 10 s.
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Time a client has to send a whole body (408 after it), which is also the longest a
    /// query waits for its turn (503 after it) and the longest a write of an answer waits for
    /// the client to read (the connection is closed after it). Default 30 s.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long stopping lets open connections finish before it closes them. Default 2 s.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Also export `collector`'s metrics on `GET /metrics` (counters of ingestion the caller
    /// runs itself, such as `kvtier router --kvtier`'s followers). Default: none.
    pub fn with_collector(
        mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) -> Self {
        self.collectors.push(collector);
        self
    }

    /// Binds the listener and starts the tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The bind error; [`std::io::ErrorKind::InvalidInput`] for a zero limit, timeout or
    /// snapshot interval.
    pub async fn start(self) -> std::io::Result<RouterService> {
        let invalid = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what} must be positive"),
            )
        };
        for (what, zero) in [
            ("the connection limit", self.max_connections == 0),
            ("the query concurrency", self.max_concurrent_queries == 0),
            ("the body limit", self.max_body_bytes == 0),
            ("the header timeout", self.header_timeout.is_zero()),
            ("the body timeout", self.body_timeout.is_zero()),
            (
                "the snapshot interval",
                self.snapshot.is_some() && self.snapshot_every.is_zero(),
            ),
        ] {
            if zero {
                return Err(invalid(what));
            }
        }
        let base_messages = self.router.stats().messages;
        let router = Arc::new(RwLock::new(self.router));
        let sources = sources::Sources::default();
        let counters = Arc::new(metrics::ServiceCounters::default());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metrics::RouterCollector {
            router: router.clone(),
            service: counters.clone(),
        }));
        registry.register_collector(Box::new(sources::SourcesCollector {
            sources: sources.clone(),
        }));
        for collector in self.collectors {
            registry.register_collector(collector);
        }
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(INGEST_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ingest_stop_tx, ingest_stop_rx) = watch::channel(false);
        let loads = self.loads.map(|t| Arc::new(http::Loads::new(t)));
        let shared = Arc::new(Shared {
            router: router.clone(),
            sources,
            loads: loads.clone(),
            forwarded: AtomicU64::new(0),
            base_messages,
            counters,
            source_states: self.source_states,
        });
        let app = http::app(http::AppState {
            router: router.clone(),
            metrics: Arc::new(registry),
            loads,
            limits: http::BodyLimits {
                max_body: self.max_body_bytes,
                body_timeout: self.body_timeout,
            },
            work: Arc::new(Semaphore::new(self.max_concurrent_queries)),
            large: Arc::new(Semaphore::new(self.max_concurrent_queries)),
        });
        let http = tokio::spawn(server::serve(
            listener,
            app,
            server::ConnLimits {
                max_connections: self.max_connections,
                header_timeout: self.header_timeout,
                write_timeout: self.body_timeout,
                shutdown_grace: self.shutdown_grace,
            },
            stop_rx.clone(),
        ));
        let ingest = tokio::spawn(ingest(router.clone(), rx, ingest_stop_rx));
        let housekeeping = tokio::spawn(housekeeping(
            shared.clone(),
            self.snapshot.clone(),
            self.snapshot_every,
            stop_rx,
        ));
        Ok(RouterService {
            addr,
            shared,
            events: tx,
            stop: stop_tx,
            ingest_stop: ingest_stop_tx,
            ingest,
            housekeeping,
            http,
            snapshot: self.snapshot,
        })
    }
}

/// What the service's tasks share.
struct Shared {
    router: Arc<RwLock<Router>>,
    sources: sources::Sources,
    loads: Option<Arc<http::Loads>>,
    /// Messages the service's subscriber threads put in the ingest
    /// queue.
    forwarded: AtomicU64,
    /// The router's message count when the service started.
    base_messages: u64,
    counters: Arc<metrics::ServiceCounters>,
    source_states: SourceStates,
}

impl Shared {
    /// Waits (at most `wait`) until the router applied every message its sources and subscriber threads
    /// had queued when this was called. Messages sent through [`RouterService::events`] count
    /// too, so with such senders the wait may end early.
    async fn applied_all(&self, wait: Duration) -> bool {
        let target =
            self.base_messages + self.forwarded.load(Ordering::Acquire) + self.sources.sent();
        let deadline = Instant::now() + wait;
        loop {
            if self.router.read().stats().messages >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Captures the sources' states, then (once the router has applied what they sent)
    /// the router, and writes both files (see `sources.rs` for the order). A failure is
    /// counted, logged on stderr and returned.
    async fn snapshot(&self, path: &Path, states: Option<SourceStates>) -> Result<(), String> {
        let states = match states {
            Some(s) => s,
            None => self.sources.capture().await,
        };
        self.applied_all(DRAIN_WAIT).await;
        let router = self.router.clone();
        let path_owned = path.to_owned();
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            // Serialised under the read lock, written after releasing it.
            let bytes = router.read().snapshot_bytes().map_err(|e| e.to_string())?;
            crate::write_snapshot(&path_owned, &bytes).map_err(|e| e.to_string())?;
            states
                .save(&SourceStates::path_for(&path_owned))
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match &written {
            Ok(()) => metrics::ServiceCounters::bump(&self.counters.snapshots),
            Err(e) => {
                metrics::ServiceCounters::bump(&self.counters.snapshot_failures);
                eprintln!("kvtier router: snapshot {} failed: {e}", path.display());
            }
        }
        written
    }
}

/// A running router service.
///
/// # Examples
///
/// ```
/// use kvtier_router::{Router, RouterService};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let service = RouterService::builder(Router::builder().build()).start().await?;
/// let addr = service.local_addr(); // POST http://{addr}/query
/// assert!(addr.ip().is_loopback());
/// service.stop().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RouterService {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<Arc<EventMessage>>,
    stop: watch::Sender<bool>,
    ingest_stop: watch::Sender<bool>,
    ingest: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    http: JoinHandle<std::io::Result<()>>,
    snapshot: Option<PathBuf>,
}

impl RouterService {
    /// A builder serving `router`.
    pub fn builder(router: Router) -> RouterServiceBuilder {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        RouterServiceBuilder {
            router,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            snapshot: None,
            snapshot_every: Duration::from_secs(60),
            loads: None,
            source_states: SourceStates::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_queries: (2 * cores).max(4),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            collectors: Vec::new(),
        }
    }

    /// The address the HTTP API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared router (for in-process queries and for attaching replay sources).
    pub fn router(&self) -> &Arc<RwLock<Router>> {
        &self.shared.router
    }

    /// Where sources send messages. Sending waits when the queue is full (back-pressure on
    /// the source, never on a block manager: publishers keep their own buffers).
    pub fn events(&self) -> mpsc::Sender<Arc<EventMessage>> {
        self.events.clone()
    }

    /// Forwards an in-process subscriber's messages (and its lag reports, by asking the
    /// router to repair) from a dedicated thread until the service stops or the stream closes.
    ///
    /// # Errors
    ///
    /// The operating system's error when the thread cannot be spawned.
    pub fn attach_subscriber(&self, mut sub: Subscriber) -> std::io::Result<()> {
        let tx = self.events.clone();
        let stop = self.stop.subscribe();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("kvtier-router-sub".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while !*stop.borrow() {
                    match sub.recv_timeout(Duration::from_millis(50)) {
                        Ok(m) => {
                            batch.push(m);
                            let _ = sub.try_recv_many(&mut batch, 1024);
                            for m in batch.drain(..) {
                                if tx.blocking_send(m).is_err() {
                                    return;
                                }
                                shared.forwarded.fetch_add(1, Ordering::Release);
                            }
                        }
                        // Lost messages show up as a gap at the router, which repairs it.
                        Err(RecvError::Lagged { .. } | RecvError::Empty) => {}
                        Err(_) => return,
                    }
                }
            })?;
        Ok(())
    }

    /// Starts a vLLM/SGLang ZeroMQ source feeding this service, unmanaged: stop it with the
    /// handle; its counters are not in `/metrics` and its state is not saved (see
    /// [`RouterService::add_vllm`]).
    ///
    /// The source sends straight into the ingestion queue (no task in between), so its
    /// messages wait there with those of every other source. For full speed from the first
    /// event, size the source's maps
    /// ([`VllmSourceBuilder::with_expected_blocks`](crate::VllmSourceBuilder::with_expected_blocks))
    /// and the router's index
    /// ([`RouterBuilder::with_expected_blocks`](crate::RouterBuilder::with_expected_blocks)).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_vllm(&self, source: VllmSource) -> VllmSourceHandle {
        source.spawn_shared(self.events.clone())
    }

    /// Starts the vLLM/SGLang source `builder` under `name`, managed by the service: it
    /// resumes from the state saved under `name` (see
    /// [`RouterServiceBuilder::with_source_states`]) with event ids that continue the router's,
    /// its counters are in `/metrics` with `source="<name>"`, its state is saved with every
    /// snapshot, and [`RouterService::stop`] stops it.
    ///
    /// # Errors
    ///
    /// [`AddSourceError::Duplicate`] when a source of that name runs already,
    /// [`AddSourceError::Invalid`] when the builder does not build.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn add_vllm(
        &self,
        name: impl Into<String>,
        builder: VllmSourceBuilder,
    ) -> Result<(), AddSourceError> {
        let name = name.into();
        if self.shared.sources.contains(&name) {
            return Err(AddSourceError::Duplicate { name });
        }
        let router = self.shared.router.clone();
        let next_event_ids = Arc::new(move |id: InstanceId| router.read().next_event_id(id));
        let builder = sources::resume(
            builder,
            self.shared.source_states.get(&name),
            next_event_ids,
        );
        let source = builder.build()?;
        let handle = source.spawn_shared(self.events.clone());
        self.shared.sources.add(sources::RunningSource {
            name,
            handle: Arc::new(handle),
        });
        Ok(())
    }

    /// Stops the managed sources, lets ingestion apply what they sent, stops housekeeping and
    /// the HTTP server (open connections get the shutdown grace, then are closed), then
    /// writes the final snapshot.
    ///
    /// # Errors
    ///
    /// The HTTP server's error, or the final snapshot's.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        // Housekeeping first: a snapshot it has begun completes while ingestion still runs.
        let _ = self.housekeeping.await;
        let states = self.shared.sources.stop_all().await;
        self.shared.applied_all(DRAIN_WAIT).await;
        let _ = self.ingest_stop.send(true);
        let _ = self.ingest.await;
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(path) = &self.snapshot {
            self.shared
                .snapshot(path, Some(states))
                .await
                .map_err(|e| std::io::Error::other(format!("final snapshot: {e}")))?;
        }
        served
    }
}

async fn ingest(
    router: Arc<RwLock<Router>>,
    mut rx: mpsc::Receiver<Arc<EventMessage>>,
    mut stop: watch::Receiver<bool>,
) {
    // Messages applied per write lock: enough to amortise the lock, few enough that a query
    // never waits long behind ingestion (64 messages of a few hundred events: well under 1 ms).
    const PER_LOCK: usize = 64;
    let mut batch = Vec::with_capacity(PER_LOCK);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, PER_LOCK) => {
                if n == 0 {
                    return;
                }
                let now = Instant::now();
                let jobs = {
                    let mut r = router.write();
                    for m in batch.drain(..) {
                        r.apply_at(m, now);
                    }
                    r.take_repairs()
                };
                if !jobs.is_empty() {
                    spawn_repairs(router.clone(), jobs);
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Fetches gap repairs on a thread of their own (a replay or a dump may block on the network
/// for as long as the source takes), applying each result under the write lock and fetching
/// any repair that result queued. Neither the ingest task nor the lock waits for a source.
fn spawn_repairs(router: Arc<RwLock<Router>>, jobs: Vec<crate::RepairJob>) {
    let unrun = jobs.clone();
    let run = {
        let router = router.clone();
        move || {
            let mut queue = std::collections::VecDeque::from(jobs);
            while let Some(job) = queue.pop_front() {
                let result = job.fetch();
                let mut r = router.write();
                r.apply_repair(result);
                queue.extend(r.take_repairs());
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name("kvtier-router-repair".into())
        .spawn(run);
    if let Err(e) = spawned {
        // No thread to fetch on: the jobs fail, and their instances' gaps wait for the next
        // early message (which queues a new job) or the buffer limit.
        let mut r = router.write();
        for job in unrun {
            r.apply_repair(job.fail(kvtier_events::ReplayError::Unavailable(e.to_string())));
        }
    }
}

async fn housekeeping(
    shared: Arc<Shared>,
    snapshot: Option<PathBuf>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(every));
    let mut last_snapshot = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let tidy = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            tidy.router.write().expire(Instant::now());
            if let Some(loads) = &tidy.loads {
                loads.forget_unknown(&tidy.router.read());
            }
        })
        .await;
        if let Some(path) = &snapshot
            && last_snapshot.elapsed() >= every
        {
            last_snapshot = Instant::now();
            // Counted and logged; the next interval tries again.
            let _ = shared.snapshot(path, None).await;
        }
    }
}
