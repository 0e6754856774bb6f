//! Every kind of bad frame gets its own specific error, never a panic: truncated, oversized,
//! unknown opcode, wrong version, unknown flags, counts that overrun, trailing bytes, invalid
//! values; and arbitrary or mutated bytes either fail cleanly or decode to something that
//! re-encodes to the same bytes.

use kvtier_core::SequenceHash;
use kvtier_proto::{
    ErrorCode, FrameHeader, FrameReader, HashList, Hello, Limits, Opcode, ProtoError, PutBlocks,
    Request, Response, TierId, TierSet, WriteBuf, decode_request, decode_response, frame_len,
};
use proptest::prelude::*;

fn encode_req(req: &Request<'_>) -> Vec<u8> {
    let mut out = WriteBuf::new();
    req.encode(5, &Limits::default(), &mut out).unwrap();
    out.to_vec()
}

fn encode_resp(resp: &Response<'_>) -> Vec<u8> {
    let mut out = WriteBuf::new();
    resp.encode(5, &Limits::default(), &mut out).unwrap();
    out.to_vec()
}

/// A frame with the given opcode byte, flags and payload (length computed).
fn raw(opcode: u8, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((16 + payload.len()) as u32).to_le_bytes().to_vec();
    v.push(1);
    v.push(opcode);
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&9u64.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn req_err(frame: &[u8]) -> ProtoError {
    decode_request(frame, &Limits::default()).expect_err("must fail")
}

fn resp_err(frame: &[u8]) -> ProtoError {
    decode_response(frame, &Limits::default()).expect_err("must fail")
}

fn three_hashes() -> Vec<u8> {
    let hs = [
        SequenceHash::root(1),
        SequenceHash::root(2),
        SequenceHash::root(3),
    ];
    encode_req(&Request::Get(HashList::new(&hs)))
}

#[test]
fn truncated_header_and_frame() {
    let frame = three_hashes();
    assert_eq!(FrameHeader::parse(&frame[..15]), Ok(None));
    assert_eq!(frame_len(&frame[..3], 1 << 20), Ok(None));
    assert!(matches!(
        req_err(&frame[..15]),
        ProtoError::Truncated {
            what: "frame header",
            needed: 16,
            available: 15
        }
    ));
    assert_eq!(
        req_err(&frame[..frame.len() - 1]),
        ProtoError::Truncated {
            what: "frame",
            needed: frame.len() - 16,
            available: frame.len() - 17
        }
    );
    // Bytes after the frame's declared length.
    let mut longer = frame.clone();
    longer.push(0);
    assert_eq!(req_err(&longer), ProtoError::TrailingBytes { count: 1 });
}

#[test]
fn length_below_header_or_above_limit() {
    let mut frame = three_hashes();
    frame[..4].copy_from_slice(&15u32.to_le_bytes());
    assert_eq!(req_err(&frame), ProtoError::FrameTooShort { len: 15 });
    assert_eq!(
        FrameHeader::parse(&frame),
        Err(ProtoError::FrameTooShort { len: 15 })
    );

    frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let limits = Limits::default();
    let too_large = ProtoError::FrameTooLarge {
        len: u64::from(u32::MAX),
        max: limits.max_frame_bytes,
    };
    assert_eq!(req_err(&frame), too_large);
    assert_eq!(
        frame_len(&frame, limits.max_frame_bytes),
        Err(too_large.clone())
    );
    // A reader refuses it from the header alone, before buffering a byte of the payload...
    let mut reader = FrameReader::new(limits);
    reader.extend_from_slice(&frame[..16]);
    assert_eq!(reader.next_frame(), Err(too_large.clone()));
    // ...and so does read_from, without growing its buffer.
    let mut src: &[u8] = &[0u8; 100];
    let err = reader.read_from(&mut src).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(reader.buffered(), 16);
    assert_eq!(too_large.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn wrong_version() {
    for version in [0u8, 2, 0xFF] {
        let mut frame = three_hashes();
        frame[4] = version;
        assert_eq!(req_err(&frame), ProtoError::UnsupportedVersion { version });
    }
}

#[test]
fn unknown_or_misdirected_opcode() {
    for opcode in [0x00u8, 0x0B, 0x42, 0x7F, 0x80, 0x8B, 0xFE] {
        let frame = raw(opcode, 0, &[]);
        assert_eq!(req_err(&frame), ProtoError::UnknownOpcode { opcode });
        assert_eq!(
            ProtoError::UnknownOpcode { opcode }.code(),
            ErrorCode::UnknownOpcode
        );
    }
    // A response where a request is expected, and the other way round.
    assert_eq!(
        req_err(&raw(0x87, 0, &[0; 4])),
        ProtoError::UnknownOpcode { opcode: 0x87 }
    );
    assert_eq!(
        req_err(&raw(0xFF, 0, &[])),
        ProtoError::UnknownOpcode { opcode: 0xFF }
    );
    assert_eq!(
        resp_err(&raw(0x07, 0, &[])),
        ProtoError::UnknownOpcode { opcode: 0x07 }
    );
}

#[test]
fn unknown_flags() {
    let mut frame = three_hashes();
    frame[6] = 1;
    assert_eq!(
        req_err(&frame),
        ProtoError::UnknownFlags {
            opcode: 0x03,
            flags: 1
        }
    );
    // PUT defines bit 0 only; HELLO defines bit 0 only; responses but ERROR define none.
    assert_eq!(
        req_err(&raw(0x02, 2, &[0; 4])),
        ProtoError::UnknownFlags {
            opcode: 0x02,
            flags: 2
        }
    );
    assert_eq!(
        req_err(&raw(0x01, 0x8000, &[])),
        ProtoError::UnknownFlags {
            opcode: 0x01,
            flags: 0x8000
        }
    );
    assert_eq!(
        resp_err(&raw(0x82, 1, &[0; 4])),
        ProtoError::UnknownFlags {
            opcode: 0x82,
            flags: 1
        }
    );
    assert!(decode_response(&raw(0xFF, 1, &[1, 0, 0, 0]), &Limits::default()).is_ok());
}

#[test]
fn counts_that_overrun_or_exceed_the_limit() {
    let mut frame = three_hashes();
    frame[16..20].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        req_err(&frame),
        ProtoError::CountOverrun {
            what: "hash",
            count: 1000,
            needed: 16_000,
            available: 48
        }
    );
    frame[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        req_err(&frame),
        ProtoError::TooManyBlocks {
            count: u64::from(u32::MAX),
            max: Limits::default().max_blocks_per_request
        }
    );
    // A PUT announcing more index entries than the frame holds.
    let mut payload = 10u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&[0u8; 20]);
    assert!(matches!(
        req_err(&raw(0x02, 0, &payload)),
        ProtoError::CountOverrun {
            what: "put block",
            count: 10,
            ..
        }
    ));
    // A STATS reply announcing more counters than it holds (checked before allocating).
    let payload = 1000u32.to_le_bytes();
    assert!(matches!(
        resp_err(&raw(0x87, 0, &payload)),
        ProtoError::CountOverrun { what: "stat", .. }
    ));
    // Fewer hashes than bytes: 3 hashes announced as 2 leave 16 trailing bytes.
    let mut frame = three_hashes();
    frame[16..20].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(req_err(&frame), ProtoError::TrailingBytes { count: 16 });
}

#[test]
fn trailing_bytes_inside_the_payload() {
    assert_eq!(
        req_err(&raw(0x07, 0, &[0])),
        ProtoError::TrailingBytes { count: 1 }
    );
    let mut payload = 0u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        req_err(&raw(0x08, 0, &payload)),
        ProtoError::TrailingBytes { count: 2 }
    );
    assert_eq!(
        resp_err(&raw(0x89, 0, &[1, 1])),
        ProtoError::TrailingBytes { count: 1 }
    );
}

#[test]
fn truncated_fields() {
    // HELLO with the token flag but no token.
    let mut payload = 1u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&2u16.to_le_bytes());
    payload.extend_from_slice(b"ns");
    assert!(matches!(
        req_err(&raw(0x01, 1, &payload)),
        ProtoError::Truncated {
            what: "auth token",
            ..
        }
    ));
    // SUBSCRIBE cut inside its u64.
    assert!(matches!(
        req_err(&raw(0x08, 0, &[1, 2, 3])),
        ProtoError::Truncated {
            what: "subscribe from_event_id",
            needed: 8,
            available: 3
        }
    ));
    assert!(matches!(
        req_err(&raw(0x03, 0, &[1])),
        ProtoError::Truncated {
            what: "hash",
            needed: 4,
            available: 1
        }
    ));
}

#[test]
fn put_lengths_must_match_the_data() {
    let hs = [SequenceHash::root(1), SequenceHash::root(2)];
    let (a, b) = (vec![1u8; 100], vec![2u8; 50]);
    let blocks = [a.as_slice(), b.as_slice()];
    let mut frame = encode_req(&Request::Put {
        durable: false,
        blocks: PutBlocks::new(&hs, &blocks).unwrap(),
    });
    // Declare 101 bytes for the first block.
    frame[16 + 4 + 16..16 + 4 + 20].copy_from_slice(&101u32.to_le_bytes());
    assert_eq!(
        req_err(&frame),
        ProtoError::LengthMismatch {
            what: "put block lengths against the data section",
            declared: 151,
            actual: 150
        }
    );
    assert!(matches!(
        PutBlocks::new(&hs, &blocks[..1]),
        Err(ProtoError::LengthMismatch { .. })
    ));
}

#[test]
fn fields_over_limits_and_bad_text() {
    let long = "n".repeat(300);
    let mut out = WriteBuf::new();
    let hello = Request::Hello(Hello {
        version: 1,
        namespace: &long,
        token: None,
    });
    // The encoder refuses what the receiver would, and leaves the buffer untouched.
    assert_eq!(
        hello.encode(1, &Limits::default(), &mut out),
        Err(ProtoError::FieldTooLong {
            what: "namespace",
            len: 300,
            max: 255
        })
    );
    assert!(out.is_empty());
    let relaxed = Limits {
        max_namespace_len: 1000,
        ..Limits::default()
    };
    hello.encode(1, &relaxed, &mut out).unwrap();
    let frame = out.to_vec();
    assert_eq!(
        req_err(&frame),
        ProtoError::FieldTooLong {
            what: "namespace",
            len: 300,
            max: 255
        }
    );
    assert_eq!(req_err(&frame).code(), ErrorCode::LimitExceeded);

    let mut payload = 1u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&2u16.to_le_bytes());
    payload.extend_from_slice(&[0xC3, 0x28]);
    assert_eq!(
        req_err(&raw(0x01, 0, &payload)),
        ProtoError::InvalidUtf8 { what: "namespace" }
    );
}

#[test]
fn encoder_limits_leave_the_buffer_unchanged() {
    let limits = Limits {
        max_blocks_per_request: 2,
        max_frame_bytes: 1000,
        ..Limits::default()
    };
    let hs = [SequenceHash::root(1); 3];
    let mut out = WriteBuf::new();
    Request::Stats.encode(1, &limits, &mut out).unwrap();
    let before = out.to_vec();
    assert_eq!(
        Request::Match(HashList::new(&hs)).encode(2, &limits, &mut out),
        Err(ProtoError::TooManyBlocks { count: 3, max: 2 })
    );
    let big = vec![0u8; 2000];
    let blocks = [big.as_slice()];
    assert_eq!(
        Request::Put {
            durable: false,
            blocks: PutBlocks::new(&hs[..1], &blocks).unwrap()
        }
        .encode(3, &limits, &mut out),
        Err(ProtoError::FrameTooLarge {
            len: 16 + 4 + 20 + 2000,
            max: 1000
        })
    );
    assert_eq!(out.to_vec(), before);
    // The reply side refuses an empty tier set inside a MATCH prefix.
    assert!(matches!(
        Response::Match(vec![TierSet::EMPTY]).encode(1, &limits, &mut out),
        Err(ProtoError::InvalidValue { .. })
    ));
    assert_eq!(out.to_vec(), before);
}

#[test]
fn invalid_values_in_replies() {
    let mut put = 1u32.to_le_bytes().to_vec();
    put.push(9);
    assert_eq!(
        resp_err(&raw(0x82, 0, &put)),
        ProtoError::InvalidValue {
            what: "put status",
            value: 9
        }
    );

    let mut exists = 1u32.to_le_bytes().to_vec();
    exists.push(0x10);
    assert_eq!(
        resp_err(&raw(0x85, 0, &exists)),
        ProtoError::InvalidValue {
            what: "tier set",
            value: 0x10
        }
    );
    let mut matched = 1u32.to_le_bytes().to_vec();
    matched.push(0);
    assert_eq!(
        resp_err(&raw(0x84, 0, &matched)),
        ProtoError::InvalidValue {
            what: "tier set",
            value: 0
        }
    );

    let mut get = 1u32.to_le_bytes().to_vec();
    get.push(7);
    get.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        resp_err(&raw(0x83, 0, &get)),
        ProtoError::InvalidValue {
            what: "get entry tier",
            value: 7
        }
    );
    let mut get = 1u32.to_le_bytes().to_vec();
    get.push(0);
    get.extend_from_slice(&4u32.to_le_bytes());
    get.extend_from_slice(&[0; 4]);
    assert_eq!(
        resp_err(&raw(0x83, 0, &get)),
        ProtoError::InvalidValue {
            what: "length of a missing get entry",
            value: 4
        }
    );
    let mut get = 1u32.to_le_bytes().to_vec();
    get.push(TierId::G2.to_u8());
    get.extend_from_slice(&4u32.to_le_bytes());
    get.extend_from_slice(&[0; 3]);
    assert!(matches!(
        resp_err(&raw(0x83, 0, &get)),
        ProtoError::LengthMismatch {
            declared: 4,
            actual: 3,
            ..
        }
    ));

    assert_eq!(
        resp_err(&raw(0x88, 0, &[9])),
        ProtoError::InvalidValue {
            what: "subscribe kind",
            value: 9
        }
    );
    assert_eq!(
        resp_err(&raw(0x88, 0, &[1, 5])),
        ProtoError::InvalidValue {
            what: "event format",
            value: 5
        }
    );
    assert_eq!(
        resp_err(&raw(0x88, 0, &[3, 3])),
        ProtoError::InvalidValue {
            what: "subscription end reason",
            value: 3
        }
    );
    assert_eq!(
        resp_err(&raw(0x89, 0, &[2])),
        ProtoError::InvalidValue {
            what: "unsubscribe found",
            value: 2
        }
    );
    let mut sub = 0u64.to_le_bytes().to_vec();
    sub.push(2);
    assert_eq!(
        req_err(&raw(0x08, 0, &sub)),
        ProtoError::InvalidValue {
            what: "event format",
            value: 2
        }
    );
}

#[test]
fn header_opcode_table_is_consistent() {
    for op in Opcode::REQUESTS {
        assert_eq!(Opcode::from_byte(op.request_byte()), Some((op, false)));
        assert_eq!(Opcode::from_byte(op.response_byte()), Some((op, true)));
        assert!((1..=0x7F).contains(&op.request_byte()));
    }
    assert_eq!(Opcode::from_byte(0xFF), Some((Opcode::Error, true)));
}

fn canonical_or_error(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok((h, req)) = decode_request(bytes, &limits) {
        let mut out = WriteBuf::new();
        req.encode(h.request_id, &limits, &mut out)
            .expect("a decoded request re-encodes");
        assert_eq!(out.to_vec(), bytes);
    }
    if let Ok((h, resp)) = decode_response(bytes, &limits) {
        let mut out = WriteBuf::new();
        resp.encode(h.request_id, &limits, &mut out)
            .expect("a decoded response re-encodes");
        assert_eq!(out.to_vec(), bytes);
    }
    let mut reader = FrameReader::new(limits);
    reader.extend_from_slice(bytes);
    while let Ok(Some(f)) = reader.next_frame() {
        let _ = f.request(&limits);
        let _ = f.response(&limits);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        canonical_or_error(&bytes);
    }

    /// Valid frames with a few bytes changed: the header is usually intact, so this reaches
    /// the payload decoders far more often than random bytes do.
    #[test]
    fn mutated_frames_fail_cleanly_or_stay_canonical(
        which in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let hs = [SequenceHash::root(1), SequenceHash::root(2)];
        let (a, b) = (vec![1u8; 10], vec![2u8; 3]);
        let blocks = [a.as_slice(), b.as_slice()];
        let mut frame = match which {
            0 => encode_req(&Request::Put { durable: true, blocks: PutBlocks::new(&hs, &blocks).unwrap() }),
            1 => encode_req(&Request::Hello(Hello { version: 1, namespace: "tenant", token: Some(b"tok") })),
            2 => encode_req(&Request::Match(HashList::new(&hs))),
            3 => encode_resp(&Response::Exists(vec![TierSet::EMPTY.with(TierId::G3); 3])),
            4 => encode_resp(&Response::Stats(vec![kvtier_proto::Stat { name: "hits", value: 3 }])),
            _ => {
                let results = [kvtier_proto::BlockResult::Found { tier: TierId::G2, bytes: &a }, kvtier_proto::BlockResult::Missing];
                encode_resp(&Response::Get(kvtier_proto::GetBlocks::new(&results)))
            }
        };
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        canonical_or_error(&frame);
    }
}

/// A source whose first read is cut short by a signal, as a socket read can be.
struct InterruptedOnce<'a> {
    interrupted: bool,
    bytes: &'a [u8],
}

impl std::io::Read for InterruptedOnce<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.interrupted {
            self.interrupted = true;
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        self.bytes.read(buf)
    }
}

#[test]
fn read_from_retries_a_read_interrupted_by_a_signal() {
    let frame = three_hashes();
    let mut reader = FrameReader::new(Limits::default());
    let mut src = InterruptedOnce {
        interrupted: false,
        bytes: &frame,
    };
    let n = reader.read_from(&mut src).unwrap();
    assert_eq!(n, frame.len());
    assert!(src.interrupted);
    assert!(reader.next_frame().unwrap().is_some());
}
