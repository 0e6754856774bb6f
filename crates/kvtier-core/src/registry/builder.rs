//! [`RegistryBuilder`]: validated construction of a [`Registry`].

use crate::FrequencyTracker;
use crate::registry::Registry;
use crate::sync::Arc;

/// Largest shard count a registry accepts.
pub const MAX_REGISTRY_SHARDS: usize = 4096;

/// Eight shards per available core, at most 256 (before rounding to a power of two).
pub(crate) fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 8).min(256)
}

/// Why a registry could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryBuildError {
    /// `shards` is zero or above [`MAX_REGISTRY_SHARDS`].
    #[error("registry shards {shards} is outside 1..={max}")]
    InvalidShards {
        /// Requested shard count.
        shards: usize,
        /// Largest accepted count.
        max: usize,
    },
}

/// Builds a [`Registry`]. Every setter states its default; [`build`](Self::build) validates.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{FrequencySketch, Registry, RegistryBuildError, SequenceHash};
///
/// let registry = Registry::builder()
///     .with_shards(16)
///     .with_frequency_tracker(Arc::new(FrequencySketch::builder(1024).build().unwrap()))
///     .build()
///     .unwrap();
/// assert_eq!(registry.shard_count(), 16);
/// registry.touch(&[SequenceHash::root(1)]);
/// assert_eq!(registry.frequency(SequenceHash::root(1)), 1);
///
/// assert_eq!(
///     Registry::builder().with_shards(0).build().unwrap_err(),
///     RegistryBuildError::InvalidShards { shards: 0, max: kvtier_core::MAX_REGISTRY_SHARDS },
/// );
/// ```
#[derive(Default)]
pub struct RegistryBuilder {
    shards: Option<usize>,
    tracker: Option<Arc<dyn FrequencyTracker>>,
}

impl RegistryBuilder {
    /// Number of independently locked shards, rounded up to a power of two. Default: eight per
    /// available core, at most 256. Must be in `1..=MAX_REGISTRY_SHARDS`.
    pub fn with_shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// A tracker that [`Registry::touch`] counts into and [`Registry::frequency`] reads, keyed
    /// by [`SequenceHash::mix64`](crate::SequenceHash::mix64) (share it with a frequency-aware
    /// eviction policy to feed it the same signal). Default: none (`frequency` is always 0).
    pub fn with_frequency_tracker(mut self, tracker: Arc<dyn FrequencyTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Validates the configuration and builds the registry.
    ///
    /// # Errors
    ///
    /// [`RegistryBuildError::InvalidShards`] when the shard count is zero or too large.
    pub fn build(self) -> Result<Registry, RegistryBuildError> {
        let shards = match self.shards {
            Some(s) if s == 0 || s > MAX_REGISTRY_SHARDS => {
                return Err(RegistryBuildError::InvalidShards {
                    shards: s,
                    max: MAX_REGISTRY_SHARDS,
                });
            }
            Some(s) => s,
            None => default_shards(),
        };
        Ok(Registry::from_parts(
            shards.next_power_of_two(),
            self.tracker,
        ))
    }
}
