//! [`RouterService`]: the router as a process — ingestion from event sources, periodic expiry
//! and snapshots, and the HTTP API (see `http.rs` for the endpoints).
//!
//! ```text
//! sources (in-process subscribers, vLLM ZeroMQ streams, ...)
//!    -> mpsc channel of EventMessage -> ingest task (write lock, apply a batch of messages)
//! HTTP handlers (read lock, per-thread query scratch)
//! housekeeping task: expire silent instances every second, snapshot every interval
//! ```
//!
//! Stopping drains nothing that was not yet received, writes a final snapshot, and returns.

mod http;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_events::{EventMessage, RecvError, Subscriber};
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use http::{
    ExtraKeysJson, InstanceJson, LoadUpdate, MAX_QUERY_BLOCKS, MediumJson, QueryRequest,
    QueryResponse,
};

use crate::{LoadTable, Router, VllmSource, VllmSourceHandle};

/// Capacity of the ingestion channel, in messages.
pub const INGEST_QUEUE: usize = 65_536;

/// Builds and starts a [`RouterService`].
pub struct RouterServiceBuilder {
    router: Router,
    listen: SocketAddr,
    snapshot: Option<PathBuf>,
    snapshot_every: Duration,
    loads: Option<LoadTable>,
}

impl RouterServiceBuilder {
    /// The HTTP listen address. Default: `127.0.0.1:0` (an ephemeral port; see
    /// [`RouterService::local_addr`]).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Write a snapshot to `path` every `every` and when the service stops. Default: none.
    pub fn with_snapshot(mut self, path: PathBuf, every: Duration) -> Self {
        self.snapshot = Some(path);
        self.snapshot_every = every.max(Duration::from_millis(10));
        self
    }

    /// Accept `POST /load {"instance": "<hex>", "load": 3.5}` into `table` (give the same
    /// table to [`RouterBuilder::with_load_signal`](crate::RouterBuilder::with_load_signal)).
    /// Default: no `/load` endpoint (404).
    pub fn with_load_table(mut self, table: LoadTable) -> Self {
        self.loads = Some(table);
        self
    }

    /// Binds the listener and starts the tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The bind error.
    pub async fn start(self) -> std::io::Result<RouterService> {
        let router = Arc::new(RwLock::new(self.router));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metrics::RouterCollector {
            router: router.clone(),
        }));
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(INGEST_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = http::app(http::AppState {
            router: router.clone(),
            metrics: Arc::new(registry),
            loads: self.loads,
        });
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });
        let ingest = tokio::spawn(ingest(router.clone(), rx, stop_rx.clone()));
        let housekeeping = tokio::spawn(housekeeping(
            router.clone(),
            self.snapshot.clone(),
            self.snapshot_every,
            stop_rx,
        ));
        Ok(RouterService {
            addr,
            router,
            events: tx,
            stop: stop_tx,
            tasks: vec![ingest, housekeeping],
            http,
            snapshot: self.snapshot,
        })
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
    router: Arc<RwLock<Router>>,
    events: mpsc::Sender<Arc<EventMessage>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http: JoinHandle<std::io::Result<()>>,
    snapshot: Option<PathBuf>,
}

impl RouterService {
    /// A builder serving `router`.
    pub fn builder(router: Router) -> RouterServiceBuilder {
        RouterServiceBuilder {
            router,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            snapshot: None,
            snapshot_every: Duration::from_secs(60),
            loads: None,
        }
    }

    /// The address the HTTP API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared router (for in-process queries and for attaching replay sources).
    pub fn router(&self) -> &Arc<RwLock<Router>> {
        &self.router
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

    /// Starts a vLLM/SGLang ZeroMQ source feeding this service; stop it with the handle.
    ///
    /// The source sends straight into the ingestion queue (no task in between), so its
    /// messages wait there with those of every other source.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_vllm(&self, source: VllmSource) -> VllmSourceHandle {
        source.spawn_shared(self.events.clone())
    }

    /// Stops ingestion, housekeeping and the HTTP server, then writes the final snapshot.
    ///
    /// # Errors
    ///
    /// The HTTP server's error, or the snapshot's I/O error.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(path) = &self.snapshot {
            let router = self.router.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || router.read().save_snapshot(&path))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(|e| std::io::Error::other(e.to_string()))?;
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
                let mut r = router.write();
                for m in batch.drain(..) {
                    r.apply_at(m, now);
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn housekeeping(
    router: Arc<RwLock<Router>>,
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
        router.write().expire(Instant::now());
        if let Some(path) = &snapshot
            && last_snapshot.elapsed() >= every
        {
            last_snapshot = Instant::now();
            let router = router.clone();
            let path = path.clone();
            let _ = tokio::task::spawn_blocking(move || router.read().save_snapshot(&path)).await;
        }
    }
}
