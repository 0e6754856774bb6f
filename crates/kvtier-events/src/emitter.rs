//! [`EventEmitter`]: turns one block manager's registrations and removals into batched event
//! messages on a [`Publisher`].
//!
//! The emitter is a [`BlockObserver`]: install it with
//! [`BlockManagerBuilder::with_observer`](kvtier_core::BlockManagerBuilder::with_observer). The
//! manager calls it after releasing its shard locks, for primaries only (never for duplicates
//! or deduplicated registrations), and reports a removal once, when the block truly leaves the
//! tier (evicted, released with evict-on-release, or reset). Code that tracks blocks without a
//! manager uses [`EventEmitter::track`], whose [`ReleaseHandle`] announces the removal when it
//! drops, exactly once.
//!
//! Notifications of one hash from two threads can arrive swapped (observers run outside the
//! manager's locks); the batcher cancels such pairs so that the stream never announces a Remove
//! before its Create, and ends in the manager's state.
//!
//! On the hot path an event costs a policy check and a push under the emitter's own mutex; the
//! publisher is touched once per batch. A background thread flushes batches older than the
//! time limit.
//!
//! # Lock ordering
//!
//! emitter batcher mutex, then the publisher's mutex. Nothing else is locked and no user code
//! runs under either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvtier_core::{BlockObserver, Medium, SequenceHash, Tier};
use parking_lot::Mutex;

use crate::batcher::Batcher;
use crate::{EmitPolicy, EventKind, Payload, Publisher};

/// Default largest batch, in events.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// Default time limit for a pending event.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(5);

/// Counters of one emitter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitterStats {
    /// Creates handed to the batcher.
    pub creates: u64,
    /// Removes handed to the batcher.
    pub removes: u64,
    /// Events the policy chose not to announce.
    pub filtered: u64,
    /// Batches published.
    pub batches: u64,
    /// Events lost because the publisher had shut down.
    pub dropped: u64,
    /// Notifications that arrived out of order (another thread's notification of the same
    /// hash overtook them) and cancelled out instead of being announced.
    pub absorbed: u64,
}

/// Builds an [`EventEmitter`].
pub struct EventEmitterBuilder {
    publisher: Publisher,
    medium: Medium,
    policy: EmitPolicy,
    max_batch: usize,
    max_delay: Option<Duration>,
    heartbeat: Option<Duration>,
}

impl EventEmitterBuilder {
    /// The medium of the tier whose manager this emitter observes. Default: `GPU`.
    pub fn with_medium(mut self, medium: Medium) -> Self {
        self.medium = medium;
        self
    }

    /// The medium of tier `T` (same as `with_medium(T::MEDIUM)`).
    pub fn for_tier<T: Tier>(self) -> Self {
        self.with_medium(T::MEDIUM)
    }

    /// Which blocks are announced. Default: [`EmitPolicy::All`].
    pub fn with_policy(mut self, policy: EmitPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Publish once this many events are pending (at least 1). Default:
    /// [`DEFAULT_MAX_BATCH`].
    pub fn with_max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// Publish pending events within about this long of the first of them (a background
    /// thread checks; `None` disables it, leaving flushing to the size limit and
    /// [`EventEmitter::flush`]). Default: [`DEFAULT_MAX_DELAY`].
    pub fn with_max_delay(mut self, delay: Option<Duration>) -> Self {
        self.max_delay = delay;
        self
    }

    /// Publish a [`Payload::Heartbeat`] whenever the publisher has been idle this long, so a
    /// router with an expiry keeps an idle instance (set it well below the router's expiry).
    /// Needs the flusher thread ([`EventEmitterBuilder::with_max_delay`] not `None`).
    /// Default: none.
    pub fn with_heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every;
        self
    }

    /// Builds the emitter (and starts its flusher thread when a time limit is set).
    ///
    /// # Errors
    ///
    /// The operating system's error when the flusher thread cannot be spawned.
    pub fn build(self) -> std::io::Result<EventEmitter> {
        let inner = Arc::new(Inner {
            publisher: self.publisher,
            policy: self.policy,
            batcher: Mutex::new(Batcher::new(self.medium, self.policy, self.max_batch)),
            stats: Counters::default(),
            stopped: AtomicBool::new(false),
        });
        let flusher = match self.max_delay {
            Some(delay) => Some(spawn_flusher(
                Arc::downgrade(&inner),
                delay,
                self.heartbeat,
            )?),
            None => None,
        };
        Ok(EventEmitter {
            inner,
            flusher: Arc::new(Mutex::new(flusher)),
        })
    }
}

#[derive(Default)]
struct Counters {
    creates: AtomicU64,
    removes: AtomicU64,
    filtered: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
}

struct Inner {
    publisher: Publisher,
    policy: EmitPolicy,
    batcher: Mutex<Batcher>,
    stats: Counters,
    stopped: AtomicBool,
}

impl Inner {
    fn publish_all(&self, out: &mut Vec<Payload>) {
        for payload in out.drain(..) {
            let n = match &payload {
                Payload::Batch(b) => b.hashes.len() as u64,
                _ => 0,
            };
            match self.publisher.publish(payload) {
                Ok(_) => self.stats.batches.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.dropped.fetch_add(n, Ordering::Relaxed),
            };
        }
    }

    fn push(&self, kind: EventKind, hashes: impl IntoIterator<Item = SequenceHash>) {
        let mut out = Vec::new();
        let (mut pushed, mut filtered) = (0u64, 0u64);
        let mut batcher = self.batcher.lock();
        for h in hashes {
            if self.policy.emits(h) {
                batcher.push(kind, h, &mut out);
                pushed += 1;
            } else {
                filtered += 1;
            }
        }
        // Publish under the batcher lock: batches leave in the order they were formed.
        self.publish_all(&mut out);
        drop(batcher);
        let counter = match kind {
            EventKind::Create => &self.stats.creates,
            EventKind::Remove => &self.stats.removes,
        };
        if pushed > 0 {
            counter.fetch_add(pushed, Ordering::Relaxed);
        }
        if filtered > 0 {
            self.stats.filtered.fetch_add(filtered, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let mut out = Vec::new();
        let mut batcher = self.batcher.lock();
        batcher.flush(&mut out);
        self.publish_all(&mut out);
    }

    /// Flushes when the oldest pending event is `delay` old; returns when to look next.
    fn flush_due(&self, delay: Duration) -> Duration {
        let mut out = Vec::new();
        let mut batcher = self.batcher.lock();
        let Some(oldest) = batcher.oldest() else {
            return delay;
        };
        let age = oldest.elapsed();
        if age < delay {
            return delay - age;
        }
        batcher.flush(&mut out);
        self.publish_all(&mut out);
        delay
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
    }
}

fn spawn_flusher(
    inner: Weak<Inner>,
    delay: Duration,
    heartbeat: Option<Duration>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kvtier-events-flush".into())
        .spawn(move || {
            let mut wait = delay;
            loop {
                std::thread::park_timeout(wait);
                let Some(inner) = inner.upgrade() else { return };
                if inner.stopped.load(Ordering::Acquire) {
                    return;
                }
                wait = inner.flush_due(delay);
                if let Some(every) = heartbeat {
                    inner.publisher.heartbeat_if_idle(every);
                    wait = wait.min(every);
                }
            }
        })
}

/// Announces one manager's (or one tracker's) blocks on a [`Publisher`]. Clones share state.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{BlockManager, G1, SequenceHash};
/// use kvtier_events::{EventEmitter, EventKind, InstanceId, Payload, Publisher};
///
/// let publisher = Publisher::new(InstanceId(7));
/// let mut sub = publisher.subscribe();
/// let emitter = EventEmitter::builder(publisher.clone()).for_tier::<G1>().build()?;
/// let manager = BlockManager::<G1>::builder()
///     .with_block_count(8)
///     .with_observer(Arc::new(emitter.clone()))
///     .build()?;
///
/// let block = manager.allocate_blocks(1)?.pop().unwrap();
/// let block = block.stage(SequenceHash::root(1), manager.block_size()).map_err(|e| e.to_string())?;
/// let _held = manager.register_block(block).map_err(|e| e.to_string())?;
/// emitter.flush();
///
/// let msg = sub.try_recv()?;
/// let Payload::Batch(batch) = &msg.payload else { panic!() };
/// assert_eq!((batch.kind, batch.hashes.len()), (EventKind::Create, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EventEmitter {
    inner: Arc<Inner>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl EventEmitter {
    /// A builder publishing on `publisher`.
    pub fn builder(publisher: Publisher) -> EventEmitterBuilder {
        EventEmitterBuilder {
            publisher,
            medium: Medium::Gpu,
            policy: EmitPolicy::All,
            max_batch: DEFAULT_MAX_BATCH,
            max_delay: Some(DEFAULT_MAX_DELAY),
            heartbeat: None,
        }
    }

    /// The publisher this emitter feeds.
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Announces `hash` now (if the policy selects it) and returns a handle that announces its
    /// removal when dropped, exactly once.
    pub fn track(&self, hash: SequenceHash) -> ReleaseHandle {
        self.inner.push(EventKind::Create, [hash]);
        ReleaseHandle {
            inner: self.inner.clone(),
            hash,
        }
    }

    /// Publishes every pending event now.
    pub fn flush(&self) {
        self.inner.flush();
    }

    /// Flushes and stops the flusher thread. Events after this are still batched (and go out
    /// on the size limit or the next flush). Does not shut the publisher down: other emitters
    /// may share it; call [`Publisher::shutdown`] when the instance stops.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.flush();
        if let Some(handle) = self.flusher.lock().take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> EmitterStats {
        let s = &self.inner.stats;
        EmitterStats {
            creates: s.creates.load(Ordering::Relaxed),
            removes: s.removes.load(Ordering::Relaxed),
            filtered: s.filtered.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            absorbed: self.inner.batcher.lock().absorbed(),
        }
    }

    /// When the oldest unpublished event was pushed (`None` when nothing is pending).
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.inner.batcher.lock().oldest()
    }
}

impl BlockObserver for EventEmitter {
    fn registered(&self, hash: SequenceHash) {
        self.inner.push(EventKind::Create, [hash]);
    }

    fn registered_many(&self, hashes: &[SequenceHash]) {
        self.inner.push(EventKind::Create, hashes.iter().copied());
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        self.inner.push(EventKind::Remove, hashes.iter().copied());
    }
}

/// Announces the removal of a tracked block when dropped (see [`EventEmitter::track`]).
#[must_use = "dropping the handle announces the block's removal"]
pub struct ReleaseHandle {
    inner: Arc<Inner>,
    hash: SequenceHash,
}

impl ReleaseHandle {
    /// The tracked block.
    pub fn hash(&self) -> SequenceHash {
        self.hash
    }
}

impl Drop for ReleaseHandle {
    fn drop(&mut self) {
        self.inner.push(EventKind::Remove, [self.hash]);
    }
}

impl std::fmt::Debug for ReleaseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseHandle")
            .field("hash", &self.hash)
            .finish()
    }
}
