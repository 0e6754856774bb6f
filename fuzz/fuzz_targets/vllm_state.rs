//! A vLLM source's saved state (`<snapshot>.sources` entries) from untrusted bytes: decoding
//! never panics, and a decoded state encodes to bytes that decode to the same state.
#![no_main]

use kvtier_router::VllmSourceState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = VllmSourceState::from_bytes(data) {
        let again = VllmSourceState::from_bytes(&state.to_bytes()).expect("round trip");
        assert_eq!(again, state);
    }
});
