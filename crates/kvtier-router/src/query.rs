//! What a query answers, and the load signal that breaks ties.

use std::sync::Arc;

use hashbrown::HashMap;
use kvtier_core::Medium;
use kvtier_events::{EmitPolicy, InstanceId};
use parking_lot::RwLock;

/// How much of a request one instance holds on one medium.
///
/// For an instance that announces every block, `matched == upper` is exact. For one that
/// announces only power-of-two positions ([`EmitPolicy::PowerOfTwo`]) the true prefix of a
/// prefix-closed cache lies in `matched..=upper`: it announced 1-based positions 1, 2, 4, ...,
/// `matched` of this request but not `2 * matched`, so it holds at least `matched` and at most
/// `2 * matched - 1` blocks (capped at the request's length).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediumOverlap {
    /// Leading blocks known to be held.
    pub matched: u32,
    /// Leading blocks possibly held.
    pub upper: u32,
}

/// One instance's overlap with a request.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceOverlap {
    /// The instance.
    pub instance: InstanceId,
    /// Per medium, in [`Medium::ALL`] order (GPU, CPU, DISK, EXTERNAL).
    pub media: [MediumOverlap; 4],
    /// Its emission policy: with [`EmitPolicy::PowerOfTwo`] the overlaps are bounds.
    pub policy: EmitPolicy,
    /// The weighted overlap the choice of the best instance used.
    pub score: f64,
    /// Its load, from the router's [`LoadSignal`].
    pub load: f64,
}

impl InstanceOverlap {
    pub(crate) fn new(instance: InstanceId, policy: EmitPolicy) -> Self {
        Self {
            instance,
            media: [MediumOverlap::default(); 4],
            policy,
            score: 0.0,
            load: 0.0,
        }
    }

    /// Leading blocks known to be held on `medium`.
    pub fn matched(&self, medium: Medium) -> u32 {
        self.media[medium.index()].matched
    }

    /// Leading blocks possibly held on `medium`.
    pub fn upper(&self, medium: Medium) -> u32 {
        self.media[medium.index()].upper
    }

    /// The longest prefix known to be held on any medium.
    pub fn best_matched(&self) -> u32 {
        self.media.iter().map(|m| m.matched).max().unwrap_or(0)
    }
}

/// A query's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteAnswer {
    /// Blocks in the request.
    pub blocks: usize,
    /// Every instance holding at least its first block, by instance id.
    pub overlaps: Vec<InstanceOverlap>,
    /// Where to send the request (`None` when no instance is known).
    pub best: Option<InstanceId>,
}

/// Tells the router how busy an instance is; lower is better. Used to break ties between
/// instances with equal overlap (and to pick one when nobody holds anything).
pub trait LoadSignal: Send + Sync {
    /// The instance's current load (any scale; lower is less loaded).
    fn load(&self, instance: InstanceId) -> f64;
}

/// No load information: every instance has load 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLoad;

impl LoadSignal for NoLoad {
    fn load(&self, _: InstanceId) -> f64 {
        0.0
    }
}

/// A table of loads set from outside (for example from the workers' own metrics); instances
/// not in it have load 0.
///
/// # Examples
///
/// ```
/// use kvtier_events::InstanceId;
/// use kvtier_router::{LoadSignal, LoadTable};
///
/// let table = LoadTable::default();
/// table.set(InstanceId(1), 3.0);
/// assert_eq!(table.load(InstanceId(1)), 3.0);
/// assert_eq!(table.load(InstanceId(2)), 0.0);
/// ```
#[derive(Clone, Default)]
pub struct LoadTable {
    loads: Arc<RwLock<HashMap<InstanceId, f64>>>,
}

impl LoadTable {
    /// Sets an instance's load.
    pub fn set(&self, instance: InstanceId, load: f64) {
        self.loads.write().insert(instance, load);
    }

    /// Forgets an instance's load.
    pub fn remove(&self, instance: InstanceId) {
        self.loads.write().remove(&instance);
    }
}

impl LoadSignal for LoadTable {
    fn load(&self, instance: InstanceId) -> f64 {
        self.loads.read().get(&instance).copied().unwrap_or(0.0)
    }
}
