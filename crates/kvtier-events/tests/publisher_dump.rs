//! A consumer's repair must not stall the producer: while a router dumps a publisher holding a
//! large block set, the emitter keeps publishing, waiting at most for the set to be copied,
//! never for the copy to be sorted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventBatch, EventKind, InstanceId, Payload, Publisher, ReplaySource,
};

#[test]
fn publishing_waits_for_the_copy_of_a_dump_not_its_sort() {
    const BLOCKS: u64 = 1 << 18;
    let publisher = Publisher::new(InstanceId(1));
    publisher
        .publish(Payload::Batch(EventBatch {
            medium: Medium::Gpu,
            kind: EventKind::Create,
            hashes: (0..BLOCKS)
                .map(|i| SequenceHash::root(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect(),
            policy: EmitPolicy::All,
        }))
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let dumper = {
        let (publisher, done) = (publisher.clone(), done.clone());
        std::thread::spawn(move || {
            let mut fastest = Duration::MAX;
            for _ in 0..3 {
                let start = Instant::now();
                let dump = publisher.dump().unwrap();
                fastest = fastest.min(start.elapsed());
                let hashes = &dump.blocks[0].hashes;
                assert_eq!(hashes.len() as u64, BLOCKS);
                assert!(hashes.windows(2).all(|w| w[0].as_u128() < w[1].as_u128()));
            }
            done.store(true, Ordering::SeqCst);
            fastest
        })
    };
    let mut slowest = Duration::ZERO;
    let mut published = 0u64;
    while !done.load(Ordering::SeqCst) {
        let start = Instant::now();
        publisher.publish(Payload::Heartbeat).unwrap();
        slowest = slowest.max(start.elapsed());
        published += 1;
    }
    let fastest_dump = dumper.join().unwrap();
    assert!(published > 0);
    // A publish that arrives while the set is being copied waits for the copy; if it waited
    // for the sort as well it would take about as long as a whole dump.
    assert!(
        slowest < fastest_dump / 3,
        "a publish waited {slowest:?}; a whole dump takes {fastest_dump:?}"
    );
}
