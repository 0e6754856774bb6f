//! The registry of eviction policies a replay can name: [`policies`] lists each built-in
//! [`PolicyFactory`] of `kvtier-core` under its lower-case name. Adding a policy is one line in
//! [`policies`].
//!
//! The offline bounds ([`OFFLINE_POLICIES`]) are not factories: they are simulators
//! ([`Belady`](crate::Belady), [`infinite`](crate::infinite)) and are listed separately.

use std::sync::Arc;

use kvtier_core::{
    FifoFactory, FreqLeaseFactory, LineageFactory, LruFactory, MultiLruFactory, PolicyFactory,
};

/// Names of the offline bounds a replay can report besides the online policies.
pub const OFFLINE_POLICIES: [&str; 2] = ["belady", "infinite"];

/// Makes the factory for one manager of the given capacity.
type MakeFactory = dyn Fn(usize) -> Arc<dyn PolicyFactory> + Send + Sync;

/// An eviction policy under the name a replay reports it by, and how to build its factory.
///
/// A factory may carry state shared by every policy it builds (`multi_lru`'s frequency
/// sketch), so each replayed manager gets a factory of its own from
/// [`factory`](Self::factory).
#[derive(Clone)]
pub struct NamedPolicy {
    name: String,
    make: Arc<MakeFactory>,
}

impl NamedPolicy {
    /// Names a stateless factory; every manager shares it.
    pub fn new(name: impl Into<String>, factory: Arc<dyn PolicyFactory>) -> Self {
        Self {
            name: name.into(),
            make: Arc::new(move |_| factory.clone()),
        }
    }

    /// Names a constructor called once per manager with the manager's capacity in blocks (for
    /// factories with shared state or capacity-sized structures).
    pub fn with_constructor(
        name: impl Into<String>,
        make: impl Fn(usize) -> Arc<dyn PolicyFactory> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            make: Arc::new(make),
        }
    }

    /// Lower-case name (`fifo`, `lru`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The factory for one manager of `capacity` blocks.
    pub fn factory(&self, capacity: usize) -> Arc<dyn PolicyFactory> {
        (self.make)(capacity)
    }
}

impl std::fmt::Debug for NamedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedPolicy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `multi_lru` in its recommended configuration for `capacity` blocks.
fn multi_lru(capacity: usize) -> Arc<dyn PolicyFactory> {
    Arc::new(MultiLruFactory::for_capacity(capacity))
}

/// Every built-in online policy, in report order. One line per policy.
///
/// # Examples
///
/// ```
/// let names: Vec<String> =
///     kvtier_replay::policies().iter().map(|p| p.name().to_string()).collect();
/// assert!(names.iter().any(|n| n == "lru"));
/// ```
pub fn policies() -> Vec<NamedPolicy> {
    vec![
        NamedPolicy::new("fifo", Arc::new(FifoFactory::new())),
        NamedPolicy::new("lru", Arc::new(LruFactory::new())),
        NamedPolicy::with_constructor("multi_lru", multi_lru),
        NamedPolicy::new("lineage", Arc::new(LineageFactory::new())),
        NamedPolicy::new("freqlease", Arc::new(FreqLeaseFactory::new())),
    ]
}

/// The built-in online policy called `name` (case-insensitive), if any.
///
/// # Examples
///
/// ```
/// assert!(kvtier_replay::policy("LRU").is_some());
/// assert!(kvtier_replay::policy("belady").is_none()); // offline: see OFFLINE_POLICIES
/// ```
pub fn policy(name: &str) -> Option<NamedPolicy> {
    policies()
        .into_iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}
