//! `handle_costs`: the cost floor of the ways a match can hand out one handle per block, without
//! any lookup, lock or policy work, so issue 8's "active match" target can be judged against
//! what the handle scheme alone costs on this machine.
//!
//! Each scheme hands out `N` handles to `N` slot-like objects of a 4,096-entry table (each on
//! its own 128-byte lines, like `Slot`) and drops them one by one, front to back, as an engine
//! drops a `Vec<ImmutableBlock>`:
//!
//! - `per-slot (today)`: each handle owns an `Arc` count of its slot, and a drop first adds one
//!   to the slot's `released` counter (the manager's scheme: three atomic read-modify-writes per
//!   block, all on the slot's lines).
//! - `activation (safe)`: the handles of one call share one reference-counted activation
//!   allocated per call; each handle owns an `Arc` count of it (two read-modify-writes per
//!   block on one fresh line) and the last drop gives every block back with a plain store per
//!   block (as a batch release under a shard lock would). Not the manager's semantics: a block
//!   stays active until every handle of its call is dropped.
//! - `keepalive + slot count`: each handle owns an `Arc` count of one keep-alive object per call
//!   (which holds the slot table) instead of its slot's, and still gives its block back with
//!   one increment of the slot's `released` (per-handle semantics kept: two read-modify-writes
//!   per block on the call's fresh line, one on the slot's).
//! - `one count per call`: the handles own nothing; one non-atomic count per call, the last
//!   drop gives the blocks back. The floor if handles needed no atomic at all, which safe Rust
//!   cannot build (each owned `Arc` is one atomic increment and one decrement).
//!
//! `--threads 2` runs two threads on the same slots at once (hot blocks both threads hold, as
//! in Zipf churn), so the per-slot scheme's lines move between cores.
//!
//! ```text
//! cargo run --release -p kvtier-bench --example handle_costs -- [--threads 1|2] [--reps 7]
//! ```
//!
//! Figures (2026-12-05, 2-vCPU EPYC shared with other builds): see `docs/bench-results.md`,
//! "Status after issue 8's third part".

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// A slot-like object: the counters a handle touches, padded to 128 bytes.
#[repr(align(128))]
#[derive(Default)]
struct FakeSlot {
    handles: AtomicU32,
    released: AtomicU32,
    state: AtomicU32,
}

const TABLE: usize = 4096;
const SIZES: [usize; 3] = [8, 32, 128];

/// Today's handle: one `Arc<FakeSlot>`; its drop gives the handle back with one increment.
struct SlotHandle(Arc<FakeSlot>);

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let r = self.0.released.fetch_add(1, Ordering::AcqRel) + 1;
        if self.0.handles.load(Ordering::Acquire) == r {
            self.0.state.store(0, Ordering::Relaxed);
        }
    }
}

/// One call's activation: the table and the blocks it holds.
struct Activation {
    table: Arc<[Arc<FakeSlot>]>,
    ids: Vec<u32>,
}

impl Drop for Activation {
    fn drop(&mut self) {
        for &i in &self.ids {
            let s = &self.table[i as usize];
            s.handles.store(0, Ordering::Relaxed);
            s.state.store(0, Ordering::Relaxed);
        }
    }
}

/// A handle of an activation: the shared activation and the block's place in it.
struct ActHandle {
    _activation: Arc<Activation>,
    _index: u32,
}

/// A handle that keeps the table alive through its call's keep-alive object and counts its
/// release on the slot.
struct KeptHandle {
    keep: Arc<Arc<[Arc<FakeSlot>]>>,
    id: u32,
}

impl Drop for KeptHandle {
    fn drop(&mut self) {
        let s = &self.keep[self.id as usize];
        let r = s.released.fetch_add(1, Ordering::AcqRel) + 1;
        if s.handles.load(Ordering::Acquire) == r {
            s.state.store(0, Ordering::Relaxed);
        }
    }
}

/// The floor: the handles of one call share one non-atomic count.
struct Batch {
    table: Arc<[Arc<FakeSlot>]>,
    ids: Vec<u32>,
    live: Cell<usize>,
}

struct BatchHandle(Rc<Batch>);

impl Drop for BatchHandle {
    fn drop(&mut self) {
        let b = &self.0;
        b.live.set(b.live.get() - 1);
        if b.live.get() == 0 {
            for &i in &b.ids {
                b.table[i as usize].state.store(0, Ordering::Relaxed);
            }
        }
    }
}

fn per_slot(table: &Arc<[Arc<FakeSlot>]>, start: usize, n: usize) {
    let mut out = Vec::with_capacity(n);
    for i in start..start + n {
        let s = &table[i];
        // Taken under the shard lock in the manager: a plain load and store.
        s.handles
            .store(s.handles.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.state.store(1, Ordering::Relaxed);
        out.push(SlotHandle(s.clone()));
    }
    drop(black_box(out));
}

fn activation(table: &Arc<[Arc<FakeSlot>]>, start: usize, n: usize) {
    let ids: Vec<u32> = (start as u32..(start + n) as u32).collect();
    for &i in &ids {
        let s = &table[i as usize];
        s.handles
            .store(s.handles.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.state.store(1, Ordering::Relaxed);
    }
    let act = Arc::new(Activation {
        table: table.clone(),
        ids,
    });
    let out: Vec<ActHandle> = (0..n as u32)
        .map(|i| ActHandle {
            _activation: act.clone(),
            _index: i,
        })
        .collect();
    drop(act);
    drop(black_box(out));
}

fn keepalive(table: &Arc<[Arc<FakeSlot>]>, start: usize, n: usize) {
    let keep = Arc::new(table.clone());
    let mut out = Vec::with_capacity(n);
    for i in start..start + n {
        let s = &table[i];
        s.handles
            .store(s.handles.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        s.state.store(1, Ordering::Relaxed);
        out.push(KeptHandle {
            keep: keep.clone(),
            id: i as u32,
        });
    }
    drop(keep);
    drop(black_box(out));
}

fn one_count(table: &Arc<[Arc<FakeSlot>]>, start: usize, n: usize) {
    let ids: Vec<u32> = (start as u32..(start + n) as u32).collect();
    for &i in &ids {
        table[i as usize].state.store(1, Ordering::Relaxed);
    }
    let b = Rc::new(Batch {
        table: table.clone(),
        ids,
        live: Cell::new(n),
    });
    let out: Vec<BatchHandle> = (0..n).map(|_| BatchHandle(b.clone())).collect();
    drop(b);
    drop(black_box(out));
}

type Scheme = fn(&Arc<[Arc<FakeSlot>]>, usize, usize);

/// ns per block of `scheme` over `iters` calls on `threads` threads sharing the table.
fn measure(scheme: Scheme, n: usize, threads: usize) -> f64 {
    let table: Arc<[Arc<FakeSlot>]> = (0..TABLE).map(|_| Arc::new(FakeSlot::default())).collect();
    let iters = (2_000_000 / n).max(10_000);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let table = table.clone();
            s.spawn(move || {
                for k in 0..iters {
                    // Walk a few prefixes so several lines are in play, as hot chains are.
                    let start = (k % 4) * n;
                    scheme(&table, start, n);
                }
            });
        }
    });
    // Each thread handed out iters * n handles in this wall time.
    t0.elapsed().as_nanos() as f64 / (iters * n) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let threads = opt("--threads", 1);
    let reps = opt("--reps", 7);
    let schemes: [(&str, Scheme); 4] = [
        ("per-slot (today)", per_slot),
        ("keepalive + slot count", keepalive),
        ("activation (safe)", activation),
        ("one count per call", one_count),
    ];
    println!(
        "wall ns per block per thread, {threads} thread(s), median of {reps} interleaved reps"
    );
    println!("| scheme | N = 8 | N = 32 | N = 128 |");
    println!("|---|---:|---:|---:|");
    let mut cells = vec![vec![Vec::new(); SIZES.len()]; schemes.len()];
    for _ in 0..reps {
        for (si, &n) in SIZES.iter().enumerate() {
            for (k, (_, f)) in schemes.iter().enumerate() {
                cells[k][si].push(measure(*f, n, threads));
            }
        }
    }
    for (k, (name, _)) in schemes.iter().enumerate() {
        let v: Vec<String> = cells[k]
            .iter()
            .map(|c| format!("{:.1}", median(c.clone())))
            .collect();
        println!("| {name} | {} |", v.join(" | "));
    }
}
