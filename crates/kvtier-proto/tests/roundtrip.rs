//! Property tests: every request and response encodes to one frame that decodes back to an
//! equal value (through `decode_request`/`decode_response` and through a `FrameReader` fed in
//! random pieces), and block bytes are borrowed, never copied, on both sides.

use kvtier_core::SequenceHash;
use kvtier_events::{InstanceId, WireFormat};
use kvtier_proto::{
    BlockResult, EndReason, ErrorCode, ErrorFrame, FrameReader, GetBlocks, HashList, Hello, Limits,
    PutBlocks, PutStatus, Request, Response, ServerInfo, Stat, Subscribe, SubscribeEvent, TierId,
    TierSet, WriteBuf, decode_request, decode_response,
};
use proptest::prelude::*;

fn hashes(max: usize) -> impl Strategy<Value = Vec<SequenceHash>> {
    prop::collection::vec(any::<u128>().prop_map(SequenceHash::from_u128), 0..max)
}

fn blocks(max: usize) -> impl Strategy<Value = Vec<(SequenceHash, Vec<u8>)>> {
    prop::collection::vec(
        (
            any::<u128>().prop_map(SequenceHash::from_u128),
            prop::collection::vec(any::<u8>(), 0..300),
        ),
        0..max,
    )
}

fn tier() -> impl Strategy<Value = TierId> {
    prop::sample::select(TierId::ALL.to_vec())
}

fn tier_set() -> impl Strategy<Value = TierSet> {
    (0u8..16).prop_map(|b| TierSet::from_bits(b).expect("4 bits"))
}

fn format() -> impl Strategy<Value = WireFormat> {
    prop::sample::select(vec![WireFormat::Json, WireFormat::Msgpack])
}

/// Encodes, decodes whole, and decodes through a FrameReader fed in `cuts` pieces.
fn check_request(req: &Request<'_>, id: u64, cuts: &[usize]) {
    let limits = Limits::default();
    let mut out = WriteBuf::new();
    req.encode(id, &limits, &mut out).expect("encodes");
    let wire = out.to_vec();
    assert_eq!(wire.len(), out.len());
    let (header, decoded) = decode_request(&wire, &limits).expect("decodes");
    assert_eq!(header.request_id, id);
    assert_eq!(header.len as usize, wire.len());
    assert_eq!(header.opcode, req.opcode());
    assert!(!header.response);
    assert_eq!(&decoded, req);

    let mut reader = FrameReader::new(limits);
    let mut got = None;
    let mut prev = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        let cut = cut.min(wire.len()).max(prev);
        reader.extend_from_slice(&wire[prev..cut]);
        prev = cut;
        if let Some(frame) = reader.next_frame().expect("valid") {
            assert_eq!(cut, wire.len(), "a frame came out before all its bytes");
            got = Some(frame.request(&limits).expect("decodes").opcode());
        }
    }
    assert_eq!(got, Some(req.opcode()));
    assert_eq!(reader.buffered(), 0);
}

fn check_response(resp: &Response<'_>, id: u64) {
    let limits = Limits::default();
    let mut out = WriteBuf::new();
    resp.encode(id, &limits, &mut out).expect("encodes");
    let wire = out.to_vec();
    let (header, decoded) = decode_response(&wire, &limits).expect("decodes");
    assert_eq!(header.request_id, id);
    assert_eq!(header.len as usize, wire.len());
    assert!(header.response);
    assert_eq!(&decoded, resp);
}

proptest! {
    #[test]
    fn hello(version: u16, ns in "[a-z0-9/_-]{0,64}", token in prop::option::of(prop::collection::vec(any::<u8>(), 0..100)), id: u64) {
        let req = Request::Hello(Hello { version, namespace: &ns, token: token.as_deref() });
        check_request(&req, id, &[3, 17]);
    }

    #[test]
    fn put(blocks in blocks(40), durable: bool, id: u64, cuts in prop::collection::vec(0usize..20_000, 0..6)) {
        let (hs, data): (Vec<_>, Vec<_>) = blocks.into_iter().unzip();
        let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let req = Request::Put { durable, blocks: PutBlocks::new(&hs, &slices).unwrap() };
        check_request(&req, id, &cuts);
    }

    #[test]
    fn hash_lists(hs in hashes(100), op in 0u8..4, id: u64) {
        let list = HashList::new(&hs);
        let req = match op {
            0 => Request::Get(list),
            1 => Request::Match(list),
            2 => Request::Exists(list),
            _ => Request::Delete(list),
        };
        check_request(&req, id, &[20]);
    }

    #[test]
    fn small_requests(from: u64, format in format(), sub: u64, ping in prop::collection::vec(any::<u8>(), 0..200), id: u64) {
        check_request(&Request::Stats, id, &[]);
        check_request(&Request::Subscribe(Subscribe { from_event_id: from, format }), id, &[9]);
        check_request(&Request::Unsubscribe { subscription: sub }, id, &[]);
        check_request(&Request::Ping(&ping), id, &[1, 16, 30]);
    }

    #[test]
    fn get_reply(entries in prop::collection::vec(prop::option::of((tier(), prop::collection::vec(any::<u8>(), 0..300))), 0..40), id: u64) {
        let results: Vec<BlockResult<'_>> = entries.iter().map(|e| match e {
            None => BlockResult::Missing,
            Some((tier, bytes)) => BlockResult::Found { tier: *tier, bytes },
        }).collect();
        check_response(&Response::Get(GetBlocks::new(&results)), id);
    }

    #[test]
    fn list_replies(statuses in prop::collection::vec(0u8..4, 0..50), sets in prop::collection::vec(tier_set(), 0..50), found in prop::collection::vec(any::<bool>(), 0..50), id: u64) {
        let statuses = statuses.into_iter().map(|s| PutStatus::from_u8(s).unwrap()).collect();
        check_response(&Response::Put(statuses), id);
        check_response(&Response::Exists(sets.clone()), id);
        let prefix: Vec<TierSet> = sets.into_iter().filter(|s| !s.is_empty()).collect();
        check_response(&Response::Match(prefix), id);
        check_response(&Response::Delete(found), id);
    }

    #[test]
    fn other_replies(
        version: u16, block_bytes: u32, frame: u32, max_blocks: u32, instance: u128,
        server in "[ -~]{0,40}",
        stats in prop::collection::vec(("[a-z_]{1,30}", any::<u64>()), 0..20),
        body in prop::collection::vec(any::<u8>(), 0..200),
        format in format(), last: u64, code: u16, fatal: bool, msg in "\\PC{0,60}", id: u64,
    ) {
        check_response(&Response::Hello(ServerInfo {
            version, block_bytes, max_frame_bytes: frame, max_blocks_per_request: max_blocks,
            instance: InstanceId(instance), server: &server,
        }), id);
        let stats: Vec<Stat<'_>> = stats.iter().map(|(n, v)| Stat { name: n, value: *v }).collect();
        check_response(&Response::Stats(stats), id);
        for ev in [
            SubscribeEvent::Started { instance: InstanceId(instance), last_event_id: last },
            SubscribeEvent::Event { format, body: &body },
            SubscribeEvent::Dump { format, body: &body },
            SubscribeEvent::Ended(EndReason::Unsubscribed),
            SubscribeEvent::Ended(EndReason::PublisherShutdown),
            SubscribeEvent::Ended(EndReason::ServerClosing),
        ] {
            check_response(&Response::Subscribe(ev), id);
        }
        check_response(&Response::Unsubscribe { found: fatal }, id);
        check_response(&Response::Pong(&body), id);
        check_response(&Response::Error(ErrorFrame { code: ErrorCode::from_u16(code), fatal, message: &msg }), id);
    }
}

#[test]
fn block_bytes_are_borrowed_not_copied() {
    let hashes = [SequenceHash::root(1), SequenceHash::root(2)];
    let (a, b) = (vec![1u8; 1 << 20], vec![2u8; 1 << 20]);
    let blocks = [a.as_slice(), b.as_slice()];
    let mut out = WriteBuf::new();
    Request::Put {
        durable: true,
        blocks: PutBlocks::new(&hashes, &blocks).unwrap(),
    }
    .encode(1, &Limits::default(), &mut out)
    .unwrap();
    // One metadata segment (header + count + index) and the two blocks, by address.
    let segs: Vec<&[u8]> = out.segments().collect();
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0].len(), 16 + 4 + 2 * 20);
    assert!(std::ptr::eq(segs[1], a.as_slice()));
    assert!(std::ptr::eq(segs[2], b.as_slice()));

    // Decoding borrows from the frame: the block slices point into it.
    let wire = out.to_vec();
    let (_, req) = decode_request(&wire, &Limits::default()).unwrap();
    let Request::Put { durable, blocks } = req else {
        panic!("not a put")
    };
    assert!(durable);
    let range = wire.as_ptr_range();
    for (i, (hash, bytes)) in blocks.iter().enumerate() {
        assert_eq!(hash, hashes[i]);
        assert!(range.contains(&bytes.as_ptr()));
        assert_eq!(bytes, blocks_ref(i, &a, &b));
    }
}

fn blocks_ref<'a>(i: usize, a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    if i == 0 { a } else { b }
}

#[test]
fn views_answer_out_of_range_queries_with_none() {
    let hs = [SequenceHash::root(1)];
    let mut out = WriteBuf::new();
    Request::Get(HashList::new(&hs))
        .encode(1, &Limits::default(), &mut out)
        .unwrap();
    let wire = out.to_vec();
    let (_, Request::Get(list)) = decode_request(&wire, &Limits::default()).unwrap() else {
        panic!()
    };
    assert_eq!(list.get(0), Some(hs[0]));
    assert_eq!(list.get(1), None);
    assert_eq!(list.get(usize::MAX), None);
    assert_eq!(HashList::new(&hs).get(usize::MAX), None);
}

#[test]
fn pipelined_frames_share_one_buffer_and_resume_after_partial_writes() {
    let limits = Limits::default();
    let block = vec![7u8; 10_000];
    let results = [BlockResult::Found {
        tier: TierId::G3,
        bytes: &block,
    }];
    let mut out = WriteBuf::new();
    Response::Match(vec![TierSet::EMPTY.with(TierId::G2)])
        .encode(1, &limits, &mut out)
        .unwrap();
    Response::Get(GetBlocks::new(&results))
        .encode(2, &limits, &mut out)
        .unwrap();
    Response::Pong(b"x").encode(3, &limits, &mut out).unwrap();
    let wire = out.to_vec();
    // Resuming after any partial write yields exactly the rest of the bytes.
    for skip in [0, 1, 21, 22, 50, 5_000, wire.len() - 1, wire.len()] {
        let mut iov = Vec::new();
        out.io_slices(skip, &mut iov);
        let rest: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(rest, wire[skip..]);
    }
    let mut reader = FrameReader::new(limits);
    reader.extend_from_slice(&wire);
    let mut ids = vec![];
    while let Some(f) = reader.next_frame().unwrap() {
        f.response(&limits).unwrap();
        ids.push(f.header.request_id);
    }
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn reader_reads_from_a_stream_in_small_pieces() {
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let limits = Limits::default();
    let hs = [SequenceHash::root(9); 3];
    let mut out = WriteBuf::new();
    for id in 0..5 {
        Request::Exists(HashList::new(&hs))
            .encode(id, &limits, &mut out)
            .unwrap();
    }
    let wire = out.to_vec();
    let mut src = Trickle(&wire);
    let mut reader = FrameReader::new(limits);
    let mut ids = vec![];
    loop {
        while let Some(f) = reader.next_frame().unwrap() {
            assert_eq!(
                f.request(&limits).unwrap(),
                Request::Exists(HashList::new(&hs))
            );
            ids.push(f.header.request_id);
        }
        if reader.read_from(&mut src).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(ids, [0, 1, 2, 3, 4]);
}

#[test]
fn event_bodies_are_kvtier_events_encodings() {
    use kvtier_core::Medium;
    use kvtier_events::{EventBatch, EventKind, EventMessage, Payload};
    let msg = EventMessage {
        instance: InstanceId(5),
        event_id: 12,
        payload: Payload::Batch(EventBatch {
            medium: Medium::Disk,
            kind: EventKind::Create,
            hashes: vec![SequenceHash::root(3)],
            policy: Default::default(),
        }),
    };
    let body = msg.encode(WireFormat::Msgpack).unwrap();
    let mut out = WriteBuf::new();
    Response::Subscribe(SubscribeEvent::Event {
        format: WireFormat::Msgpack,
        body: &body,
    })
    .encode(77, &Limits::default(), &mut out)
    .unwrap();
    let wire = out.to_vec();
    let (_, resp) = decode_response(&wire, &Limits::default()).unwrap();
    let Response::Subscribe(ev) = resp else {
        panic!()
    };
    assert_eq!(ev.decode_message().unwrap().unwrap(), msg);
    assert!(ev.decode_dump().is_none());
}

#[test]
fn error_frames_always_fit_their_limits() {
    let message = "é".repeat(5_000); // 10,000 bytes of two-byte characters
    for (max_text_len, max_frame_bytes, want_len) in [
        (4_096, Limits::DEFAULT_MAX_FRAME_BYTES, 4_096),
        (4_095, Limits::DEFAULT_MAX_FRAME_BYTES, 4_094), // cut at a character boundary
        (100_000, Limits::DEFAULT_MAX_FRAME_BYTES, 10_000),
        (4_096, 27, 6),
        (4_096, 20, 0),
    ] {
        let limits = Limits {
            max_text_len,
            max_frame_bytes,
            ..Limits::default()
        };
        let mut out = WriteBuf::new();
        kvtier_proto::encode_error(&mut out, 4, ErrorCode::Internal, false, &message, &limits)
            .unwrap();
        let wire = out.to_vec();
        assert!(wire.len() <= max_frame_bytes as usize);
        let (header, Response::Error(frame)) = decode_response(&wire, &limits).unwrap() else {
            panic!("not an error frame")
        };
        assert_eq!(header.request_id, 4);
        assert_eq!(frame.code, ErrorCode::Internal);
        assert_eq!(frame.message.len(), want_len);
        assert!(message.starts_with(frame.message));
    }
    // The u16 length field caps a message at 65,535 bytes whatever max_text_len says.
    let long = "a".repeat(100_000);
    let limits = Limits {
        max_text_len: 1 << 20,
        ..Limits::default()
    };
    let mut out = WriteBuf::new();
    kvtier_proto::encode_error(&mut out, 1, ErrorCode::Busy, false, &long, &limits).unwrap();
    let wire = out.to_vec();
    let (_, Response::Error(frame)) = decode_response(&wire, &limits).unwrap() else {
        panic!("not an error frame")
    };
    assert_eq!(frame.message.len(), 65_535);

    let tiny = Limits {
        max_frame_bytes: 19,
        ..Limits::default()
    };
    let mut out = WriteBuf::new();
    assert!(kvtier_proto::encode_error(&mut out, 1, ErrorCode::Busy, false, "x", &tiny).is_err());
    assert!(out.is_empty());
}
