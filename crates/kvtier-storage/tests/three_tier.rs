//! G2 + G3 + G4 in one [`TieredStore`], G4 on a real redis-server that is killed mid-run and
//! restarted on the same port.
//!
//! - Blocks written through land in every tier whose gate admits them.
//! - A G2 miss is served from G3 (or from G4 when G3 misses too) and promoted upwards.
//! - With the server dead, G4 calls fail and are counted (the breaker opens and then rejects
//!   calls without a network round trip), while G2 and G3 keep serving and taking writes.
//! - With the server back, G4 takes writes and serves reads again.
//!
//! No timing is asserted: waits are bounded polls for an outcome.

#[path = "conformance_support/mod.rs"]
mod conformance_support;
mod redis_support;
mod tiered_support;

use std::sync::Arc;
use std::time::Duration;

use conformance_support::{block, hash};
use kvtier_storage::remote::{G4Store, Namespace};
use kvtier_storage::tier::remote::RemoteStorage;
use kvtier_storage::tier::{Storage, put_block};
use kvtier_storage::tiered::{TierConfig, TieredStore};
use redis_support::{RedisServer, skip_redis_tests};
use tiered_support::{BLOCK, Counting, disk, host};

/// Polls `ok` every 20 ms, up to `tries` times; returns whether it ever held.
fn eventually(tries: u32, mut ok: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read(store: &TieredStore, i: u64) -> Option<usize> {
    let mut out = vec![0u8; BLOCK];
    let tier = store.get(hash(i), &mut out).expect("get")?;
    assert!(out == block(i, 0, BLOCK), "block {i} from tier {tier}");
    Some(tier)
}

#[test]
fn g2_g3_g4_compose_and_survive_a_g4_outage() {
    if skip_redis_tests() {
        return;
    }
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("three-tier", "xxh3-v1/bs16", BLOCK).unwrap();
    let g4 = Arc::new(
        G4Store::builder(ns)
            .redis(server.url())
            .with_timeout(Duration::from_millis(200))
            .with_breaker(3, Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let g2 = host(64);
    let g3: Arc<dyn Storage> = disk(dir.path());
    let g4_tier: Arc<dyn Storage> = Arc::new(RemoteStorage::new(Arc::clone(&g4)));
    let store = TieredStore::builder()
        .host(g2.clone(), TierConfig::default())
        .tier(Arc::clone(&g3), TierConfig::default())
        .tier(
            Arc::clone(&g4_tier),
            TierConfig::default().with_timeout(Duration::from_secs(2)),
        )
        .build();

    // Written through: everywhere.
    for i in 0..8 {
        assert_eq!(
            store.put(hash(i), &block(i, 0, BLOCK)).unwrap().stored,
            [0, 1, 2]
        );
    }
    for i in 0..8 {
        assert!(g2.contains(hash(i)) && g3.contains(hash(i)) && g4_tier.contains(hash(i)));
    }
    // Gates: a store over the same tiers whose G3 gate is below the block size.
    let gated = TieredStore::builder()
        .host(g2.clone(), TierConfig::default())
        .tier(
            Arc::clone(&g3),
            TierConfig::default().with_gate_bytes(BLOCK / 2),
        )
        .tier(Arc::clone(&g4_tier), TierConfig::default())
        .build();
    assert_eq!(
        gated.put(hash(9), &block(9, 0, BLOCK)).unwrap().stored,
        [0, 2]
    );
    assert!(!g3.contains(hash(9)) && g4_tier.contains(hash(9)));
    assert_eq!(gated.metrics().tiers[1].gate_drops, 1);

    // A G2 miss is served from G3 and promoted into G2.
    assert!(g2.purge(hash(0)).unwrap());
    assert_eq!(read(&store, 0), Some(1));
    assert!(g2.contains(hash(0)), "not promoted into G2");
    // A G2 and G3 miss is served from G4, promoted into G2 at once and into G3 in the
    // background.
    assert!(g2.purge(hash(1)).unwrap() && g3.purge(hash(1)).unwrap());
    assert_eq!(read(&store, 1), Some(2));
    assert!(g2.contains(hash(1)), "not promoted into G2");
    assert!(
        eventually(250, || g3.contains(hash(1))),
        "not promoted into G3"
    );
    let m = store.metrics();
    assert!(m.tiers[1].hits >= 1 && m.tiers[2].hits >= 1, "{m:?}");
    // A block only G4 holds, for the outage.
    put_block(&*g4_tier, hash(50), &block(50, 0, BLOCK)).unwrap();
    assert_eq!(g4.stats().errors, 0);

    // Outage.
    server.kill();
    let before = store.metrics().tiers[2].clone();
    for i in 20..28 {
        let report = store.put(hash(i), &block(i, 0, BLOCK)).unwrap();
        assert_eq!(report.stored, [0, 1], "block {i} while G4 is down");
    }
    for i in 2..6 {
        // G2 and G3 keep serving: from G2, and from G3 after a G2 miss.
        assert_eq!(read(&store, i), Some(0));
        assert!(g2.purge(hash(i)).unwrap());
        assert_eq!(read(&store, i), Some(1));
    }
    for i in 20..24 {
        assert!(g2.purge(hash(i)).unwrap());
        assert_eq!(read(&store, i), Some(1));
    }
    // Only in G4: a miss everywhere while it is down (counted there, not returned).
    assert_eq!(read(&store, 50), None);
    assert_eq!(read(&store, 50), None);
    let during = store.metrics().tiers[2].clone();
    assert!(
        during.write_errors >= before.write_errors + 8,
        "G4 write failures not counted: {during:?}"
    );
    assert!(
        during.errors > before.errors,
        "G4 read failures not counted: {during:?}"
    );
    let stats = g4.stats();
    assert!(stats.breaker_trips >= 1, "breaker never opened: {stats:?}");
    assert!(
        stats.breaker_rejected >= 1,
        "no call was refused without a round trip: {stats:?}"
    );
    assert_eq!(stats.puts, 9 + 1, "a put counted as done while G4 was down");

    // Back on the same port (empty: the server persists nothing). After the back-off, one
    // probe closes the breaker and G4 takes writes again.
    server.restart();
    let mut i = 100;
    assert!(
        eventually(250, || {
            i += 1;
            store.put(hash(i), &block(i, 0, BLOCK)).unwrap().stored == [0, 1, 2]
        }),
        "G4 never used again: {:?}",
        g4.stats()
    );
    assert!(!g4.is_marked_down());
    assert!(g4_tier.contains(hash(i)));
    // And serves reads: a block only G4 holds.
    assert!(g2.purge(hash(i)).unwrap() && g3.purge(hash(i)).unwrap());
    assert_eq!(read(&store, i), Some(2));
    let after = store.metrics().tiers[2].clone();
    assert!(
        after.hits > during.hits && after.writes > during.writes,
        "{after:?}"
    );
}

/// A prefix spread over G2, G3 and G4 (local-directory backend) is located tier by tier and
/// brought into G2 with one batched read per source tier; it ends at the first block no tier
/// holds.
#[test]
fn a_prefix_spread_over_three_tiers_is_onboarded_into_g2() {
    let g3_dir = tempfile::tempdir().unwrap();
    let g4_dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("three-tier-prefix", "xxh3-v1/bs16", BLOCK).unwrap();
    let g4 = Arc::new(
        G4Store::builder(ns)
            .local_dir(g4_dir.path())
            .build()
            .unwrap(),
    );
    let g2 = host(32);
    let g3: Arc<dyn Storage> = disk(g3_dir.path());
    let g4_tier: Arc<dyn Storage> = Arc::new(RemoteStorage::new(Arc::clone(&g4)));
    let store = TieredStore::builder()
        .host(g2.clone(), TierConfig::default())
        .tier(Arc::clone(&g3), TierConfig::default())
        .tier(
            Arc::clone(&g4_tier),
            TierConfig::default().with_timeout(Duration::from_secs(5)),
        )
        .build();
    // Blocks 0-1 in G2, 2-3 in G3 only, 4-5 and 7 in G4 only, 6 nowhere.
    let homes: [(u64, &dyn Storage); 7] = [
        (0, &g2),
        (1, &g2),
        (2, &*g3),
        (3, &*g3),
        (4, &*g4_tier),
        (5, &*g4_tier),
        (7, &*g4_tier),
    ];
    for (i, tier) in homes {
        put_block(tier, hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    let hashes: Vec<_> = (0..8).map(hash).collect();
    assert_eq!(store.locate_prefix(&hashes).tiers, [0, 0, 1, 1, 2, 2]);
    let onboarded = store.fetch_prefix_into_host(&hashes).unwrap();
    assert_eq!(onboarded.sources, [0, 0, 1, 1, 2, 2]);
    assert_eq!(onboarded.blocks.len(), 6);
    for i in 0..6 {
        assert!(
            kvtier_storage::tier::get_block(&g2, hash(i)).unwrap() == Some(block(i, 0, BLOCK)),
            "block {i} in G2"
        );
    }
    assert!(
        !g2.contains(hash(7)),
        "a block past the prefix's end was onboarded"
    );
    assert_eq!(
        g4.stats().hits,
        2,
        "G4 read other than the prefix's two blocks"
    );
}

/// `locate_prefix` probes each tier once for the whole list (G4 on Redis: one pipelined batch
/// of EXISTS, not one round trip per block), and a G4 outage in the middle of a probe (the
/// server dies as G4's turn comes, after G2 and G3 answered) shortens the prefix to what G2
/// and G3 hold: counted as a G4 error, no error for the caller. Back up, G4 counts again.
#[test]
fn locate_prefix_probes_each_tier_once_and_survives_a_g4_outage_mid_probe() {
    if skip_redis_tests() {
        return;
    }
    let server = Arc::new(std::sync::Mutex::new(RedisServer::start()));
    let url = server.lock().unwrap().url();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("three-tier-locate", "xxh3-v1/bs16", BLOCK).unwrap();
    let g4 = Arc::new(
        G4Store::builder(ns)
            .redis(url)
            .with_timeout(Duration::from_millis(200))
            .with_breaker(3, Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let g2 = host(64);
    let g3: Arc<dyn Storage> = disk(dir.path());
    let g4_tier = Counting::new(Arc::new(RemoteStorage::new(Arc::clone(&g4))));
    let store = TieredStore::builder()
        .host(g2.clone(), TierConfig::default())
        .tier(Arc::clone(&g3), TierConfig::default())
        .tier(
            Arc::clone(&g4_tier) as Arc<dyn Storage>,
            TierConfig::default().with_timeout(Duration::from_secs(2)),
        )
        .build();
    // 32 blocks: 0-3 in G2, 4-7 in G3, 8-29 in G4 only, 30 nowhere, 31 in G4.
    for i in 0..32u64 {
        let home: &dyn Storage = match i {
            0..=3 => &g2,
            4..=7 => &*g3,
            30 => continue,
            _ => &*g4_tier.inner,
        };
        put_block(home, hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    let hashes: Vec<_> = (0..32).map(hash).collect();
    let mut want = vec![0, 0, 0, 0, 1, 1, 1, 1];
    want.extend([2; 22]);
    assert_eq!(store.locate_prefix(&hashes).tiers, want);
    assert_eq!(
        g4_tier.probe_counts(),
        (0, 1),
        "G4 was probed block by block"
    );
    // The server dies just as G4's probe starts.
    let killer = Arc::clone(&server);
    *g4_tier.on_probe.lock().unwrap() = Some(Box::new(move || killer.lock().unwrap().kill()));
    let before = store.metrics().tiers[2].clone();
    let located = store.locate_prefix(&hashes);
    assert_eq!(
        located.tiers,
        [0, 0, 0, 0, 1, 1, 1, 1],
        "prefix with G4 down"
    );
    let during = store.metrics().tiers[2].clone();
    assert!(
        during.errors + during.timeouts > before.errors + before.timeouts,
        "G4's failed probe not counted: {during:?}"
    );
    assert_eq!(g4_tier.probe_counts(), (0, 2));
    // Back up (empty: the server persists nothing): G4 answers again once the breaker lets a
    // probe through; its blocks are gone, so the prefix is what G2 and G3 hold plus nothing.
    server.lock().unwrap().restart();
    assert!(
        eventually(100, || put_block(
            &*g4_tier.inner,
            hash(8),
            &block(8, 0, BLOCK)
        )
        .is_ok()),
        "G4 never took a write again"
    );
    assert!(
        eventually(100, || store.locate_prefix(&hashes).len() == 9),
        "G4 never probed again"
    );
}
