//! kvtier-core behind [`BlockManagerOps`], and the list of every eviction backend kvtier-core
//! exports ([`kvtier_backends`]).
//!
//! Keys are built the way a serving engine would: `SequenceHash::root(chain[0])`, then
//! `SequenceHash::child_of(previous, chain[i])`, so position and parent fragment are set.

use std::sync::Arc;

use kvtier_core::{
    BlockManager, FifoFactory, FreqLeaseFactory, G1, ImmutableBlock, LineageFactory, LruFactory,
    MultiLruFactory, PolicyFactory, SequenceHash,
};

use crate::ops::{BlockManagerOps, ManagerFactory};

/// Builds the policy factory of one backend for a manager of `capacity` blocks.
pub type PolicyMaker = fn(capacity: usize) -> Arc<dyn PolicyFactory>;

/// Every eviction backend exported by kvtier-core, with default settings, in report order (the
/// manager's default policy, `freqlease`, first).
///
/// This is the one place to extend when kvtier-core exports a new backend; the criterion
/// benches, the smoke run and `vs-kvbm` all iterate over it.
pub fn kvtier_backends() -> Vec<KvtierFactory> {
    fn fifo(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(FifoFactory::new())
    }
    fn lru(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(LruFactory::new())
    }
    fn lineage(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(LineageFactory::new())
    }
    fn multi_lru(capacity: usize) -> Arc<dyn PolicyFactory> {
        // A fresh sketch per manager (the factory's recommended sizing).
        Arc::new(MultiLruFactory::for_capacity(capacity))
    }
    fn freqlease(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(FreqLeaseFactory::new())
    }
    vec![
        KvtierFactory::new("freqlease", freqlease),
        KvtierFactory::new("fifo", fifo),
        KvtierFactory::new("lru", lru),
        KvtierFactory::new("lineage", lineage),
        KvtierFactory::new("multi_lru", multi_lru),
    ]
}

/// Builds kvtier [`BlockManager`]s with one backend.
#[derive(Clone, Copy, Debug)]
pub struct KvtierFactory {
    backend: &'static str,
    policy: PolicyMaker,
    shards: Option<usize>,
}

impl KvtierFactory {
    /// A factory for `backend` (a label) whose policies come from `policy`.
    pub fn new(backend: &'static str, policy: PolicyMaker) -> Self {
        Self {
            backend,
            policy,
            shards: None,
        }
    }

    /// Fixes the shard count. Default: the manager's own default (four per core, at most 64;
    /// 1 for policies that need a global view).
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The backend label (`lru`, `fifo`, ...).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A bare manager (for benches that drive the kvtier API directly).
    ///
    /// # Panics
    ///
    /// When the builder rejects the configuration (a bug in this crate).
    pub fn manager(&self, capacity: usize, block_size: usize) -> BlockManager<G1> {
        let mut b = BlockManager::<G1>::builder()
            .with_block_count(capacity)
            .with_block_size(block_size)
            .with_policy((self.policy)(capacity));
        if let Some(s) = self.shards {
            b = b.with_shards(s);
        }
        b.build().expect("valid kvtier manager configuration")
    }
}

impl ManagerFactory for KvtierFactory {
    type M = KvtierOps;

    fn label(&self) -> String {
        format!("kvtier/{}", self.backend)
    }

    fn build(&self, capacity: usize, block_size: usize) -> KvtierOps {
        KvtierOps {
            mgr: self.manager(capacity, block_size),
        }
    }
}

/// A kvtier manager driven through [`BlockManagerOps`].
#[derive(Debug)]
pub struct KvtierOps {
    /// The manager.
    pub mgr: BlockManager<G1>,
}

/// Sequence hashes of a chain: root, then each child of the previous.
///
/// # Examples
///
/// ```
/// use kvtier_bench::kvtier_keys;
///
/// let keys = kvtier_keys(&[10, 20, 30]);
/// assert_eq!(keys[2].position(), 2);
/// assert_eq!(keys[2].parent_fragment(), 20);
/// ```
pub fn kvtier_keys(chain: &[u64]) -> Vec<SequenceHash> {
    let mut out = Vec::with_capacity(chain.len());
    let mut prev: Option<SequenceHash> = None;
    for &h in chain {
        let k = match prev {
            None => SequenceHash::root(h),
            Some(p) => SequenceHash::child_of(p, h),
        };
        out.push(k);
        prev = Some(k);
    }
    out
}

impl BlockManagerOps for KvtierOps {
    type Key = SequenceHash;
    type Handle = ImmutableBlock<G1>;

    fn make_keys(&self, chain: &[u64]) -> Vec<SequenceHash> {
        kvtier_keys(chain)
    }

    #[inline]
    fn match_prefix(&self, keys: &[SequenceHash]) -> Vec<ImmutableBlock<G1>> {
        self.mgr.match_blocks(keys)
    }

    #[inline]
    fn allocate_register(&self, keys: &[SequenceHash]) -> Option<Vec<ImmutableBlock<G1>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let blocks = self.mgr.allocate_blocks(keys.len()).ok()?;
        let block_size = self.mgr.block_size();
        let staged: Vec<_> = blocks
            .into_iter()
            .zip(keys)
            .map(|(b, &k)| b.stage(k, block_size).expect("block size matches"))
            .collect();
        Some(
            self.mgr
                .register_blocks(staged)
                .expect("blocks come from this manager"),
        )
    }

    #[inline]
    fn release(&self, handles: Vec<ImmutableBlock<G1>>) {
        self.mgr.release_blocks(handles);
    }

    fn available_blocks(&self) -> usize {
        self.mgr.available_blocks()
    }
}
