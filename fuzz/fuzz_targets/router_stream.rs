//! Arbitrary sequences of msgpack event messages (any instance, any id, any payload) applied to
//! one router: nothing panics, and the counters stay consistent with the index.
#![no_main]

use kvtier_events::{EventMessage, WireFormat};
use kvtier_router::{QueryScratch, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut router = Router::builder().with_max_early(8).build();
    let mut probes = Vec::new();
    // Frames: a length byte, then that many bytes of msgpack.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        if let Ok(msg) = EventMessage::decode(frame, WireFormat::Msgpack) {
            if let kvtier_events::Payload::Batch(b) = &msg.payload {
                probes.extend(b.hashes.iter().copied().take(4));
            }
            router.apply(msg);
        }
    }
    let stats = router.stats();
    let held: usize = router
        .instances()
        .iter()
        .map(|i| i.blocks.iter().sum::<usize>())
        .sum();
    assert_eq!(held as u64, stats.entries);
    let _ = router.query(&probes, &mut QueryScratch::default());
});
