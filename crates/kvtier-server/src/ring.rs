//! The request ring from IO threads to workers: a pre-allocated, sequenced, bounded ring
//! (disruptor style) with batch-claiming consumers that spin briefly, then park.
//!
//! Each slot carries a sequence number (Vyukov's bounded MPMC scheme): slot `p & mask` is free
//! for the producer of position `p` when its sequence is `p`, holds position `p`'s value when
//! it is `p + 1`, and is free again for position `p + capacity` once consumed.
//!
//! ```text
//!   producers: CAS tail t -> t+1, write slot, seq = t+1   (publish)
//!   consumers: scan head.. while seq == pos+1 (up to a batch), CAS head h -> h+n, take, seq = pos+cap
//! ```
//!
//! # Invariants
//!
//! - Positions are claimed exactly once (CAS on `tail` / `head`); a claimed slot is touched
//!   only by its claimer until its sequence moves on, so the slot's mutex is never contended
//!   (it exists to keep this module free of `unsafe`).
//! - Sleeping: a consumer registers in `sleepers`, re-checks emptiness, then waits under
//!   `lock`; a producer publishes, then (SeqCst) reads `sleepers` and notifies under `lock`.
//!   With both sides sequentially consistent, either the producer sees the sleeper or the
//!   sleeper sees the value: no lost wake-up, and no notify at all while workers are busy.
//!
//! # Lock ordering
//!
//! `lock` (park) and a slot's mutex are never held together.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

#[repr(align(128))]
struct Padded<T>(T);

struct Slot<T> {
    seq: AtomicU64,
    value: Mutex<Option<T>>,
}

/// Bounded multi-producer, multi-consumer ring with parking consumers.
pub(crate) struct Ring<T> {
    slots: Box<[Slot<T>]>,
    mask: u64,
    tail: Padded<AtomicU64>,
    head: Padded<AtomicU64>,
    sleepers: Padded<AtomicUsize>,
    lock: Mutex<()>,
    wake: Condvar,
    closed: AtomicBool,
}

impl<T> Ring<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two, at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        let cap = capacity.max(2).next_power_of_two();
        Self {
            slots: (0..cap as u64)
                .map(|i| Slot {
                    seq: AtomicU64::new(i),
                    value: Mutex::new(None),
                })
                .collect(),
            mask: cap as u64 - 1,
            tail: Padded(AtomicU64::new(0)),
            head: Padded(AtomicU64::new(0)),
            sleepers: Padded(AtomicUsize::new(0)),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Publishes `value`, or hands it back when the ring is full.
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let cap = self.slots.len() as u64;
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[(pos & self.mask) as usize];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == pos {
                match self.tail.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        *slot.value.lock() = Some(value);
                        slot.seq.store(pos + 1, Ordering::SeqCst);
                        break;
                    }
                    Err(now) => pos = now,
                }
            } else if seq + cap == pos + 1 {
                // Still holds the value of position `pos - cap`: full.
                return Err(value);
            } else {
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
        if self.sleepers.0.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Claims up to `max` published values at once into `out`; returns how many.
    pub(crate) fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> usize {
        let cap = self.slots.len() as u64;
        loop {
            let head = self.head.0.load(Ordering::Relaxed);
            let mut n = 0u64;
            while (n as usize) < max {
                let pos = head + n;
                let seq = self.slots[(pos & self.mask) as usize]
                    .seq
                    .load(Ordering::Acquire);
                if seq != pos + 1 {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                if self.head.0.load(Ordering::Relaxed) == head {
                    return 0;
                }
                continue;
            }
            if self
                .head
                .0
                .compare_exchange(head, head + n, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                for pos in head..head + n {
                    let slot = &self.slots[(pos & self.mask) as usize];
                    if let Some(v) = slot.value.lock().take() {
                        out.push(v);
                    }
                    slot.seq.store(pos + cap, Ordering::Release);
                }
                return n as usize;
            }
        }
    }

    fn has_ready(&self) -> bool {
        let head = self.head.0.load(Ordering::SeqCst);
        self.slots[(head & self.mask) as usize]
            .seq
            .load(Ordering::SeqCst)
            == head + 1
    }

    /// Claims a batch, spinning `spins` rounds, then parking until values arrive. Returns
    /// `false` once the ring is closed and empty.
    pub(crate) fn pop_wait(&self, out: &mut Vec<T>, max: usize, spins: u32) -> bool {
        loop {
            if self.pop_batch(out, max) > 0 {
                return true;
            }
            for _ in 0..spins {
                std::hint::spin_loop();
                if self.has_ready() {
                    break;
                }
            }
            if self.has_ready() {
                continue;
            }
            let mut guard = self.lock.lock();
            self.sleepers.0.fetch_add(1, Ordering::SeqCst);
            if !self.has_ready() {
                if self.closed.load(Ordering::SeqCst) {
                    self.sleepers.0.fetch_sub(1, Ordering::SeqCst);
                    return false;
                }
                self.wake.wait(&mut guard);
            }
            self.sleepers.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes every parked consumer; they return `false` once the ring is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock();
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_full_and_wraparound() {
        let ring = Ring::new(3);
        assert_eq!(ring.capacity(), 4);
        let mut out = Vec::new();
        for lap in 0..5u32 {
            for i in 0..4 {
                ring.push(lap * 10 + i).unwrap();
            }
            assert_eq!(ring.push(99), Err(99));
            assert_eq!(ring.pop_batch(&mut out, 3), 3);
            assert_eq!(ring.pop_batch(&mut out, 3), 1);
            assert_eq!(ring.pop_batch(&mut out, 3), 0);
            let expect: Vec<u32> = (0..4).map(|i| lap * 10 + i).collect();
            assert_eq!(out, expect);
            out.clear();
        }
    }

    #[test]
    fn many_producers_many_consumers_lose_and_duplicate_nothing() {
        let ring = Arc::new(Ring::new(64));
        let per = 20_000u64;
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut out = Vec::new();
                    while ring.pop_wait(&mut out, 16, 50) {
                        got.append(&mut out);
                    }
                    got
                })
            })
            .collect();
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let mut v = p * per + i;
                        while let Err(back) = ring.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        while ring.has_ready() {
            std::thread::yield_now();
        }
        ring.close();
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..2 * per).collect::<Vec<_>>());
    }

    #[test]
    fn parked_consumer_wakes_on_push_and_on_close() {
        let ring = Arc::new(Ring::<u32>::new(8));
        let r = ring.clone();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            let first = r.pop_wait(&mut out, 8, 10);
            let second = r.pop_wait(&mut out, 8, 10);
            (first, second, out)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        ring.push(7).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        ring.close();
        assert_eq!(t.join().unwrap(), (true, false, vec![7]));
    }
}
