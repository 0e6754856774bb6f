//! The two seams every system under test plugs into: [`BlockManagerOps`] (the logical
//! lifecycle a workload drives) and [`ManagerFactory`] (fresh managers per repetition).
//!
//! Keys are built from chains (see [`crate::chain`]) outside any timed region, so a workload
//! measures only matching, allocation, staging, registration and release.

/// The logical block lifecycle, driven through `&self` so one manager can serve several threads.
pub trait BlockManagerOps: Send + Sync {
    /// The system's precomputed identity of one block (its sequence hash).
    type Key: Copy + Send + Sync;
    /// A registered block; dropping the last handle releases it into the evictable pool.
    type Handle;

    /// Converts a chain (element `i` = prefix-implying hash of position `i`) into keys.
    fn make_keys(&self, chain: &[u64]) -> Vec<Self::Key>;

    /// The longest registered prefix of `keys`, stopping at the first miss; the handles pin it.
    fn match_prefix(&self, keys: &[Self::Key]) -> Vec<Self::Handle>;

    /// Allocates `keys.len()` blocks (evicting as needed), stages each with its key and
    /// registers them. `None` when the manager cannot supply that many blocks now.
    fn allocate_register(&self, keys: &[Self::Key]) -> Option<Vec<Self::Handle>>;

    /// Releases one request's handles, in order (front to back, like dropping the `Vec`).
    /// Default: drop them one by one, which every system supports. A system may offer a batch
    /// release as a separately labelled configuration (kvtier's `+batch`), never silently.
    fn release(&self, handles: Vec<Self::Handle>) {
        drop(handles);
    }

    /// Free plus evictable blocks.
    fn available_blocks(&self) -> usize;
}

/// Builds managers of one configuration (system + backend).
pub trait ManagerFactory: Sync {
    /// The managers built.
    type M: BlockManagerOps;

    /// Label used in reports, `system/backend` (e.g. `kvtier/lru`).
    fn label(&self) -> String;

    /// A fresh, empty manager of `capacity` blocks of `block_size` tokens.
    fn build(&self, capacity: usize, block_size: usize) -> Self::M;
}
