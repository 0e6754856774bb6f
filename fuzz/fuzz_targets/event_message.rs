//! Event messages and dumps from untrusted bytes, in both encodings: decoding never panics,
//! and whatever decodes re-encodes to something that decodes to the same value.
#![no_main]

use kvtier_events::{Dump, EventMessage, WireFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [WireFormat::Json, WireFormat::Msgpack] {
        if let Ok(msg) = EventMessage::decode(data, format) {
            let again = msg.encode(format).expect("a decoded message encodes");
            assert_eq!(
                EventMessage::decode(&again, format).expect("round trip"),
                msg
            );
        }
        if let Ok(dump) = Dump::decode(data, format) {
            let again = dump.encode(format).expect("a decoded dump encodes");
            assert_eq!(Dump::decode(&again, format).expect("round trip"), dump);
        }
    }
});
