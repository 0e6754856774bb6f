//! vLLM/SGLang KV-event payloads from untrusted bytes: decoding never panics, and converting
//! what decodes into kvtier messages never panics either.
#![no_main]

use kvtier_events::InstanceId;
use kvtier_router::{VllmConvertConfig, VllmConverter, decode_vllm_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_vllm_batch(data) {
        let mut conv = VllmConverter::new(InstanceId(1), VllmConvertConfig::default());
        let mut out = Vec::new();
        conv.apply_batch(&batch, &mut out);
        for (i, m) in out.iter().enumerate() {
            assert_eq!(m.event_id, i as u64 + 1, "event ids stay contiguous");
        }
    }
});
