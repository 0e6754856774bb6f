//! The event message: what one instance tells the fleet about the blocks it holds.
//!
//! One [`EventMessage`] carries one payload and the pair (`instance`, `event_id`). Event ids are
//! assigned by the instance's publisher, start at 1 and grow by exactly one per message, so a
//! consumer that sees `n` after `m < n - 1` knows it missed `m + 1 ..= n - 1`.
//!
//! ```text
//! EventMessage { instance: u128, event_id: u64, payload }
//!   payload = Batch { medium, kind: Create | Remove, hashes: [SequenceHash] }
//!           | Cleared { medium: Option<Medium> }     // everything (of that medium) is gone
//!           | Shutdown                               // the instance stops; forget it
//!           | Heartbeat                              // nothing changed; still alive
//! ```
//!
//! A Create batch lists its hashes by position ascending, a Remove batch by position descending,
//! so a radix-style consumer inserts parents before children and removes children first.

use std::fmt;

use kvtier_core::{Medium, SequenceHash};
use serde::{Deserialize, Serialize};

use crate::EmitPolicy;

/// The identity of an emitting instance (a worker, or one data-parallel rank of it).
///
/// In JSON (and `Display`) it is written as 32 lower-case hex digits; in msgpack as a 16-byte
/// big-endian binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InstanceId(pub u128);

impl InstanceId {
    /// A fresh id for one publisher lifetime: event ids restart at 1 when a process restarts,
    /// so a restarted instance must not reuse its old id (consumers would take its new
    /// messages for duplicates until the old id expires).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut seed = Vec::with_capacity(40);
        seed.extend_from_slice(&nanos.to_le_bytes());
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(&seed);
        seed.extend_from_slice(&h.finish().to_le_bytes());
        Self(xxhash_rust::xxh3::xxh3_128(&seed))
    }
}

impl Serialize for InstanceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::serde_repr::instance::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::serde_repr::instance::deserialize(d)
    }
}

impl std::str::FromStr for InstanceId {
    type Err = std::num::ParseIntError;

    /// Parses 1 to 32 hex digits, with or without a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).map(InstanceId)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Whether the blocks of a batch appeared or left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The blocks were registered: they can be fetched from the instance.
    Create,
    /// The blocks left the tier (evicted, released with evict-on-release, or reset).
    Remove,
}

/// Blocks of one kind on one medium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The tier's medium the blocks are (or were) on.
    #[serde(with = "crate::serde_repr::medium")]
    pub medium: Medium,
    /// Create or Remove.
    pub kind: EventKind,
    /// The blocks: by position ascending for Create, descending for Remove.
    #[serde(with = "crate::serde_repr::hashes")]
    pub hashes: Vec<SequenceHash>,
    /// The instance's emission policy: tells a consumer whether a missing position means
    /// "not held" ([`EmitPolicy::All`]) or "not announced" ([`EmitPolicy::PowerOfTwo`]).
    #[serde(default)]
    pub policy: EmitPolicy,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// Blocks were created or removed.
    Batch(EventBatch),
    /// Every block of the instance on `medium` (all media when `None`) is gone.
    Cleared {
        /// The medium cleared, or all of them.
        #[serde(with = "crate::serde_repr::opt_medium", default)]
        medium: Option<Medium>,
    },
    /// The instance stops publishing; consumers drop everything it held.
    Shutdown,
    /// Nothing changed; the instance is alive (keeps a consumer's expiry from forgetting an
    /// idle instance).
    Heartbeat,
}

/// One message of an instance's event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMessage {
    /// The emitting instance.
    pub instance: InstanceId,
    /// Per-instance id: 1 for the first message, then +1 for each.
    pub event_id: u64,
    /// What happened.
    pub payload: Payload,
}

/// Everything one instance holds right now: the answer to a consumer whose gap can no longer
/// be replayed.
///
/// Applying a dump means: forget what the instance held, insert `blocks`, and continue with the
/// message whose id is `event_id + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// The instance dumped.
    pub instance: InstanceId,
    /// The id of the last message whose effect the dump includes (0: none yet).
    pub event_id: u64,
    /// Every block held, per medium, each list by position ascending.
    pub blocks: Vec<MediumBlocks>,
    /// Whether the instance has shut down (then `blocks` is empty).
    pub shut_down: bool,
    /// The instance's emission policy (see [`EventBatch::policy`]).
    #[serde(default)]
    pub policy: EmitPolicy,
}

/// The blocks an instance holds on one medium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediumBlocks {
    /// The medium.
    #[serde(with = "crate::serde_repr::medium")]
    pub medium: Medium,
    /// Its blocks, by position ascending.
    #[serde(with = "crate::serde_repr::hashes")]
    pub hashes: Vec<SequenceHash>,
}
