//! G2 host-arena bandwidth against plain `memcpy` of the same sizes, in the same run.
//!
//! Groups, for blocks of 64 KiB, 256 KiB, 1 MiB and 4 MiB:
//! - `memcpy`: `dst.copy_from_slice(&src)` between two `Vec<u8>` (the baseline; large
//!   `Vec`s come from `mmap` and start 16 bytes past a page boundary);
//! - `memcpy-al`: the same copy between two page-aligned buffers ([`PageBuf`]);
//! - `write`: [`HostArena::write_from`] from a `Vec<u8>` into a slot (guard check + copy);
//! - `write-al`: the same from a [`PageBuf`] (what a caller staging in page-aligned buffers
//!   gets; a `Vec` 16 bytes off a page costs the copy into a page-aligned slot);
//! - `read`: [`HostArena::read_into`] from a registered block's slot into a `Vec<u8>`;
//! - `read-al` (spread only): the same into a [`PageBuf`].
//!
//! Two settings: *hot* copies one source to one destination again and again (cache-resident up
//! to 1 MiB: the copy loop itself); *spread* cycles through `--spread` MiB of blocks per side
//! (default 64), so one side of every copy misses the cache as offload and onboarding do
//! (baselines: one `Vec` into `n` `Vec`s, `n` `Vec`s into one).
//!
//! Each rep runs every variant once (`--bytes` MiB per sample, default 128; `--reps`, default 15), interleaved, so
//! machine noise hits all variants alike; the tables give the median GB/s of each and, for
//! each ratio, the median over reps of G2 / memcpy measured in the same rep (goal: ≥ 90%).
//!
//! Run: `cargo bench -p kvtier-storage --bench arena`
//!
//! Reference (2-vCPU EPYC shared with other builds, 3 runs; full tables in
//! `docs/storage-bench.md`): hot, G2 write-al / read at 94–108% of memcpy for every size, G2
//! write from a `Vec` 89–94% (64–256 KiB); spread, write-al 97–136%, read-al 90–101%, read of
//! 256 KiB into a `Vec` 52% (the `Vec` sits 16 bytes off a page: use `PageBuf`).

use std::hint::black_box;
use std::time::Instant;

use kvtier_core::{BlockManager, G2, ImmutableBlock, SequenceHash};
use kvtier_storage::arena::{HostArena, PageBuf};
use kvtier_storage::layout::BlockLayout;

const SIZES: [usize; 4] = [64 << 10, 256 << 10, 1 << 20, 4 << 20];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median over reps of `a[i] / b[i]` (both measured in the same rep), in percent.
fn paired(a: &[f64], b: &[f64]) -> f64 {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| 100.0 * x / y).collect();
    median(&mut r)
}

/// GB/s of `iters` calls of `f`, each moving `size` bytes.
fn time(iters: usize, size: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let secs = start.elapsed().as_secs_f64();
    (iters * size) as f64 / secs / 1e9
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn register_all(
    manager: &BlockManager<G2>,
    arena: &HostArena<G2>,
    n: usize,
    src: &[u8],
    first: u64,
) -> Result<Vec<ImmutableBlock<G2>>, Box<dyn std::error::Error>> {
    let mut out = Vec::with_capacity(n);
    for (k, mut b) in (first..).zip(manager.allocate_blocks(n)?) {
        arena.write_from(&mut b, src)?;
        let staged = b
            .stage(SequenceHash::root(k), manager.block_size())
            .map_err(|e| e.to_string())?;
        out.push(manager.register_block(staged).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Hot: one source and one destination of `size` bytes, copied over and over.
fn hot(size: usize, reps: usize, sample: usize) -> Result<[f64; 9], Box<dyn std::error::Error>> {
    let iters = (sample / size).max(8);
    let manager = BlockManager::<G2>::builder().with_block_count(2).build()?;
    let arena = HostArena::new(&manager, BlockLayout::from_bytes(size)?)?;
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let held = register_all(&manager, &arena, 1, &src, 1)?
        .pop()
        .ok_or("no block")?;
    let mut writer = manager.allocate_blocks(1)?.pop().ok_or("no block")?;
    let mut a_src = PageBuf::zeroed(size)?;
    a_src.fill(0x5A);
    let mut a_dst = PageBuf::zeroed(size)?;
    dst.copy_from_slice(&src); // fault in and warm every buffer
    a_dst.copy_from_slice(&a_src);

    let mut v: [Vec<f64>; 5] = Default::default();
    for _ in 0..reps {
        v[0].push(time(iters, size, || {
            black_box(&mut dst).copy_from_slice(black_box(&src))
        }));
        v[1].push(time(iters, size, || {
            black_box(&mut *a_dst).copy_from_slice(black_box(&*a_src))
        }));
        v[2].push(time(iters, size, || {
            arena
                .write_from(black_box(&mut writer), black_box(&src))
                .expect("write")
        }));
        dst.fill(0);
        v[3].push(time(iters, size, || {
            arena
                .read_into(black_box(&held), black_box(&mut dst))
                .expect("read")
        }));
        assert!(dst == src, "read back what was written");
        v[4].push(time(iters, size, || {
            arena
                .write_from(black_box(&mut writer), black_box(&*a_src))
                .expect("write")
        }));
    }
    // memcpy, memcpy-al, write, read, write-al; write/memcpy, read/memcpy, write-al/al, read/al.
    let [m, al, w, r, wa] = v.each_ref().map(|s| median(&mut s.clone()));
    Ok([
        m,
        al,
        w,
        r,
        wa,
        paired(&v[2], &v[0]),
        paired(&v[3], &v[0]),
        paired(&v[4], &v[1]),
        paired(&v[3], &v[1]),
    ])
}

/// Spread: `n` blocks of `size` bytes (`--spread` MiB) cycled through, so most copies miss
/// the cache on one side, as offload (write) and onboarding (read) do. Baselines: one hot
/// `Vec` to `n` `Vec`s (for write) and `n` `Vec`s to one (for read).
fn spread(
    size: usize,
    reps: usize,
    sample: usize,
    spread_bytes: usize,
) -> Result<[f64; 10], Box<dyn std::error::Error>> {
    let n = (spread_bytes / size).max(4);
    let mut a_src = PageBuf::zeroed(size)?;
    a_src.fill(0x5A);
    let mut a_dst = PageBuf::zeroed(size)?;
    let iters = (sample / size).max(n);
    let manager = BlockManager::<G2>::builder()
        .with_block_count(2 * n)
        .build()?;
    let arena = HostArena::new(&manager, BlockLayout::from_bytes(size)?)?;
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    // Slots are visited in address order, as the `Vec`s are: the manager hands ids out
    // interleaved across its shards, and a scattered order would measure the prefetcher.
    let mut held = register_all(&manager, &arena, n, &src, 1)?;
    held.sort_by_key(|b| b.block_id());
    let mut writers = manager.allocate_blocks(n)?;
    writers.sort_by_key(|b| b.block_id());
    let mut vecs: Vec<Vec<u8>> = (0..n).map(|_| vec![0x5Au8; size]).collect();

    let mut v: [Vec<f64>; 6] = Default::default();
    for _ in 0..reps {
        let mut i = 0;
        v[0].push(time(iters, size, || {
            i = (i + 1) % n;
            black_box(&mut vecs[i]).copy_from_slice(black_box(&src))
        }));
        v[1].push(time(iters, size, || {
            i = (i + 1) % n;
            arena
                .write_from(black_box(&mut writers[i]), black_box(&src))
                .expect("write")
        }));
        v[2].push(time(iters, size, || {
            i = (i + 1) % n;
            black_box(&mut dst).copy_from_slice(black_box(&vecs[i]))
        }));
        v[3].push(time(iters, size, || {
            i = (i + 1) % n;
            arena
                .read_into(black_box(&held[i]), black_box(&mut dst))
                .expect("read")
        }));
        assert!(dst == src, "read back what was written");
        v[4].push(time(iters, size, || {
            i = (i + 1) % n;
            arena
                .write_from(black_box(&mut writers[i]), black_box(&*a_src))
                .expect("write")
        }));
        v[5].push(time(iters, size, || {
            i = (i + 1) % n;
            arena
                .read_into(black_box(&held[i]), black_box(&mut *a_dst))
                .expect("read")
        }));
    }
    // memcpy 1->n, write, memcpy n->1, read, write-al, read-al.
    let [mw, w, mr, r, wa, ra] = v.each_ref().map(|s| median(&mut s.clone()));
    Ok([
        mw,
        w,
        wa,
        mr,
        r,
        ra,
        paired(&v[1], &v[0]),
        paired(&v[4], &v[0]),
        paired(&v[3], &v[2]),
        paired(&v[5], &v[2]),
    ])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps = arg("--reps", 15).max(1);
    let sample = arg("--bytes", 128) << 20;
    let spread_bytes = arg("--spread", 64) << 20;
    println!(
        "reps {reps}, {} MiB per sample; medians in GB/s; ratios: median over reps of G2/memcpy in the same rep",
        sample >> 20
    );
    println!("\nhot (one source, one destination):\n");
    println!(
        "| block | memcpy | memcpy-al | G2 write | G2 write-al | G2 read | write/memcpy | read/memcpy | write-al/al | read/al |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let [m, al, w, r, wa, wm, rm, waa, ra] = hot(size, reps, sample)?;
        println!(
            "| {} KiB | {m:.1} | {al:.1} | {w:.1} | {wa:.1} | {r:.1} | {wm:.0}% | {rm:.0}% | {waa:.0}% | {ra:.0}% |",
            size >> 10,
        );
    }
    println!(
        "\nspread ({} MiB of blocks cycled through, per side):\n",
        spread_bytes >> 20
    );
    println!(
        "| block | memcpy 1->n | G2 write | G2 write-al | write/memcpy | write-al/memcpy | memcpy n->1 | G2 read | G2 read-al | read/memcpy | read-al/memcpy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let [mw, w, wa, mr, r, ra, wr, war, rr, rar] = spread(size, reps, sample, spread_bytes)?;
        println!(
            "| {} KiB | {mw:.1} | {w:.1} | {wa:.1} | {wr:.0}% | {war:.0}% | {mr:.1} | {r:.1} | {ra:.1} | {rr:.0}% | {rar:.0}% |",
            size >> 10,
        );
    }
    Ok(())
}
