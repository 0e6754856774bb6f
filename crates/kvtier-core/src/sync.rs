//! One place for the synchronisation primitives the core uses, so a model checker (loom,
//! shuttle) can be swapped in behind a feature without touching the manager code.

pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock, const_rwlock};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
