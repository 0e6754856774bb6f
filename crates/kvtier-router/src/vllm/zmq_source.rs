//! [`VllmSource`]: a tokio task that subscribes to an engine's ZeroMQ KV-event stream, keeps it
//! gap-free with the engine's replay socket, and sends kvtier [`EventMessage`]s to a channel.
//!
//! Owns the sockets, the per-rank sequence tracking and the recovery policy; decoding is
//! [`crate::decode_vllm_batch`], hashing is [`VllmConverter`], the sequence rules are
//! `stream.rs`, the replay protocol is `replay.rs`.
//!
//! ```text
//!  engine PUB ──[topic, BE64 seq, msgpack batch]──▶ SUB ─┐
//!                                                        ├─ per dp rank: SeqTracker + VllmConverter ─▶ mpsc
//!  engine ROUTER ◀──[ "", BE64 start ]── DEALER (gaps) ──┘
//! ```
//!
//! # Sequence numbers, gaps and replay
//!
//! Every vLLM/SGLang data-parallel rank runs its own publisher with its own counter starting at
//! 0 (and, when bound, its own ports: base port + rank). The source tracks sequence numbers per
//! rank named in the batch (`data_parallel_rank`, 0 when absent), so one source may also listen
//! to several ranks that connect to it. For each rank:
//!
//! - **in order**: applied;
//! - **gap** (`seq > last + 1`): counted, then batches `last + 1 ..` are requested from the
//!   replay endpoint and applied in order, duplicates skipped; if the replay does not cover the
//!   gap (no replay endpoint, the buffer starts later, nothing comes back in time) the gap is
//!   *unrepairable*: it is counted and the stream continues from what arrived, without clearing
//!   the instance (what it held before the gap mostly still is; a store under a block removed
//!   in the gap re-establishes it, and blocks whose parent was stored in the gap wait for it);
//! - **duplicate** (`seq <= last`, after a replay ran ahead of the live stream): dropped;
//! - **restart** (the live sequence goes back): `Cleared`, and the stream starts over;
//! - **late join** (the first batch seen has `seq > 0`): with a replay endpoint and
//!   [`VllmSourceBuilder::with_catch_up_on_join`] (default on), the buffered history is fetched
//!   first (best effort: blocks whose parents predate the buffer are unplaceable).
//!
//! Malformed frames are counted ([`VllmStats::decode_errors`]) and skipped. A batch whose
//! payload cannot be decoded at all is counted ([`VllmStats::undecodable_batches`]) and
//! dropped; the next batch shows the hole and the replay fetches it again. If the replayed
//! payload cannot be decoded either, it is counted again and stands for an empty batch of its
//! sequence number: it clears nothing, and the stream goes on. Bad events inside a decodable batch are skipped one by one
//! (see [`VllmConverter`]). Nothing of this stops the task.
//!
//! # Warm restarts
//!
//! [`VllmSourceHandle::state`] returns a [`VllmSourceState`] consistent with every message sent
//! so far (per rank: last applied sequence number, converter map, next event id). A source
//! built [`VllmSourceBuilder::with_state`] resumes each rank from there: its next live batch
//! continues the stream, or opens a gap replayed from `last + 1` (not a late-join replay from
//! 0, which would count stores twice), or, if the sequence went back, shows the engine
//! restarted (`Cleared`). [`VllmSourceBuilder::with_start_event_ids`] starts each instance's
//! event ids where its router expects them, so no message after a restart is a duplicate or a
//! gap there. The SUB socket is re-created when it has been idle for
//! [`VllmSourceBuilder::with_idle_reconnect`] (the `zeromq` crate does not reconnect a SUB whose
//! publisher went away); batches lost meanwhile are a gap like any other.
//!
//! # Instance ids
//!
//! Each rank is a separate kvtier instance: [`vllm_instance_id`]`(name, rank)`, the XXH3-128 of
//! the source's name and the rank, so a router can compute the id of any rank of any engine
//! from configuration alone. Event ids of an instance are 1, 2, 3, ... without holes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use kvtier_core::{BlockHasher, HashError, HashScheme};
use kvtier_events::{EventMessage, InstanceId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use zeromq::{Endpoint, Socket, SocketRecv, SubSocket, ZmqMessage};

use super::convert::{VllmConvertConfig, VllmConvertStats, VllmConverter, VllmGroupFilter};
use super::decode::{VllmBatch, VllmDecoder, decode_vllm_batch};
use super::replay;
use super::state::{RankState, VllmSourceState};
use super::stats::{Counters, VllmStats};
use super::stream::{LiveVerdict, SeqTracker};

/// The most data-parallel ranks one source follows; batches naming more ranks are rejected.
const MAX_RANKS: usize = 1024;
/// Messages buffered between the socket reader task and the runner. Short, so that a batch is
/// decoded while its bytes are still in cache from the socket read; the TCP buffers behind it
/// hold what a burst brings.
const READER_QUEUE: usize = 32;
/// Messages handled back to back before the stop signal and the idle timer are looked at.
const BURST: usize = 8;
/// State requests waiting for the task.
const STATE_QUEUE: usize = 8;
/// Pause before connecting again after a connection error.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The kvtier instance id of data-parallel rank `dp_rank` of the engine called `name`.
///
/// `XXH3-128("kvtier-vllm" || 0x00 || LE64(len(name)) || name || LE64(dp_rank))`. Engines that do
/// not send a rank are rank 0.
///
/// # Examples
///
/// ```
/// use kvtier_router::vllm_instance_id;
///
/// assert_eq!(vllm_instance_id("engine-a", 0), vllm_instance_id("engine-a", 0));
/// assert_ne!(vllm_instance_id("engine-a", 0), vllm_instance_id("engine-a", 1));
/// assert_ne!(vllm_instance_id("engine-a", 0), vllm_instance_id("engine-b", 0));
/// ```
pub fn vllm_instance_id(name: &str, dp_rank: i64) -> InstanceId {
    let mut buf = Vec::with_capacity(12 + 8 + name.len() + 8);
    buf.extend_from_slice(b"kvtier-vllm\0");
    buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&dp_rank.to_le_bytes());
    InstanceId(xxhash_rust::xxh3::xxh3_128(&buf))
}

/// A [`VllmSource`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VllmSourceError {
    /// An endpoint is not a `tcp://host:port` address.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The hashing configuration cannot make a [`BlockHasher`].
    #[error("invalid hashing configuration: {0}")]
    Hash(#[from] HashError),
    /// A duration that must be positive is zero.
    #[error("{what} must be positive")]
    ZeroDuration {
        /// Which setting.
        what: &'static str,
    },
    /// The state given to [`VllmSourceBuilder::with_state`] was taken from another source.
    #[error("state of source {found:?} given to source {expected:?}")]
    StateOfOtherSource {
        /// This source's name.
        expected: String,
        /// The name in the state.
        found: String,
    },
}

/// The event id each instance's converter starts at (see
/// [`VllmSourceBuilder::with_start_event_ids`]).
pub type StartEventIds = Arc<dyn Fn(InstanceId) -> Option<u64> + Send + Sync>;

/// [`StartEventIds`] with a `Debug` for the configuration.
#[derive(Clone)]
struct StartIds(StartEventIds);

impl std::fmt::Debug for StartIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartIds(..)")
    }
}

/// Builds a [`VllmSource`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use kvtier_router::VllmSource;
///
/// let source = VllmSource::builder("engine-a", "tcp://10.0.0.5:5557")
///     .with_replay_endpoint("tcp://10.0.0.5:5558")
///     .with_topic("kv-events")
///     .with_model("meta-llama/Llama-3.1-8B")
///     .with_default_block_size(16)
///     .with_replay_timeout(Duration::from_secs(1))
///     .build()?;
/// assert_eq!(source.endpoint(), "tcp://10.0.0.5:5557");
///
/// // Rank 2 of a data-parallel engine: vLLM binds it at the base ports + 2.
/// let rank2 = VllmSource::builder("engine-a", "tcp://10.0.0.5:5557")
///     .with_replay_endpoint("tcp://10.0.0.5:5558")
///     .with_dp_rank_offset(2)
///     .build()?;
/// assert_eq!(rank2.endpoint(), "tcp://10.0.0.5:5559");
/// # Ok::<(), kvtier_router::VllmSourceError>(())
/// ```
#[derive(Clone, Debug)]
pub struct VllmSourceBuilder {
    /// The source's configuration as given; `build` checks it and applies the rank offset.
    config: SourceConfig,
    dp_rank_offset: i64,
    state: Option<Arc<VllmSourceState>>,
}

impl VllmSourceBuilder {
    /// Sets the engine's replay (ROUTER) endpoint (default none: gaps are unrepairable).
    pub fn with_replay_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.config.replay_endpoint = Some(endpoint.into());
        self
    }

    /// Sets the topic prefix subscribed to (default `""`: every topic; vLLM's default topic is
    /// empty too).
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.config.topic = topic.into();
        self
    }

    /// Replaces the whole hashing configuration (default [`VllmConvertConfig::default`]).
    pub fn with_convert_config(mut self, config: VllmConvertConfig) -> Self {
        self.config.convert = config;
        self
    }

    /// Sets the kvtier hash scheme (default [`HashScheme::Kvtier`]).
    pub fn with_hash_scheme(mut self, scheme: HashScheme) -> Self {
        self.config.convert.scheme = scheme;
        self
    }

    /// Sets the block size used when an event says 0 (default 16).
    pub fn with_default_block_size(mut self, block_size: usize) -> Self {
        self.config.convert.default_block_size = block_size;
        self
    }

    /// Sets how many blocks each rank of the engine is expected to hold at once, on all its
    /// media (default 0: unknown), for example vLLM's `num_gpu_blocks` plus its CPU offload
    /// blocks: each rank's converter map is allocated for that many up front instead of
    /// growing while the engine warms up (see [`VllmConvertConfig::with_expected_blocks`]).
    pub fn with_expected_blocks(mut self, blocks: usize) -> Self {
        self.config.convert.expected_blocks = blocks;
        self
    }

    /// Sets the model name bound into every hash (default none). Blocks stored under a LoRA
    /// adapter also bind its name (`lora_name`; engines that send only `lora_id` bind
    /// `"lora-id:<id>"`).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.config.convert.model = Some(model.into());
        self
    }

    /// Sets which KV-cache groups of hybrid models are indexed (default
    /// [`VllmGroupFilter::FullAttention`]).
    pub fn with_group_filter(mut self, groups: VllmGroupFilter) -> Self {
        self.config.convert.groups = groups;
        self
    }

    /// Sets how long one replay request may take (default 2 s).
    pub fn with_replay_timeout(mut self, timeout: Duration) -> Self {
        self.config.replay_timeout = timeout;
        self
    }

    /// Sets after how long without a batch the SUB socket is re-created (default 30 s; `None`:
    /// never).
    pub fn with_idle_reconnect(mut self, idle: Option<Duration>) -> Self {
        self.config.idle_reconnect = idle;
        self
    }

    /// Sets whether a first batch with `seq > 0` triggers a replay of the buffered history
    /// (default true; needs a replay endpoint).
    pub fn with_catch_up_on_join(mut self, catch_up: bool) -> Self {
        self.config.catch_up_on_join = catch_up;
        self
    }

    /// Sets the most batches one replay may bring (default 100 000; vLLM buffers 10 000).
    pub fn with_max_replay_batches(mut self, max: usize) -> Self {
        self.config.max_replay_batches = max;
        self
    }

    /// Resumes from `state`, taken from a source with the same name (default: none, start
    /// empty). Each rank continues after its last applied batch: batches it missed are replayed
    /// from there (a gap), not from 0.
    pub fn with_state(mut self, state: VllmSourceState) -> Self {
        self.state = Some(Arc::new(state));
        self
    }

    /// Sets the event id each instance's converter starts at: `f(instance)` (the router's
    /// next expected id for it), or the state's / 1 when `f` says `None` (default: none). So no
    /// message after a restart is discarded as a duplicate or opens a gap.
    pub fn with_start_event_ids(
        mut self,
        f: Arc<dyn Fn(InstanceId) -> Option<u64> + Send + Sync>,
    ) -> Self {
        self.config.start_event_ids = Some(StartIds(f));
        self
    }

    /// Adds `rank` to the ports of both endpoints, as vLLM and SGLang do for data-parallel rank
    /// `rank` (default 0).
    pub fn with_dp_rank_offset(mut self, rank: i64) -> Self {
        self.dp_rank_offset = rank;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`VllmSourceError::InvalidEndpoint`] for an endpoint that is not `tcp://host:port` (or
    /// whose port overflows with the rank offset), [`VllmSourceError::Hash`] if the default
    /// block size or the model name cannot make a hasher, [`VllmSourceError::ZeroDuration`]
    /// for a zero replay timeout or idle period, [`VllmSourceError::StateOfOtherSource`] for a
    /// state taken from a source with another name.
    pub fn build(self) -> Result<VllmSource, VllmSourceError> {
        if let Some(state) = &self.state
            && state.name() != self.config.name
        {
            return Err(VllmSourceError::StateOfOtherSource {
                expected: self.config.name.clone(),
                found: state.name().to_owned(),
            });
        }
        let mut config = self.config;
        config.endpoint = checked_endpoint(&config.endpoint, self.dp_rank_offset)?;
        config.replay_endpoint = config
            .replay_endpoint
            .as_deref()
            .map(|e| checked_endpoint(e, self.dp_rank_offset))
            .transpose()?;
        config.max_replay_batches = config.max_replay_batches.max(1);
        BlockHasher::new(
            config.convert.default_block_size,
            config.convert.scheme,
            config.convert.extra_keys(None),
        )?;
        if config.replay_timeout.is_zero() {
            return Err(VllmSourceError::ZeroDuration {
                what: "replay timeout",
            });
        }
        if config.idle_reconnect.is_some_and(|d| d.is_zero()) {
            return Err(VllmSourceError::ZeroDuration {
                what: "idle reconnect period",
            });
        }
        Ok(VllmSource {
            config: Arc::new(config),
            state: self.state,
        })
    }
}

/// Parses `endpoint` as `tcp://host:port` and adds `offset` to its port.
fn checked_endpoint(endpoint: &str, offset: i64) -> Result<String, VllmSourceError> {
    let invalid = |reason: &str| VllmSourceError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    match endpoint.parse::<Endpoint>() {
        Ok(Endpoint::Tcp(host, port)) => {
            if offset == 0 {
                return Ok(endpoint.to_owned());
            }
            let port = i64::from(port)
                .checked_add(offset)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid("port out of range after the rank offset"))?;
            Ok(Endpoint::Tcp(host, port).to_string())
        }
        Ok(_) => Err(invalid("only tcp:// endpoints are supported")),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

#[derive(Clone, Debug)]
struct SourceConfig {
    name: String,
    endpoint: String,
    replay_endpoint: Option<String>,
    topic: String,
    convert: VllmConvertConfig,
    replay_timeout: Duration,
    idle_reconnect: Option<Duration>,
    catch_up_on_join: bool,
    max_replay_batches: usize,
    start_event_ids: Option<StartIds>,
}

/// A configured subscription to one engine's KV-event stream (see the module docs).
#[derive(Clone, Debug)]
pub struct VllmSource {
    config: Arc<SourceConfig>,
    state: Option<Arc<VllmSourceState>>,
}

impl VllmSource {
    /// Starts building a source called `name` (the basis of its instance ids) that subscribes
    /// to the engine's PUB `endpoint` (`tcp://host:port`).
    pub fn builder(name: impl Into<String>, endpoint: impl Into<String>) -> VllmSourceBuilder {
        VllmSourceBuilder {
            config: SourceConfig {
                name: name.into(),
                endpoint: endpoint.into(),
                replay_endpoint: None,
                topic: String::new(),
                convert: VllmConvertConfig::default(),
                replay_timeout: Duration::from_secs(2),
                idle_reconnect: Some(Duration::from_secs(30)),
                catch_up_on_join: true,
                max_replay_batches: 100_000,
                start_event_ids: None,
            },
            dp_rank_offset: 0,
            state: None,
        }
    }

    /// The PUB endpoint subscribed to (after the rank offset).
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// The replay endpoint, if any (after the rank offset).
    pub fn replay_endpoint(&self) -> Option<&str> {
        self.config.replay_endpoint.as_deref()
    }

    /// The instance id the events of `dp_rank` are attributed to.
    pub fn instance_id(&self, dp_rank: i64) -> InstanceId {
        vllm_instance_id(&self.config.name, dp_rank)
    }

    /// The hashing configuration (what a router needs to hash its queries the same way).
    pub fn convert_config(&self) -> &VllmConvertConfig {
        &self.config.convert
    }

    /// Starts the source on the current tokio runtime; it sends its messages to `out` until
    /// [`VllmSourceHandle::shutdown`] is called, the handle is dropped, or `out` is closed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self, out: mpsc::Sender<EventMessage>) -> VllmSourceHandle {
        self.start(Sink::Owned(out), None)
    }

    /// Like [`VllmSource::spawn`], and also stops when `shutdown` completes.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_with_shutdown<F>(
        self,
        out: mpsc::Sender<EventMessage>,
        shutdown: F,
    ) -> VllmSourceHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.start(Sink::Owned(out), Some(Box::pin(shutdown)))
    }

    /// Like [`VllmSource::spawn`], into a channel of shared messages, such as the ingestion
    /// queue of a router service (`RouterService::events`), without a task in between.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_shared(self, out: mpsc::Sender<Arc<EventMessage>>) -> VllmSourceHandle {
        self.start(Sink::Shared(out), None)
    }

    fn start(self, out: Sink, external: Option<BoxFuture>) -> VllmSourceHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (state_tx, state_rx) = mpsc::channel(STATE_QUEUE);
        let counters = Arc::new(Counters::default());
        let mut streams = HashMap::new();
        for rank in self.state.iter().flat_map(|s| &s.ranks) {
            let instance = vllm_instance_id(&self.config.name, rank.rank);
            let mut converter =
                VllmConverter::restore(instance, self.config.convert.clone(), &rank.converter);
            start_at(&self.config, &mut converter);
            streams.insert(
                rank.rank,
                RankStream {
                    tracker: SeqTracker::restored(rank.last_applied),
                    converter,
                },
            );
        }
        let runner = Runner {
            config: self.config,
            counters: counters.clone(),
            out,
            stop: Stop {
                rx: stop_rx,
                external,
                fired: false,
            },
            state_requests: state_rx,
            streams,
            pending: Vec::new(),
            decoder: VllmDecoder::new(),
        };
        VllmSourceHandle {
            counters,
            stop: stop_tx,
            state_requests: state_tx,
            task: tokio::spawn(runner.run()),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The task's stop signal: the handle's flag (or its drop), or the caller's future.
struct Stop {
    rx: watch::Receiver<bool>,
    external: Option<BoxFuture>,
    /// Set once either fired; the external future is never polled again after it completed.
    fired: bool,
}

impl Stop {
    /// Completes when the task must stop. Cancel-safe: a dropped wait loses nothing.
    async fn fired(&mut self) {
        if self.fired {
            return;
        }
        let Self {
            rx,
            external,
            fired,
        } = self;
        match external {
            Some(external) => {
                tokio::select! {
                    _ = rx.wait_for(|stop| *stop) => {}
                    () = external.as_mut() => {}
                }
            }
            None => {
                // An error means the handle was dropped: stop as well.
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
        *fired = true;
    }
}

/// A running [`VllmSource`]. Dropping it stops the task.
#[derive(Debug)]
pub struct VllmSourceHandle {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    state_requests: mpsc::Sender<oneshot::Sender<VllmSourceState>>,
    task: JoinHandle<()>,
}

impl VllmSourceHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> VllmStats {
        self.counters.snapshot()
    }

    /// The source's state, consistent with every message it has sent so far (`None` if the
    /// task ended). The task answers between batches: while it waits for a replay, the
    /// answer waits too (at most the replay timeout).
    pub async fn state(&self) -> Option<VllmSourceState> {
        let (tx, rx) = oneshot::channel();
        self.state_requests.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Whether the task has ended (shutdown, or the consumer closed the channel).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Signals the task to stop and waits until it has; returns the final counters.
    pub async fn shutdown(self) -> VllmStats {
        let _ = self.stop.send(true);
        // The task has no panicking path of its own; a JoinError would only mean the runtime
        // is shutting down, and the counters are still right.
        let _ = self.task.await;
        self.counters.snapshot()
    }
}

/// One data-parallel rank's stream.
struct RankStream {
    tracker: SeqTracker,
    converter: VllmConverter,
}

/// Whether the task goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Runner {
    config: Arc<SourceConfig>,
    counters: Arc<Counters>,
    out: Sink,
    stop: Stop,
    state_requests: mpsc::Receiver<oneshot::Sender<VllmSourceState>>,
    streams: HashMap<i64, RankStream>,
    /// Messages produced and not yet sent.
    pending: Vec<EventMessage>,
    /// Decodes live batches into the allocations of those already applied.
    decoder: VllmDecoder,
}

impl Runner {
    async fn run(mut self) {
        loop {
            let Some(sub) = self.connect().await else {
                return;
            };
            Counters::bump(&self.counters.connects);
            let mut reader = Reader::spawn(sub);
            let flow = loop {
                // Fast path: what the reader queued already, without a select or a timer per
                // message; the stop signal is checked below at least every BURST messages.
                if self.drain_ready(&mut reader.messages).await == Flow::Stop {
                    break Flow::Stop;
                }
                let idle = self.config.idle_reconnect;
                let received = tokio::select! {
                    biased;
                    () = self.stop.fired() => break Flow::Stop,
                    Some(reply) = self.state_requests.recv() => {
                        let _ = reply.send(self.export_state());
                        continue;
                    }
                    received = recv_within(&mut reader.messages, idle) => received,
                };
                let Some(message) = received else {
                    break Flow::Continue; // idle, or the socket broke: connect again
                };
                if self.on_live(message).await == Flow::Stop {
                    break Flow::Stop;
                }
            };
            reader.task.abort();
            if flow == Flow::Stop {
                return;
            }
        }
    }

    /// Handles up to [`BURST`] messages the reader has queued already (none if it has not).
    async fn drain_ready(&mut self, messages: &mut mpsc::Receiver<ZmqMessage>) -> Flow {
        for _ in 0..BURST {
            let Ok(message) = messages.try_recv() else {
                break;
            };
            if self.on_live(message).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// A subscribed SUB socket, or `None` when asked to stop first.
    async fn connect(&mut self) -> Option<SubSocket> {
        let config = self.config.clone();
        loop {
            let mut sub = SubSocket::new();
            // Subscribing before connecting sends the subscription in the handshake's wake.
            let attempt = async {
                sub.subscribe(&config.topic).await?;
                sub.connect(&config.endpoint).await
            };
            let connected = tokio::select! {
                biased;
                () = self.stop.fired() => return None,
                Some(reply) = self.state_requests.recv() => {
                    let _ = reply.send(self.export_state());
                    continue;
                }
                result = attempt => result.is_ok(),
            };
            if connected {
                return Some(sub);
            }
            let pause = tokio::time::sleep(RECONNECT_PAUSE);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    biased;
                    () = self.stop.fired() => return None,
                    Some(reply) = self.state_requests.recv() => {
                        let _ = reply.send(self.export_state());
                    }
                    () = &mut pause => break,
                }
            }
        }
    }

    async fn on_live(&mut self, message: ZmqMessage) -> Flow {
        let (seq, batch) = match self.decode_live(&message) {
            Live::Batch(seq, batch) => {
                Counters::bump(&self.counters.batches);
                (seq, batch)
            }
            Live::Undecodable => {
                // Its sequence number is not trusted (the payload is broken); the next batch
                // shows the gap, and the repair skips the batch if the replay brings the same
                // undecodable bytes.
                Counters::bump(&self.counters.undecodable_batches);
                return Flow::Continue;
            }
            Live::Malformed => {
                Counters::bump(&self.counters.decode_errors);
                return Flow::Continue;
            }
        };
        let rank = batch.dp_rank.unwrap_or(0);
        let Some(stream) = rank_stream(&mut self.streams, &self.config, rank) else {
            Counters::bump(&self.counters.decode_errors);
            return Flow::Continue;
        };
        let mut verdict = stream.tracker.on_live(seq);
        if verdict == LiveVerdict::Reset {
            Counters::bump(&self.counters.resets);
            stream.converter.clear(&mut self.pending);
            stream.tracker.reset();
            verdict = stream.tracker.on_live(seq);
        }
        match verdict {
            LiveVerdict::Apply | LiveVerdict::Reset => self.apply(rank, seq, &batch),
            LiveVerdict::Duplicate => Counters::bump(&self.counters.duplicates),
            LiveVerdict::Gap { from, .. } => {
                Counters::bump(&self.counters.gaps_detected);
                if self.repair(rank, from).await == Flow::Stop {
                    return Flow::Stop;
                }
                self.apply_held(rank, seq, &batch);
            }
            LiveVerdict::Join { .. } => {
                if self.config.catch_up_on_join && self.repair(rank, 0).await == Flow::Stop {
                    return Flow::Stop;
                }
                self.apply_held(rank, seq, &batch);
            }
        }
        self.decoder.recycle(batch);
        self.flush().await
    }

    /// The sequence number and batch of a live message `[topic, BE64 seq, payload]`.
    fn decode_live(&mut self, message: &ZmqMessage) -> Live {
        let (Some(seq), Some(payload), 3) = (message.get(1), message.get(2), message.len()) else {
            return Live::Malformed;
        };
        let Ok(seq) = <[u8; 8]>::try_from(&seq[..]).map(u64::from_be_bytes) else {
            return Live::Malformed;
        };
        match self.decoder.decode(payload) {
            Ok(batch) => Live::Batch(seq, batch),
            Err(_) => Live::Undecodable,
        }
    }

    /// Every rank's sequence position and converter (between batches: consistent with every
    /// message sent).
    fn export_state(&self) -> VllmSourceState {
        let mut ranks: Vec<RankState> = self
            .streams
            .iter()
            .map(|(rank, stream)| RankState {
                rank: *rank,
                last_applied: stream.tracker.last_applied(),
                converter: stream.converter.export(),
            })
            .collect();
        ranks.sort_by_key(|r| r.rank);
        VllmSourceState {
            name: self.config.name.clone(),
            ranks,
        }
    }

    /// Fetches batches `from..` of `rank` from the replay endpoint and applies those that
    /// continue the stream. A hole in what comes back is an unrepairable gap.
    async fn repair(&mut self, rank: i64, from: u64) -> Flow {
        let Some(endpoint) = self.config.replay_endpoint.clone() else {
            return Flow::Continue;
        };
        Counters::bump(&self.counters.replays_requested);
        let fetch = replay::fetch(
            endpoint,
            from,
            self.config.replay_timeout,
            self.config.max_replay_batches,
        );
        let outcome = tokio::select! {
            biased;
            () = self.stop.fired() => return Flow::Stop,
            outcome = fetch => outcome,
        };
        if !outcome.complete {
            Counters::bump(&self.counters.replay_failures);
        }
        for (seq, payload) in outcome.batches {
            let batch = match decode_vllm_batch(&payload) {
                Ok(batch) => batch,
                Err(_) => {
                    // The same bytes the engine sent live: skipping them is all there is to do.
                    Counters::bump(&self.counters.undecodable_batches);
                    empty_batch(rank)
                }
            };
            if batch.dp_rank.unwrap_or(0) != rank || seq < from {
                continue;
            }
            if !self.apply_held(rank, seq, &batch) {
                continue;
            }
            Counters::bump(&self.counters.replayed_batches);
            if self.flush().await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Applies a batch that arrives out of the live flow (replayed, or held during a repair)
    /// unless it was applied already; if batches before it are still missing, the gap is
    /// unrepairable: counted, and the stream goes on. Returns whether it was applied.
    fn apply_held(&mut self, rank: i64, seq: u64, batch: &VllmBatch) -> bool {
        let Some(stream) = self.streams.get_mut(&rank) else {
            return false;
        };
        if stream.tracker.is_applied(seq) {
            Counters::bump(&self.counters.duplicates);
            return false;
        }
        if stream
            .tracker
            .last_applied()
            .is_some_and(|last| seq > last + 1)
        {
            Counters::bump(&self.counters.unrepairable_gaps);
        }
        self.apply(rank, seq, batch);
        true
    }

    /// Applies `batch` to `rank`'s converter, with the other ranks' mappings as peers, and
    /// lets the other ranks place what waited for mappings it taught.
    fn apply(&mut self, rank: i64, seq: u64, batch: &VllmBatch) {
        if self.streams.len() == 1 {
            if let Some(stream) = self.streams.get_mut(&rank) {
                stream.converter.apply_batch(batch, &mut self.pending);
                stream.tracker.applied(seq);
            }
        } else {
            let Some(mut stream) = self.streams.remove(&rank) else {
                return;
            };
            let peers: Vec<&VllmConverter> = self.streams.values().map(|s| &s.converter).collect();
            stream
                .converter
                .apply_batch_with_peers(batch, &peers, &mut self.pending);
            for other in self.streams.values_mut() {
                other
                    .converter
                    .resolve_from_peer(&stream.converter, &mut self.pending);
            }
            stream.tracker.applied(seq);
            self.streams.insert(rank, stream);
        }
        Counters::add(&self.counters.events, batch.events.len() as u64);
    }

    /// Sends the pending messages and publishes the converters' counters.
    ///
    /// A message goes with `try_send` while the channel has room (no select, no waker); only
    /// when it is full does sending wait, and then the stop signal can interrupt it.
    async fn flush(&mut self) -> Flow {
        let mut total = VllmConvertStats::default();
        for stream in self.streams.values() {
            total.accumulate(&stream.converter.stats());
        }
        self.counters.set_convert(&total);
        let mut pending = std::mem::take(&mut self.pending);
        let mut sent = 0u64;
        let mut flow = Flow::Continue;
        for message in pending.drain(..) {
            let message = match self.out.try_send(message) {
                Ok(()) => {
                    sent += 1;
                    continue;
                }
                Err(None) => {
                    flow = Flow::Stop;
                    break;
                }
                Err(Some(message)) => message,
            };
            let delivered = tokio::select! {
                biased;
                () = self.stop.fired() => false,
                sent = self.out.send(message) => sent,
            };
            if !delivered {
                flow = Flow::Stop;
                break;
            }
            sent += 1;
        }
        Counters::add(&self.counters.messages, sent);
        // Keep the buffer's capacity for the next batch (what is left after a stop is dropped).
        pending.clear();
        self.pending = pending;
        flow
    }
}

/// Where a source's messages go.
#[derive(Debug)]
enum Sink {
    /// The caller's channel ([`VllmSource::spawn`]).
    Owned(mpsc::Sender<EventMessage>),
    /// A router service's ingestion channel ([`VllmSource::spawn_shared`]).
    Shared(mpsc::Sender<Arc<EventMessage>>),
}

impl Sink {
    /// Sends without waiting. `Err(Some(message))`: the channel is full; `Err(None)`: closed.
    fn try_send(&self, message: EventMessage) -> Result<(), Option<EventMessage>> {
        use mpsc::error::TrySendError;
        match self {
            Self::Owned(tx) => tx.try_send(message).map_err(|e| match e {
                TrySendError::Full(m) => Some(m),
                TrySendError::Closed(_) => None,
            }),
            Self::Shared(tx) => tx.try_send(Arc::new(message)).map_err(|e| match e {
                // Not shared with anyone yet: the message comes back whole.
                TrySendError::Full(m) => Arc::into_inner(m),
                TrySendError::Closed(_) => None,
            }),
        }
    }

    /// Sends, waiting for room; false if the channel is closed.
    async fn send(&self, message: EventMessage) -> bool {
        match self {
            Self::Owned(tx) => tx.send(message).await.is_ok(),
            Self::Shared(tx) => tx.send(Arc::new(message)).await.is_ok(),
        }
    }
}

/// The stream of `rank`, created on first use (`None` past [`MAX_RANKS`]).
fn rank_stream<'a>(
    streams: &'a mut HashMap<i64, RankStream>,
    config: &SourceConfig,
    rank: i64,
) -> Option<&'a mut RankStream> {
    if !streams.contains_key(&rank) && streams.len() >= MAX_RANKS {
        return None;
    }
    Some(streams.entry(rank).or_insert_with(|| {
        let mut converter =
            VllmConverter::new(vllm_instance_id(&config.name, rank), config.convert.clone());
        start_at(config, &mut converter);
        RankStream {
            tracker: SeqTracker::default(),
            converter,
        }
    }))
}

/// Starts `converter`'s event ids where [`VllmSourceBuilder::with_start_event_ids`] says.
fn start_at(config: &SourceConfig, converter: &mut VllmConverter) {
    if let Some(StartIds(f)) = &config.start_event_ids
        && let Some(id) = f(converter.instance())
    {
        converter.set_next_event_id(id);
    }
}

/// A live message, decoded.
enum Live {
    /// A batch and its sequence number.
    Batch(u64, VllmBatch),
    /// A payload that is not a batch.
    Undecodable,
    /// Not a `[topic, seq, payload]` message.
    Malformed,
}

/// What an undecodable batch of `rank` stands for.
fn empty_batch(rank: i64) -> VllmBatch {
    VllmBatch {
        ts: 0.0,
        events: Vec::new(),
        dp_rank: Some(rank),
    }
}

/// A task that owns the SUB socket and forwards its messages.
///
/// The `zeromq` crate panics (`todo!`) on some unexpected frames; in this task a panic only
/// ends the channel, and the runner connects again.
struct Reader {
    messages: mpsc::Receiver<ZmqMessage>,
    task: JoinHandle<()>,
}

impl Reader {
    fn spawn(mut sub: SubSocket) -> Self {
        // Bounded: a slow consumer stops reading the TCP stream, the publisher's high-water
        // mark drops batches, and the gap is repaired by replay, instead of memory growing here.
        let (tx, messages) = mpsc::channel(READER_QUEUE);
        let task = tokio::spawn(async move {
            while let Ok(message) = sub.recv().await {
                if tx.send(message).await.is_err() {
                    break;
                }
            }
        });
        Self { messages, task }
    }
}

/// The next message; `None` if none came within `idle` or the reader ended.
async fn recv_within(
    messages: &mut mpsc::Receiver<ZmqMessage>,
    idle: Option<Duration>,
) -> Option<ZmqMessage> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, messages.recv()).await.ok()?,
        None => messages.recv().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated_and_offset() {
        assert_eq!(
            checked_endpoint("tcp://127.0.0.1:5557", 0).unwrap(),
            "tcp://127.0.0.1:5557"
        );
        assert_eq!(
            checked_endpoint("tcp://127.0.0.1:5557", 3).unwrap(),
            "tcp://127.0.0.1:5560"
        );
        assert!(checked_endpoint("tcp://127.0.0.1:65535", 1).is_err());
        assert!(checked_endpoint("tcp://127.0.0.1:5557", -6000).is_err());
        assert!(checked_endpoint("ipc:///tmp/x", 0).is_err());
        assert!(checked_endpoint("127.0.0.1:5557", 0).is_err());
    }

    #[test]
    fn build_rejects_bad_settings() {
        let b = || VllmSource::builder("e", "tcp://127.0.0.1:1");
        assert!(b().build().is_ok());
        assert!(matches!(
            b().with_default_block_size(0).build(),
            Err(VllmSourceError::Hash(_))
        ));
        assert!(matches!(
            b().with_replay_timeout(Duration::ZERO).build(),
            Err(VllmSourceError::ZeroDuration { .. })
        ));
        assert!(matches!(
            b().with_replay_endpoint("nope").build(),
            Err(VllmSourceError::InvalidEndpoint { .. })
        ));
    }

    #[test]
    fn instance_ids_are_stable_and_distinct() {
        let a0 = vllm_instance_id("a", 0);
        assert_eq!(a0, vllm_instance_id("a", 0));
        assert_ne!(a0, vllm_instance_id("a", 1));
        // The length prefix keeps name and rank apart.
        assert_ne!(vllm_instance_id("a\0", 0), a0);
        let source = VllmSource::builder("a", "tcp://127.0.0.1:1")
            .build()
            .unwrap();
        assert_eq!(source.instance_id(0), a0);
    }
}
