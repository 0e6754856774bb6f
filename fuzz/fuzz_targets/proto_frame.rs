//! Binary protocol frames from untrusted bytes: decoding as a request and as a response never
//! panics, whatever decodes re-encodes to exactly the same bytes (the encoding is canonical),
//! and a `FrameReader` fed the bytes in two pieces yields the same frames as one fed them
//! whole.
#![no_main]

use kvtier_proto::{FrameReader, Limits, WriteBuf, decode_request, decode_response};
use libfuzzer_sys::fuzz_target;

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 16,
    max_blocks_per_request: 64,
    max_namespace_len: 32,
    max_token_len: 32,
    max_text_len: 64,
    max_stats_entries: 16,
};

fn check_frame(frame: &[u8]) {
    if let Ok((header, request)) = decode_request(frame, &LIMITS) {
        let mut out = WriteBuf::new();
        request
            .encode(header.request_id, &LIMITS, &mut out)
            .expect("a decoded request re-encodes");
        assert_eq!(out.to_vec(), frame, "request re-encodes differently");
    }
    if let Ok((header, response)) = decode_response(frame, &LIMITS) {
        let mut out = WriteBuf::new();
        response
            .encode(header.request_id, &LIMITS, &mut out)
            .expect("a decoded response re-encodes");
        assert_eq!(out.to_vec(), frame, "response re-encodes differently");
    }
}

/// Frames (or the error) a reader yields from `pieces`.
fn read_all(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<kvtier_proto::ProtoError>) {
    let mut reader = FrameReader::new(LIMITS);
    let mut frames = Vec::new();
    for piece in pieces {
        reader.extend_from_slice(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    let _ = f.request(&LIMITS);
                    let _ = f.response(&LIMITS);
                    let mut whole = Vec::with_capacity(f.header.len as usize);
                    let mut h = [0u8; kvtier_proto::HEADER_LEN];
                    f.header.write(&mut h, f.header.len);
                    whole.extend_from_slice(&h);
                    whole.extend_from_slice(f.payload);
                    frames.push(whole);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    let (frames, err) = read_all(&[data]);
    let mut offset = 0;
    for f in &frames {
        assert_eq!(
            &data[offset..offset + f.len()],
            &f[..],
            "a frame is its bytes"
        );
        check_frame(f);
        offset += f.len();
    }
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (frames2, err2) = read_all(&[&data[..split], &data[split..]]);
    assert_eq!(frames, frames2);
    assert_eq!(err.is_some(), err2.is_some());
});
