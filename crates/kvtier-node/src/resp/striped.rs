//! [`Striped`]: a counter that many IO threads bump on every command without sharing a cache
//! line (one padded cell per thread slot; reads sum them).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const CELLS: usize = 16;

static NEXT_CELL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_CELL: usize = NEXT_CELL.fetch_add(1, Relaxed) % CELLS;
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Cell(AtomicU64);

/// A running total, striped over cache lines.
#[derive(Debug, Default)]
pub(crate) struct Striped {
    cells: [Cell; CELLS],
}

impl Striped {
    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        let i = MY_CELL.with(|i| *i);
        if let Some(cell) = self.cells.get(i) {
            cell.0.fetch_add(n, Relaxed);
        }
    }

    /// The total.
    pub(crate) fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_up() {
        let s = std::sync::Arc::new(Striped::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || (0..1000).for_each(|_| s.add(2)))
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.get(), 8000);
    }
}
