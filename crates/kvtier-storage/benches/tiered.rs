//! Tier composition benchmark (plain `main`, no harness): bringing a prefix of blocks from G3
//! into G2.
//!
//! Rows, all for the same `KVTIER_BENCH_BLOCKS` (default 256) blocks of
//! `KVTIER_BENCH_BLOCK_KB` KiB (default 64) that live in G3 only, G2 emptied before every pass:
//! - `fetch_prefix_into_host`: one probe per tier, one `get_batch` on G3, one batched G2
//!   allocation and registration;
//! - `get per block`: `TieredStore::get` for each block (lookup in G3, verify, promote into
//!   G2 one by one), the path without batching;
//! - `DiskTier::get_batch`: the raw batched read alone (the ceiling: no G2 write).
//!
//! Cold rows drop the data files' cached pages before each pass (`posix_fadvise`); warm rows
//! read from the page cache. One warm-up pass, then `PASSES` measured passes, interleaved (each
//! pass runs every row once); medians and ratios to the batched path are printed.
//!
//! Run: `cargo bench -p kvtier-storage --bench tiered` (files go to `$KVTIER_BENCH_DIR`,
//! default the system temp dir).
//!
//! Reference figures, 2026-12-05, 2 vCPU VM shared with other builds (noisy): three runs each,
//! ratio of `get per block` to `fetch_prefix_into_host` medians (>1: batching wins).
//!
//! ```text
//! 4096 blocks of 4 KiB (16.8 MB):  cold 1.27 / 2.22 / 2.04x   warm 2.49 / 2.32 / 2.66x
//!   batched path 10-17 ms; raw DiskTier::get_batch 0.44-1.49x of it
//! 256 blocks of 64 KiB (16.8 MB):  cold 0.82 / 0.92 / 0.83x   warm 0.87 / 1.06 / 0.95x
//!   (large blocks: one pread per block is already efficient; the batched path pays one
//!   extra copy into G2 it shares with promotion)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tiered::{Promotion, TierConfig, TieredStore};

const PASSES: usize = 7;

fn hash(i: u64) -> SequenceHash {
    SequenceHash::from_u128(((i as u128) << 64) | (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as u128)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::var("KVTIER_BENCH_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let block: usize = std::env::var("KVTIER_BENCH_BLOCK_KB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(64)
        << 10;
    let base = std::env::var_os("KVTIER_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let manager = BlockManager::<G2>::builder()
        .with_block_count(n as usize)
        .build()
        .expect("manager");
    let arena =
        HostArena::new(&manager, BlockLayout::from_bytes(block).expect("layout")).expect("arena");
    let host = HostStorage::new(Arc::new(arena));
    let disk = Arc::new(
        DiskTier::open(dir.path(), DiskConfig::new("bench-tiered", block, n)).expect("disk"),
    );
    let store = TieredStore::builder()
        .host(host.clone(), TierConfig::default())
        .tier(
            Arc::new(DiskStorage::new(Arc::clone(&disk))),
            TierConfig::default(),
        )
        .promotion(Promotion::OnStreamCommitAtFinish)
        .build();
    let hashes: Vec<SequenceHash> = (0..n).map(hash).collect();
    let payload: Vec<u8> = (0..block).map(|i| (i % 251) as u8).collect();
    let batch: Vec<(SequenceHash, &[u8])> = hashes.iter().map(|h| (*h, &payload[..])).collect();
    disk.put_batch(&batch).expect("fill G3");
    let mb = (n as f64 * block as f64) / 1e6;
    println!(
        "{n} blocks of {} KiB ({mb:.1} MB) from G3 into G2; median of {PASSES} passes",
        block >> 10
    );
    println!(
        "{:<26} {:>6} {:>10} {:>9} {:>12}",
        "path", "cache", "ms", "GB/s", "vs batched"
    );

    let reset = || {
        manager.reset_inactive_pool().expect("G2 idle");
    };
    for cold in [true, false] {
        let prepare = || {
            reset();
            if cold {
                disk.drop_page_cache().expect("fadvise");
            }
        };
        let batched = || {
            let got = store.fetch_prefix_into_host(&hashes).expect("onboard");
            assert_eq!(got.blocks.len(), hashes.len());
        };
        let per_block = || {
            let mut out = vec![0u8; block];
            for h in &hashes {
                assert!(store.get(*h, &mut out).expect("get").is_some());
            }
        };
        let raw = || {
            let mut out = vec![0u8; hashes.len() * block];
            disk.get_batch(&hashes, &mut out).expect("get_batch");
        };
        let variants: [(&str, &dyn Fn()); 3] = [
            ("fetch_prefix_into_host", &batched),
            ("get per block", &per_block),
            ("DiskTier::get_batch", &raw),
        ];
        // Interleaved: every pass runs each variant once, so load swings hit all of them.
        let mut times = vec![Vec::new(); variants.len()];
        for pass in 0..=PASSES {
            for (i, (_, f)) in variants.iter().enumerate() {
                prepare();
                let t = Instant::now();
                f();
                if pass > 0 {
                    times[i].push(t.elapsed());
                }
            }
        }
        let medians: Vec<Duration> = times.into_iter().map(median).collect();
        for ((name, _), d) in variants.iter().zip(&medians) {
            println!(
                "{:<26} {:>6} {:>10.2} {:>9.2} {:>11.2}x",
                name,
                if cold { "cold" } else { "warm" },
                d.as_secs_f64() * 1e3,
                mb / 1e3 / d.as_secs_f64(),
                d.as_secs_f64() / medians[0].as_secs_f64(),
            );
        }
    }
}
