//! The registry of eviction policies a replay can name: [`policies`] lists each built-in
//! [`PolicyFactory`] of `kvtier-core` under its lower-case name. Adding a policy is one line in
//! [`policies`].
//!
//! The offline bounds ([`OFFLINE_POLICIES`]) are not factories: they are simulators
//! ([`Belady`](crate::Belady), [`infinite`](crate::infinite)) and are listed separately.

use std::sync::Arc;

use kvtier_core::{FifoFactory, LruFactory, PolicyFactory};

/// Names of the offline bounds a replay can report besides the online policies.
pub const OFFLINE_POLICIES: [&str; 2] = ["belady", "infinite"];

/// An eviction policy factory with the name a replay reports it under.
#[derive(Clone)]
pub struct NamedPolicy {
    /// Lower-case name (`fifo`, `lru`, ...).
    pub name: String,
    /// Builds the policy for a manager.
    pub factory: Arc<dyn PolicyFactory>,
}

impl NamedPolicy {
    /// Names a factory.
    pub fn new(name: impl Into<String>, factory: Arc<dyn PolicyFactory>) -> Self {
        Self {
            name: name.into(),
            factory,
        }
    }
}

impl std::fmt::Debug for NamedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedPolicy")
            .field("name", &self.name)
            .field("factory", &self.factory.name())
            .finish()
    }
}

/// Every built-in online policy, in report order.
///
/// # Examples
///
/// ```
/// let names: Vec<String> = kvtier_replay::policies().into_iter().map(|p| p.name).collect();
/// assert!(names.iter().any(|n| n == "lru"));
/// ```
pub fn policies() -> Vec<NamedPolicy> {
    vec![
        NamedPolicy::new("fifo", Arc::new(FifoFactory::new())),
        NamedPolicy::new("lru", Arc::new(LruFactory::new())),
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
