//! [`Publisher`]: one instance's event stream, fanned out to any number of subscribers, with a
//! bounded replay buffer and the instance's current block set for dumps.
//!
//! The publisher owns event ids: every published message gets the next id (1, 2, 3, ...).
//! Messages are kept in a ring of the last `replay_capacity` messages. Subscribers are cursors
//! into that ring: publishing never waits for them. A subscriber that falls more than the ring
//! behind is told which ids it lost ([`RecvError::Lagged`]) and continues at the oldest message
//! still held; it can then [`ReplaySource::dump`] to resynchronise.
//!
//! The publisher also applies each message to the instance's current block set (per medium),
//! so [`Publisher::dump`] answers with exactly the state the stream has described up to its
//! last id.
//!
//! # Lock ordering
//!
//! One mutex guards the ring, the set and the id counter; it is never held while calling out.
//! A replay holds it only to clone the message handles asked for, and a dump only to copy the
//! set (the copy is sorted after the mutex is released): an emitter publishing from a block
//! manager's hot path never waits for a consumer's repair beyond that copy.
//! Emitters call [`Publisher::publish`] while holding their own batcher lock (batcher, then
//! publisher), which keeps one emitter's messages in the order its events happened.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashSet;
use kvtier_core::{Medium, SeqHashBuilder, SequenceHash};
use parking_lot::{Condvar, Mutex};

use crate::{Dump, EmitPolicy, EventKind, EventMessage, InstanceId, MediumBlocks, Payload};

/// Default number of messages kept for replay.
pub const DEFAULT_REPLAY_CAPACITY: usize = 4096;

/// The stream of one instance. Cheap to clone (all clones publish into the same stream).
///
/// # Examples
///
/// ```
/// use kvtier_core::{Medium, SequenceHash};
/// use kvtier_events::{EventBatch, EventKind, InstanceId, Payload, Publisher, ReplaySource};
///
/// let publisher = Publisher::new(InstanceId(1));
/// let mut sub = publisher.subscribe();
/// let id = publisher.publish(Payload::Batch(EventBatch {
///     medium: Medium::Gpu,
///     kind: EventKind::Create,
///     hashes: vec![SequenceHash::root(9)],
///     policy: Default::default(),
/// }))?;
/// assert_eq!(id, 1);
/// assert_eq!(sub.try_recv()?.event_id, 1);
/// assert_eq!(publisher.dump()?.blocks[0].hashes, [SequenceHash::root(9)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    instance: InstanceId,
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    /// The last `capacity` messages; `ring[i].event_id == first_id + i`.
    ring: VecDeque<Arc<EventMessage>>,
    capacity: usize,
    /// Id of the last message published (0: none).
    last_id: u64,
    /// What the stream says the instance holds, per medium.
    live: [HashSet<SequenceHash, SeqHashBuilder>; 4],
    policy: EmitPolicy,
    shut_down: bool,
    waiting: usize,
    /// When the last message was published.
    last_publish: Instant,
}

impl State {
    fn first_id(&self) -> u64 {
        self.last_id + 1 - self.ring.len() as u64
    }

    fn apply(&mut self, payload: &Payload) {
        match payload {
            Payload::Batch(b) => {
                self.policy = b.policy;
                let set = &mut self.live[b.medium.index()];
                match b.kind {
                    EventKind::Create => set.extend(b.hashes.iter().copied()),
                    EventKind::Remove => {
                        for h in &b.hashes {
                            set.remove(h);
                        }
                    }
                }
            }
            Payload::Cleared { medium: Some(m) } => self.live[m.index()].clear(),
            Payload::Cleared { medium: None } | Payload::Shutdown => {
                self.live.iter_mut().for_each(HashSet::clear)
            }
            Payload::Heartbeat => {}
        }
    }
}

/// The publisher has shut down: nothing more can be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the publisher of instance {0} has shut down")]
pub struct PublisherClosed(pub InstanceId);

/// Why [`Subscriber::try_recv`] returned no message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No new message yet.
    #[error("no new event message")]
    Empty,
    /// The subscriber fell behind the replay buffer and these ids are gone; the next receive
    /// continues at the oldest message still held.
    #[error("subscriber lagged: event ids {}..={} were dropped", .missed.start(), .missed.end())]
    Lagged {
        /// The ids lost.
        missed: RangeInclusive<u64>,
    },
    /// The publisher shut down and every message was received.
    #[error("the publisher has shut down")]
    Closed,
}

/// Why a replay or a dump could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Some of the requested ids are no longer in the replay buffer: ask for a dump.
    #[error("event ids from {requested} are gone; the oldest held is {oldest_held}")]
    Gone {
        /// First id asked for.
        requested: u64,
        /// Oldest id still held (`last + 1` when the buffer is empty).
        oldest_held: u64,
    },
    /// The source cannot be reached.
    #[error("replay source unavailable: {0}")]
    Unavailable(String),
}

/// Where a consumer repairs a gap: replay of a range of ids, or a full dump.
///
/// [`Publisher`] implements it in-process; network transports implement it over their own
/// request channel.
pub trait ReplaySource: Send + Sync {
    /// The messages with ids in `range`, in order; ids after the last published are simply
    /// absent (so `from..=u64::MAX` means "everything since `from`").
    ///
    /// # Errors
    ///
    /// [`ReplayError::Gone`] when part of the range is no longer held: ask for a dump.
    fn replay(&self, range: RangeInclusive<u64>) -> Result<Vec<Arc<EventMessage>>, ReplayError>;

    /// Everything the instance holds now.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Unavailable`] when the source cannot answer.
    fn dump(&self) -> Result<Dump, ReplayError>;
}

impl Publisher {
    /// A publisher for `instance` keeping [`DEFAULT_REPLAY_CAPACITY`] messages for replay.
    pub fn new(instance: InstanceId) -> Self {
        Self::with_replay_capacity(instance, DEFAULT_REPLAY_CAPACITY)
    }

    /// A publisher keeping the last `capacity` messages (at least 1) for replay and lagging
    /// subscribers.
    pub fn with_replay_capacity(instance: InstanceId, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                instance,
                state: Mutex::new(State {
                    ring: VecDeque::with_capacity(capacity.min(1 << 16)),
                    capacity,
                    last_id: 0,
                    live: Default::default(),
                    policy: EmitPolicy::All,
                    shut_down: false,
                    waiting: 0,
                    last_publish: Instant::now(),
                }),
                ready: Condvar::new(),
            }),
        }
    }

    /// The instance this publisher speaks for.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// Publishes `payload` as the next message and returns its event id. Never waits for
    /// subscribers.
    ///
    /// # Errors
    ///
    /// [`PublisherClosed`] after [`Publisher::shutdown`].
    pub fn publish(&self, payload: Payload) -> Result<u64, PublisherClosed> {
        let mut st = self.inner.state.lock();
        if st.shut_down {
            return Err(PublisherClosed(self.inner.instance));
        }
        st.shut_down = matches!(payload, Payload::Shutdown);
        st.apply(&payload);
        st.last_publish = Instant::now();
        st.last_id += 1;
        let msg = Arc::new(EventMessage {
            instance: self.inner.instance,
            event_id: st.last_id,
            payload,
        });
        if st.ring.len() == st.capacity {
            st.ring.pop_front();
        }
        st.ring.push_back(msg);
        let id = st.last_id;
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.inner.ready.notify_all();
        }
        Ok(id)
    }

    /// Publishes [`Payload::Shutdown`]: consumers forget the instance. Idempotent.
    pub fn shutdown(&self) {
        let _ = self.publish(Payload::Shutdown);
    }

    /// Publishes [`Payload::Heartbeat`] if nothing was published for `idle`; returns its id.
    /// Emitters call it from their flusher thread (see
    /// [`EventEmitterBuilder::with_heartbeat`](crate::EventEmitterBuilder::with_heartbeat)).
    pub fn heartbeat_if_idle(&self, idle: Duration) -> Option<u64> {
        {
            let st = self.inner.state.lock();
            if st.shut_down || st.last_publish.elapsed() < idle {
                return None;
            }
        }
        self.publish(Payload::Heartbeat).ok()
    }

    /// Whether [`Publisher::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.state.lock().shut_down
    }

    /// Id of the last message published (0 before the first).
    pub fn last_event_id(&self) -> u64 {
        self.inner.state.lock().last_id
    }

    /// A subscriber that receives every message published from now on.
    pub fn subscribe(&self) -> Subscriber {
        let next = self.inner.state.lock().last_id + 1;
        Subscriber {
            inner: self.inner.clone(),
            next,
        }
    }

    /// A subscriber that starts at the oldest message still held (for a consumer that joins
    /// late but wants what it can get).
    pub fn subscribe_from_oldest(&self) -> Subscriber {
        let next = self.inner.state.lock().first_id();
        Subscriber {
            inner: self.inner.clone(),
            next,
        }
    }
}

impl ReplaySource for Publisher {
    fn replay(&self, range: RangeInclusive<u64>) -> Result<Vec<Arc<EventMessage>>, ReplayError> {
        let st = self.inner.state.lock();
        let (from, to) = (*range.start(), *range.end());
        if from > to {
            return Ok(Vec::new());
        }
        let to = to.min(st.last_id);
        let first = st.first_id();
        if from > to {
            return Ok(Vec::new());
        }
        if from < first {
            return Err(ReplayError::Gone {
                requested: from,
                oldest_held: first,
            });
        }
        let start = (from - first) as usize;
        let end = (to - first) as usize;
        Ok(st.ring.range(start..=end).cloned().collect())
    }

    /// Copies the set under the publisher's mutex and sorts the copy after releasing it, so
    /// an emitter publishing meanwhile waits only for the copy.
    fn dump(&self) -> Result<Dump, ReplayError> {
        let (copies, event_id, shut_down, policy) = {
            let st = self.inner.state.lock();
            let copies: Vec<(Medium, Vec<SequenceHash>)> = Medium::ALL
                .into_iter()
                .zip(&st.live)
                .filter(|(_, set)| !set.is_empty())
                .map(|(medium, set)| (medium, set.iter().copied().collect()))
                .collect();
            (copies, st.last_id, st.shut_down, st.policy)
        };
        let blocks = copies
            .into_iter()
            .map(|(medium, mut hashes)| {
                hashes.sort_unstable_by_key(|h| (h.position(), h.as_u128()));
                MediumBlocks { medium, hashes }
            })
            .collect();
        Ok(Dump {
            instance: self.inner.instance,
            event_id,
            blocks,
            shut_down,
            policy,
        })
    }
}

/// A cursor into a [`Publisher`]'s stream. Each subscriber sees every message at most once, in
/// id order; a slow one loses the oldest messages (and is told) rather than slowing anyone.
pub struct Subscriber {
    inner: Arc<Inner>,
    next: u64,
}

impl Subscriber {
    /// The instance whose stream this is.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// Id of the next message this subscriber will receive.
    pub fn next_event_id(&self) -> u64 {
        self.next
    }

    fn take(next: &mut u64, st: &State) -> Result<Arc<EventMessage>, RecvError> {
        let first = st.first_id();
        if *next < first {
            let missed = *next..=first - 1;
            *next = first;
            return Err(RecvError::Lagged { missed });
        }
        if *next > st.last_id {
            return Err(if st.shut_down {
                RecvError::Closed
            } else {
                RecvError::Empty
            });
        }
        let msg = st.ring[(*next - first) as usize].clone();
        *next += 1;
        Ok(msg)
    }

    /// The next message, without waiting.
    ///
    /// # Errors
    ///
    /// [`RecvError::Empty`] when there is none yet, [`RecvError::Lagged`] once after falling
    /// behind the replay buffer, [`RecvError::Closed`] after the shutdown message was received.
    pub fn try_recv(&mut self) -> Result<Arc<EventMessage>, RecvError> {
        let st = self.inner.state.lock();
        Self::take(&mut self.next, &st)
    }

    /// Up to `max` messages in one lock acquisition, appended to `out`; returns how many.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_recv`], returned only when nothing was appended.
    pub fn try_recv_many(
        &mut self,
        out: &mut Vec<Arc<EventMessage>>,
        max: usize,
    ) -> Result<usize, RecvError> {
        let st = self.inner.state.lock();
        let mut n = 0;
        while n < max {
            match Self::take(&mut self.next, &st) {
                Ok(m) => {
                    out.push(m);
                    n += 1;
                }
                // Lag can only show on the first take: the lock is held throughout.
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// The next message, waiting up to `timeout` for one.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_recv`]; [`RecvError::Empty`] when the time ran out.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Arc<EventMessage>, RecvError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.state.lock();
        loop {
            match Self::take(&mut self.next, &st) {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            st.waiting += 1;
            let timed_out = self.inner.ready.wait_until(&mut st, deadline).timed_out();
            st.waiting -= 1;
            if timed_out {
                return Self::take(&mut self.next, &st);
            }
        }
    }
}
