//! vLLM/SGLang KV-event payloads from untrusted bytes, along the real path: decoding never
//! panics, converting what decodes into kvtier messages never panics and keeps event ids
//! contiguous, and a router applying those messages stays consistent (its index holds exactly
//! what its instances hold) and answers queries for the hashes it was told about.
#![no_main]

use kvtier_events::{InstanceId, Payload};
use kvtier_router::{QueryScratch, Router, VllmConvertConfig, VllmConverter, decode_vllm_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_vllm_batch(data) {
        let mut conv = VllmConverter::new(InstanceId(1), VllmConvertConfig::default());
        let mut out = Vec::new();
        conv.apply_batch(&batch, &mut out);
        for (i, m) in out.iter().enumerate() {
            assert_eq!(m.event_id, i as u64 + 1, "event ids stay contiguous");
        }

        let mut router = Router::builder().build();
        let mut probes = Vec::new();
        for msg in out {
            if let Payload::Batch(b) = &msg.payload {
                probes.extend(b.hashes.iter().copied().take(8));
            }
            router.apply(msg);
        }
        let held: usize = router
            .instances()
            .iter()
            .map(|i| i.blocks.iter().sum::<usize>())
            .sum();
        assert_eq!(
            held as u64,
            router.stats().entries,
            "the index holds what the instances hold"
        );
        let answer = router.query(&probes, &mut QueryScratch::default());
        if let Some(best) = answer.best {
            assert_eq!(
                best,
                InstanceId(1),
                "only the engine's instance holds blocks"
            );
        }
    }
});
