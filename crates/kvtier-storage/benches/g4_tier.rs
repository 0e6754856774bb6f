//! G4 behind the tier interface (plain `main`, no harness), against a real redis-server on
//! loopback started by the bench (no persistence, free 127.0.0.1 port).
//!
//! Rows, interleaved per rep (each rep runs every row), medians of µs per call over reps:
//! - `G4Store::get` vs `RemoteStorage` (`get_block`: lookup, then read the hit handler into a
//!   fresh buffer), per block size: what the `Storage` adapter costs over the raw store.
//! - A read that misses every tier of a G2+G3+G4 [`TieredStore`] (G4 with a deadline, so
//!   called on its worker thread): with redis-server up (a real G4 miss), then with it killed
//!   and the breaker open (G4 refuses without a round trip).
//! - `locate_prefix` of a 32-block prefix spread over G2 (4 blocks), G3 (4) and G4 (24),
//!   against the per-block probing it replaced (`contains` on every tier for every block the
//!   faster tiers lack, i.e. one G4 round trip per block; re-enacted here through the public
//!   API, called directly, without the tier-worker hand-off the old code paid once per tier).
//!
//! Run: `cargo bench -p kvtier-storage --bench g4_tier` (`-- --quick` for a smoke run).

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_core::{BlockManager, G2, SequenceHash};
use kvtier_storage::arena::HostArena;
use kvtier_storage::disk::{DiskConfig, DiskTier};
use kvtier_storage::layout::BlockLayout;
use kvtier_storage::remote::{G4Store, Namespace};
use kvtier_storage::tier::disk::DiskStorage;
use kvtier_storage::tier::host::HostStorage;
use kvtier_storage::tier::remote::RemoteStorage;
use kvtier_storage::tier::{Storage, get_block};
use kvtier_storage::tiered::{TierConfig, TieredStore};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// µs per call of `f` over `ops` calls.
fn time(ops: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / ops as f64
}

fn g4(server: &redis_support::RedisServer, block: usize) -> Arc<G4Store> {
    let ns = Namespace::new("bench-g4-tier", "xxh3-v1/bs16", block).expect("namespace");
    Arc::new(
        G4Store::builder(ns)
            .redis(server.url())
            .with_timeout(Duration::from_millis(200))
            .with_breaker(3, Duration::from_secs(3600))
            .build()
            .expect("store"),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, ops) = if quick { (3, 50) } else { (7, 400) };
    let mut server = redis_support::RedisServer::start();

    println!("adapter overhead (µs per read, median of {reps} reps)");
    println!("| size | G4Store::get | RemoteStorage get_block | ratio median (min-max) |");
    for kb in [4usize, 64, 256] {
        let block = kb << 10;
        let store = g4(&server, block);
        let tier = RemoteStorage::new(Arc::clone(&store));
        for i in 0..64 {
            store
                .put(SequenceHash::root(i), &vec![i as u8; block])
                .expect("put");
        }
        let (mut raw, mut adapted, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let r = time(ops, |i| {
                let got = store.get(SequenceHash::root(i % 64)).expect("get");
                assert_eq!(got.map(|b| b.len()), Some(block));
            });
            let a = time(ops, |i| {
                let got = get_block(&tier, SequenceHash::root(i % 64)).expect("get");
                assert_eq!(got.map(|b| b.len()), Some(block));
            });
            raw.push(r);
            adapted.push(a);
            ratios.push(a / r);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        println!(
            "| {kb} KiB | {:.1} | {:.1} | {:.3} ({lo:.2}-{hi:.2}) |",
            median(raw),
            median(adapted),
            median(ratios)
        );
    }

    // A miss through G2 + G3 + G4, G4 up and then down.
    let block = 4096;
    let dir = tempfile::tempdir().expect("dir");
    let manager = BlockManager::<G2>::builder()
        .with_block_count(64)
        .build()
        .expect("manager");
    let arena =
        HostArena::new(&manager, BlockLayout::from_bytes(block).expect("layout")).expect("arena");
    let disk =
        DiskTier::open(dir.path(), DiskConfig::new("bench-g4-tier", block, 64)).expect("disk");
    let store = g4(&server, block);
    let g2 = HostStorage::new(Arc::new(arena));
    let g3: Arc<dyn Storage> = Arc::new(DiskStorage::new(Arc::new(disk)));
    let g4_tier: Arc<dyn Storage> = Arc::new(RemoteStorage::new(Arc::clone(&store)));
    let tiered = TieredStore::builder()
        .host(g2.clone(), TierConfig::default())
        .tier(Arc::clone(&g3), TierConfig::default())
        .tier(
            Arc::clone(&g4_tier),
            TierConfig::default().with_timeout(Duration::from_secs(1)),
        )
        .build();

    // locate_prefix of 32 blocks: 0-3 in G2, 4-7 in G3, 8-31 in G4.
    let prefix: Vec<SequenceHash> = (0..32).map(|i| SequenceHash::root(500_000 + i)).collect();
    for (i, &h) in prefix.iter().enumerate() {
        let home: &dyn Storage = match i {
            0..=3 => &g2,
            4..=7 => &*g3,
            _ => &*g4_tier,
        };
        kvtier_storage::tier::put_block(home, h, &vec![i as u8; block]).expect("put");
    }
    let tiers: [&dyn Storage; 3] = [&g2, &*g3, &*g4_tier];
    let per_block = || {
        let mut at: Vec<Option<usize>> = vec![None; prefix.len()];
        for (t, tier) in tiers.iter().enumerate() {
            for (slot, &h) in at.iter_mut().zip(&prefix) {
                if slot.is_none() && tier.contains(h) {
                    *slot = Some(t);
                }
            }
        }
        at.into_iter().map_while(|t| t).collect::<Vec<usize>>()
    };
    let want = per_block();
    assert_eq!(want.len(), 32);
    assert_eq!(tiered.locate_prefix(&prefix).tiers, want);
    let locate_ops = ops / 4;
    let (mut old, mut new, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let o = time(locate_ops, |_| assert_eq!(per_block().len(), 32));
        let n = time(locate_ops, |_| {
            assert_eq!(tiered.locate_prefix(&prefix).len(), 32)
        });
        old.push(o);
        new.push(n);
        ratios.push(n / o);
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "\nlocate_prefix, 32 blocks (4 in G2, 4 in G3, 24 in G4), µs per call, median of {reps} reps"
    );
    println!(
        "| per-block probes (before) | one probe per tier (after) | after/before median (min-max) |"
    );
    println!(
        "| {:.1} | {:.1} | {:.3} ({lo:.2}-{hi:.2}) |",
        median(old),
        median(new),
        median(ratios)
    );
    let mut out = vec![0u8; block];
    let mut miss = |i: u64| {
        let got = tiered
            .get(SequenceHash::root(1_000_000 + i), &mut out)
            .expect("get");
        assert_eq!(got, None);
    };
    let up: Vec<f64> = (0..reps).map(|_| time(ops, &mut miss)).collect();
    server.kill();
    while !store.is_marked_down() {
        miss(0);
    }
    let down: Vec<f64> = (0..reps).map(|_| time(ops, &mut miss)).collect();
    let stats = store.stats();
    println!("\nmiss in G2+G3+G4 (µs per read, median of {reps} reps)");
    println!("| G4 up | G4 down, breaker open | breaker rejections |");
    println!(
        "| {:.1} | {:.1} | {} |",
        median(up),
        median(down),
        stats.breaker_rejected
    );
}
