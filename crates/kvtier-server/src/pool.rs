//! The request buffer pool: pre-allocated chunks in a few size classes, recycled, so a frame's
//! bytes normally cost no allocation. A frame larger than the largest class, or arriving while
//! its class is exhausted, gets a heap buffer instead and is counted
//! ([`Counters::pool_fallbacks`](crate::CountersSnapshot::pool_fallbacks)). Heap buffers are
//! kept as *spares* when dropped, up to a byte budget, and reused for later frames of a similar
//! size: a server whose blocks are larger than every class (4 MiB PUTs) or whose concurrency
//! outgrows a class allocates, zeroes and page-faults such a buffer once, not once per frame.
//!
//! # Invariants
//!
//! - A [`FrameBuf`] from a class owns one chunk of that class exclusively and returns it when
//!   dropped (on whatever thread); a class never holds more chunks than it was built with.
//! - Spares hold at most `spare_budget` bytes of capacity in at most [`MAX_SPARES`] buffers; a spare is handed out only for a
//!   frame of at least half its capacity (a small frame never pins a large buffer).
//! - `FrameBuf::len() <= chunk capacity`; the bytes past `len` are never exposed.
//! - Chunks are allocated zeroed (`calloc`/lazily faulted), so an idle pool costs address
//!   space, not resident memory.
//! - A frame's bytes start on a page boundary ([`ALIGN`]), pooled or not: the kernel copies
//!   socket data with `rep movsb`, which on AMD runs an order of magnitude slower from or to
//!   a buffer 16 bytes off a page (where `malloc` puts large blocks; see NOTES.md).

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::counters::Counters;

/// One size class: `count` chunks of `chunk_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolClass {
    /// Capacity of each chunk.
    pub chunk_bytes: usize,
    /// How many chunks are pre-allocated.
    pub count: usize,
}

/// Alignment of every frame buffer's first byte.
pub(crate) const ALIGN: usize = 4096;

struct Class {
    chunk_bytes: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

/// A zeroed allocation with room for `len` bytes starting at an [`ALIGN`]ed address.
fn aligned_alloc(len: usize) -> Box<[u8]> {
    vec![0u8; len + ALIGN - 1].into_boxed_slice()
}

/// Where the aligned bytes of `data` start.
fn aligned_start(data: &[u8]) -> usize {
    (ALIGN - data.as_ptr() as usize % ALIGN) % ALIGN
}

/// Most heap buffers kept, whatever their size (a search for a fitting one stays short).
const MAX_SPARES: usize = 256;

/// Heap buffers kept for reuse (see the module docs).
struct Spares {
    budget: usize,
    held: Mutex<SpareList>,
}

#[derive(Default)]
struct SpareList {
    bytes: usize,
    buffers: Vec<Box<[u8]>>,
}

impl Spares {
    /// A spare with room for `len` aligned bytes, at most twice that.
    fn take(&self, len: usize) -> Option<Box<[u8]>> {
        let mut held = self.held.lock();
        // `aligned_alloc(n)` gives `n + ALIGN - 1` bytes, of which at least `n` are aligned.
        let fits = |b: &[u8]| -> bool {
            let made_for = b.len() - (ALIGN - 1);
            b.len() - aligned_start(b) >= len && made_for / 2 <= len
        };
        let i = held.buffers.iter().rposition(|b| fits(b))?;
        let buffer = held.buffers.swap_remove(i);
        held.bytes -= buffer.len();
        Some(buffer)
    }

    /// Keeps `buffer` if the budget allows.
    fn give(&self, buffer: Box<[u8]>) {
        let mut held = self.held.lock();
        if held.bytes + buffer.len() <= self.budget && held.buffers.len() < MAX_SPARES {
            held.bytes += buffer.len();
            held.buffers.push(buffer);
        }
    }
}

/// The shared pool; cheap to clone.
#[derive(Clone)]
pub(crate) struct BufferPool {
    classes: Arc<[Class]>,
    spares: Arc<Spares>,
    counters: Arc<Counters>,
}

impl BufferPool {
    /// Allocates every chunk of every class now (classes are sorted by chunk size); keeps up
    /// to `spare_budget` bytes of heap buffers for reuse.
    pub(crate) fn new(classes: &[PoolClass], spare_budget: usize, counters: Arc<Counters>) -> Self {
        let mut sorted = classes.to_vec();
        sorted.sort_by_key(|c| c.chunk_bytes);
        let classes = sorted
            .into_iter()
            .map(|c| Class {
                chunk_bytes: c.chunk_bytes,
                free: Mutex::new((0..c.count).map(|_| aligned_alloc(c.chunk_bytes)).collect()),
            })
            .collect();
        Self {
            classes,
            spares: Arc::new(Spares {
                budget: spare_budget,
                held: Mutex::new(SpareList::default()),
            }),
            counters,
        }
    }

    /// A buffer of exactly `len` readable/writable bytes (contents unspecified).
    pub(crate) fn take(&self, len: usize) -> FrameBuf {
        for (i, class) in self.classes.iter().enumerate() {
            if class.chunk_bytes < len {
                continue;
            }
            if let Some(chunk) = class.free.lock().pop() {
                return FrameBuf {
                    start: aligned_start(&chunk),
                    data: chunk,
                    len,
                    home: Some(Home::Class(self.classes.clone(), i)),
                };
            }
        }
        self.counters.pool_fallback();
        let data = self.spares.take(len).unwrap_or_else(|| aligned_alloc(len));
        FrameBuf {
            start: aligned_start(&data),
            data,
            len,
            home: Some(Home::Spare(self.spares.clone())),
        }
    }

    #[cfg(test)]
    fn free_chunks(&self) -> Vec<usize> {
        self.classes.iter().map(|c| c.free.lock().len()).collect()
    }
}

/// A request frame's bytes: a pooled chunk (returned on drop) or, past the pool, a heap
/// buffer. Send it back in a reply with [`Response::guarded`](crate::Response::guarded).
pub struct FrameBuf {
    data: Box<[u8]>,
    /// Offset of the first byte in `data` (page-aligned address).
    start: usize,
    len: usize,
    home: Option<Home>,
}

/// Where a buffer goes when dropped.
enum Home {
    /// Chunk of class `.1`.
    Class(Arc<[Class]>, usize),
    /// A heap buffer: the spares, if they have room.
    Spare(Arc<Spares>),
}

impl FrameBuf {
    /// The frame's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    /// The frame's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes live in a pooled chunk (false: heap fallback).
    pub fn is_pooled(&self) -> bool {
        matches!(self.home, Some(Home::Class(..)))
    }
}

impl AsRef<[u8]> for FrameBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        let chunk = std::mem::take(&mut self.data);
        match self.home.take() {
            Some(Home::Class(classes, i)) => classes[i].free.lock().push(chunk),
            Some(Home::Spare(spares)) => spares.give(chunk),
            None => {}
        }
    }
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf")
            .field("len", &self.len)
            .field("pooled", &self.is_pooled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> (BufferPool, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let classes = [
            PoolClass {
                chunk_bytes: 1024,
                count: 2,
            },
            PoolClass {
                chunk_bytes: 64,
                count: 1,
            },
        ];
        (BufferPool::new(&classes, 8192, counters.clone()), counters)
    }

    #[test]
    fn smallest_fitting_class_then_larger_then_heap() {
        let (pool, counters) = pool();
        let a = pool.take(10);
        assert!(a.is_pooled());
        assert_eq!(pool.free_chunks(), vec![0, 2]); // the 64-byte chunk
        let b = pool.take(10);
        assert!(b.is_pooled());
        assert_eq!(pool.free_chunks(), vec![0, 1]); // spilled into the 1 KiB class
        let c = pool.take(2000);
        assert!(!c.is_pooled());
        assert_eq!(c.len(), 2000);
        assert_eq!(counters.snapshot().pool_fallbacks, 1);
        drop((a, b, c));
        assert_eq!(pool.free_chunks(), vec![1, 2]);
    }

    #[test]
    fn heap_buffers_are_reused_within_the_spare_budget() {
        let (pool, counters) = pool();
        let a = pool.take(3000);
        let first = a.as_slice().as_ptr();
        drop(a);
        let b = pool.take(2500);
        assert_eq!(b.as_slice().as_ptr(), first, "the spare is reused");
        assert!(!b.is_pooled());
        let small = pool.take(1200);
        assert_ne!(small.as_slice().as_ptr(), first, "taken");
        drop(b);
        let c = pool.take(1200);
        assert_ne!(
            c.as_slice().as_ptr(),
            first,
            "a frame under half a spare's size gets a buffer of its own"
        );
        let big = pool.take(20_000);
        drop((small, c, big));
        let held = pool.spares.held.lock();
        assert!(held.bytes <= 8192, "budget kept: {}", held.bytes);
        assert_eq!(
            held.bytes,
            held.buffers.iter().map(|b| b.len()).sum::<usize>()
        );
        assert!(
            held.buffers.iter().all(|b| b.len() < 20_000),
            "over budget: dropped"
        );
        assert_eq!(counters.snapshot().pool_fallbacks, 5);
    }

    #[test]
    fn frames_start_page_aligned_pooled_or_not() {
        let (pool, _) = pool();
        for len in [1, 64, 1000, 5000] {
            let buf = pool.take(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(buf.len(), len);
        }
    }

    #[test]
    fn chunks_recycle_across_threads_and_expose_only_len() {
        let (pool, counters) = pool();
        let mut buf = pool.take(5);
        buf.as_mut_slice().copy_from_slice(b"hello");
        assert_eq!(buf.as_slice(), b"hello");
        std::thread::spawn(move || drop(buf)).join().unwrap();
        for _ in 0..100 {
            let b = pool.take(1000);
            assert!(b.is_pooled());
        }
        assert_eq!(counters.snapshot().pool_fallbacks, 0);
        assert_eq!(pool.free_chunks(), vec![1, 2]);
    }
}
