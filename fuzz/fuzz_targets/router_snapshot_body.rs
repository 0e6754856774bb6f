//! Router snapshot bodies behind a valid header and checksum, so the fuzzer reaches the body
//! decoder and `Router` restoration instead of stopping at the checksum (which random bytes
//! never pass; `router_snapshot` covers the framing itself).
//!
//! The first input byte picks the mode:
//! - even: the rest is the msgpack body itself (seeds are the bodies of real snapshots), framed
//!   as `snapshot.rs` frames it: magic, version 1, length, body, xxh3-64 of the body;
//! - odd: the rest drives [`Arbitrary`] into a structurally valid body (instances, event ids,
//!   policies, per-medium hash lists, colliding hashes and instances included), encoded the way
//!   the router encodes it, so restoring, querying and re-snapshotting get exercised on every
//!   run.
//!
//! Whatever loads must snapshot again, the new snapshot must be framed exactly as this target
//! frames (which pins the framing here to the real writer), reload, and snapshot to the same
//! bytes; the index's entry count must equal the blocks the instances hold.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, InstanceId, MediumBlocks};
use kvtier_router::{QueryScratch, Router, SnapshotError};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

/// Bytes before the body: magic, format version, body length.
const HEADER: usize = 20;

/// The snapshot file around `body`: the layout documented in `crates/kvtier-router/src/snapshot.rs`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len() + 8);
    out.extend_from_slice(b"KVTRSNAP");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
    out
}

/// The body as the router serialises it (`rmp_serde::to_vec_named`, same field names).
#[derive(Serialize)]
struct Body {
    instances: Vec<SnapInstance>,
}

#[derive(Serialize)]
struct SnapInstance {
    instance: InstanceId,
    next_event_id: u64,
    policy: EmitPolicy,
    blocks: Vec<MediumBlocks>,
}

/// A hash: mostly from a small space (so instances share blocks), sometimes any 128 bits.
#[derive(Arbitrary, Debug)]
enum ArbHash {
    Small { chained: u8, position: u8 },
    Raw(u128),
}

impl ArbHash {
    fn get(&self) -> SequenceHash {
        match *self {
            ArbHash::Small { chained, position } => {
                SequenceHash::new(u64::from(chained), 0, u32::from(position))
            }
            ArbHash::Raw(raw) => SequenceHash::from_u128(raw),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ArbInstance {
    /// Small ids collide, so duplicate instances in one body are exercised too.
    id: u8,
    next_event_id: u64,
    policy: u8,
    blocks: Vec<(u8, Vec<ArbHash>)>,
}

fn body_from(instances: &[ArbInstance]) -> Body {
    let policies = [EmitPolicy::All, EmitPolicy::PowerOfTwo, EmitPolicy::None];
    Body {
        instances: instances
            .iter()
            .map(|i| SnapInstance {
                instance: InstanceId(u128::from(i.id)),
                next_event_id: i.next_event_id,
                policy: policies[usize::from(i.policy) % policies.len()],
                blocks: i
                    .blocks
                    .iter()
                    .map(|(m, hashes)| MediumBlocks {
                        medium: Medium::ALL[usize::from(*m) % Medium::ALL.len()],
                        hashes: hashes.iter().map(ArbHash::get).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The checks every loaded router passes; `probes` are hashes worth querying.
fn check(router: &Router, probes: &[Vec<SequenceHash>]) {
    let bytes = router.snapshot_bytes().expect("a loaded router snapshots");
    assert!(
        bytes.len() >= HEADER + 8,
        "a snapshot holds a header and a checksum"
    );
    assert_eq!(
        frame(&bytes[HEADER..bytes.len() - 8]),
        bytes,
        "this target frames bodies as the router does"
    );
    let again = Router::from_snapshot_bytes(Router::builder(), &bytes).expect("round trip");
    assert_eq!(again.instances(), router.instances());
    assert_eq!(
        again.snapshot_bytes().expect("snapshots"),
        bytes,
        "snapshots are stable"
    );

    let stats = router.stats();
    let held: usize = router
        .instances()
        .iter()
        .map(|i| i.blocks.iter().sum::<usize>())
        .sum();
    assert_eq!(
        held as u64, stats.entries,
        "the index holds what the instances hold"
    );

    let mut scratch = QueryScratch::default();
    for hashes in probes {
        let answer = router.query(hashes, &mut scratch);
        if let Some(best) = answer.best {
            assert!(
                router.instances().iter().any(|i| i.instance == best),
                "best is known"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(router) = Router::from_snapshot_bytes(Router::builder(), &frame(rest)) {
            check(&router, &[]);
        }
        return;
    }
    let Ok(instances) = Vec::<ArbInstance>::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let body = body_from(&instances);
    let bytes = rmp_serde::to_vec_named(&body).expect("a body encodes");
    let router = match Router::from_snapshot_bytes(Router::builder(), &frame(&bytes)) {
        Ok(router) => router,
        Err(
            e @ (SnapshotError::BadMagic
            | SnapshotError::Version(_)
            | SnapshotError::Truncated { .. }
            | SnapshotError::Checksum),
        ) => panic!("a correctly framed body was refused by the framing checks: {e}"),
        // A structurally valid body may still be refused for its values (an event id the
        // router rejects); refusing is fine, panicking is not.
        Err(_) => return,
    };
    let mut ids: Vec<u8> = instances.iter().map(|i| i.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let loaded: Vec<u128> = router.instances().iter().map(|i| i.instance.0).collect();
    assert!(
        loaded.len() <= ids.len(),
        "no instance appears from nowhere"
    );
    assert!(
        loaded
            .iter()
            .all(|l| ids.iter().any(|&i| u128::from(i) == *l)),
        "every loaded instance was in the body"
    );
    let probes: Vec<Vec<SequenceHash>> = body
        .instances
        .iter()
        .flat_map(|i| i.blocks.iter().map(|b| b.hashes.clone()))
        .collect();
    check(&router, &probes);
});
