//! G2 host-arena bandwidth against plain `memcpy` of the same sizes, in the same run.
//!
//! Groups, for blocks of 64 KiB, 256 KiB, 1 MiB and 4 MiB:
//! - `memcpy`: `dst.copy_from_slice(&src)` between two `Vec<u8>` (the baseline; large
//!   `Vec`s come from `mmap` and start 16 bytes past a page boundary);
//! - `memcpy-al`: the same copy between two page-aligned slices (the best case of the CPU);
//! - `write`: [`HostArena::write_from`] from a `Vec<u8>` into a slot (guard check + copy);
//! - `read`: [`HostArena::read_into`] from a registered block's slot into a `Vec<u8>`.
//!
//! Each rep runs every variant once on a hot source and destination (`--bytes` per sample,
//! default 256 MiB), interleaved, so machine noise hits all variants alike; the table gives the
//! median GB/s of each and the ratios of the medians (goal: arena ≥ 90% of `memcpy`).
//!
//! Run: `cargo bench -p kvtier-storage --bench arena -- --reps 7`
//!
//! Reference (2-vCPU EPYC, shared, 7 reps) is in `docs/` and the commit that added this file.

use std::hint::black_box;
use std::time::Instant;

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::arena::HostArena;
use kvtier_storage::layout::{BlockLayout, PAGE_SIZE};

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

/// GB/s of `iters` calls of `f`, each moving `size` bytes.
fn time(iters: usize, size: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let secs = start.elapsed().as_secs_f64();
    (iters * size) as f64 / secs / 1e9
}

/// A page-aligned slice of `len` bytes inside `buf`.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.resize(len + PAGE_SIZE, 1);
    let off = buf.as_ptr().align_offset(PAGE_SIZE);
    &mut buf[off..off + len]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps = arg("--reps", 7).max(1);
    let sample_bytes = arg("--bytes", 256 << 20);
    println!("reps {reps}, {} MiB per sample", sample_bytes >> 20);
    println!(
        "| block | memcpy GB/s | memcpy-al GB/s | write GB/s | read GB/s | write/memcpy | read/memcpy | write/al | read/al |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let iters = (sample_bytes / size).max(8);
        let manager = BlockManager::<G2>::builder().with_block_count(2).build()?;
        let arena = HostArena::new(&manager, BlockLayout::from_bytes(size)?)?;
        let mut blocks = manager.allocate_blocks(2)?;
        let mut writer = blocks.pop().ok_or("no block")?;
        let mut reader = blocks.pop().ok_or("no block")?;
        let src = vec![0x5Au8; size];
        let mut dst = vec![0u8; size];
        arena.write_from(&mut reader, &src)?;
        let reader = reader
            .stage(SequenceHash::root(1), manager.block_size())
            .map_err(|e| e.to_string())?;
        let held = manager.register_block(reader).map_err(|e| e.to_string())?;
        let (mut abuf, mut bbuf) = (Vec::new(), Vec::new());
        let a_src = aligned(&mut abuf, size);
        let a_dst = aligned(&mut bbuf, size);
        dst.copy_from_slice(&src); // fault in and warm every buffer
        a_dst.copy_from_slice(a_src);
        arena.read_into(&held, &mut dst)?;

        let mut v = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
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
            v[3].push(time(iters, size, || {
                arena
                    .read_into(black_box(&held), black_box(&mut dst))
                    .expect("read")
            }));
        }
        let [m, al, w, r] = v.map(|mut s| median(&mut s));
        println!(
            "| {} KiB | {m:.1} | {al:.1} | {w:.1} | {r:.1} | {:.0}% | {:.0}% | {:.0}% | {:.0}% |",
            size >> 10,
            100.0 * w / m,
            100.0 * r / m,
            100.0 * w / al,
            100.0 * r / al,
        );
        assert!(dst == src, "read back what was written");
    }
    Ok(())
}
