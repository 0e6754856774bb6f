//! The kvtier target: kvtier's binary protocol (`docs/protocol.md`) over TCP, built directly
//! on `kvtier_proto` so the hot path is one vectored write per request (the frame's header
//! and index from a small buffer, block bytes straight from the connection's block buffers)
//! and one reusable read buffer in which each reply is decoded in place.
//!
//! - PUT stores `--blocks-per-request` blocks, keys `key, key + 1, ...` (wrapping in the
//!   keyspace), each stamped with its key (see [`stamp`](super::workload::stamp)).
//! - GET fetches the same run of keys; every block that comes back is checked against its
//!   key's stamp and length. A GET with a missing block is a miss.
//! - MATCH asks for the longest cached prefix of `--match-len` hashes from `key` on; an empty
//!   prefix is a miss.
//!
//! The server may answer in any order: each request goes out under a fresh request id and
//! the reply's id finds the driver's tag and the operation again. Key `k`'s block is stored
//! under [`block_hash`]`(k)`, a chain over the keyspace, in the `--namespace` given at HELLO.

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};

use kvtier_core::SequenceHash;
use kvtier_proto::{
    BlockResult, FrameHeader, HEADER_LEN, HashList, Hello, Limits, PUT_ENTRY_BYTES, PutBlocks,
    PutStatus, Request, Response, WriteBuf,
};

use super::conn::{Conn, CorkedStream, InBuf, Outcome, write_all_vectored};
use super::workload::{Op, OpKind, stamp, stamped};

/// Default of `--namespace`: bench blocks stay apart from real ones.
pub const DEFAULT_NAMESPACE: &str = "kvbench";

/// How a kvtier connection talks to its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvtierOptions {
    /// Namespace opened at HELLO.
    pub namespace: String,
    /// Auth token sent at HELLO, if any.
    pub token: Option<String>,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Blocks per PUT and GET request.
    pub blocks_per_request: usize,
    /// Hashes per MATCH request.
    pub match_len: usize,
    /// Blocks the keys name (`0..keyspace`); runs of keys wrap in it.
    pub keyspace: u64,
    /// Congestion control of loopback connections (`None`: the system's).
    pub congestion: Option<String>,
}

/// The sequence hash key `key`'s block is stored under: a chain over the keyspace (each
/// key's parent fragment is the previous key's chained hash), so a MATCH from `key` asks for a
/// real prefix.
pub fn block_hash(key: u64) -> SequenceHash {
    let chained = |k: u64| {
        let mut z = k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    };
    let parent = if key == 0 { 0 } else { chained(key - 1) as u32 };
    let position = u32::try_from(key).unwrap_or(u32::MAX);
    SequenceHash::new(chained(key), parent, position)
}

/// A pipelined connection to a kvtier server's binary port.
pub struct KvtierConn {
    /// MATCH and GET requests are corked; PUTs go out at once.
    stream: CorkedStream<TcpStream>,
    options: KvtierOptions,
    /// The limits requests are encoded under (ours, lowered to the server's).
    send_limits: Limits,
    /// The limits replies are decoded under.
    recv_limits: Limits,
    /// One buffer per block of a PUT, restamped per request.
    blocks: Vec<Vec<u8>>,
    /// Hashes of the request being encoded.
    hashes: Vec<SequenceHash>,
    inb: InBuf,
    next_id: u64,
    /// Requests in flight by request id: the driver's tag and the operation.
    pending: HashMap<u64, (u64, Op)>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl KvtierConn {
    /// Connects to `addr` and opens a session (HELLO); checks that the server takes requests
    /// of this shape (block size, blocks per request, frame size).
    ///
    /// # Errors
    ///
    /// The connect error; `InvalidData` when the server does not answer HELLO as a kvtier
    /// server, refuses it, or cannot take these requests.
    pub fn connect(addr: SocketAddr, options: &KvtierOptions) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        kvtier_client::tune_connection(&stream, options.congestion.as_deref())?;
        let per_request = options.blocks_per_request.max(1);
        let mut conn = Self {
            stream: CorkedStream::new(stream),
            options: options.clone(),
            send_limits: Limits::default(),
            recv_limits: Limits::default(),
            blocks: vec![vec![0xA5; options.block_bytes]; per_request],
            hashes: Vec::with_capacity(per_request.max(options.match_len)),
            inb: InBuf::default(),
            // HELLO goes out as request 1; 0 is left to errors about no request at all.
            next_id: 2,
            pending: HashMap::new(),
        };
        conn.hello()?;
        Ok(conn)
    }

    /// Sends HELLO and checks the reply against the options.
    fn hello(&mut self) -> io::Result<()> {
        let hello = Request::Hello(Hello {
            version: 1,
            namespace: &self.options.namespace,
            token: self.options.token.as_deref().map(str::as_bytes),
        });
        let mut out = WriteBuf::new();
        hello
            .encode(1, &self.send_limits, &mut out)
            .map_err(|e| invalid(format!("HELLO: {e}")))?;
        self.stream.write_all(&out.to_vec())?;
        let len = self.next_frame()?;
        let frame = self.inb.data().get(..len).unwrap_or_default();
        let info = match kvtier_proto::decode_response(frame, &self.recv_limits) {
            Ok((_, Response::Hello(info))) => info,
            Ok((_, Response::Error(e))) => {
                return Err(invalid(format!(
                    "the server refused HELLO: {:?}: {}",
                    e.code, e.message
                )));
            }
            Ok((h, _)) => return Err(invalid(format!("HELLO answered with {:?}", h.opcode))),
            Err(e) => return Err(invalid(format!("HELLO reply: {e}"))),
        };
        let o = &self.options;
        if info.block_bytes != 0 && info.block_bytes as usize != o.block_bytes {
            return Err(invalid(format!(
                "namespace {:?} stores {}-byte blocks: run with --block-bytes {}",
                o.namespace, info.block_bytes, info.block_bytes
            )));
        }
        let most = o.blocks_per_request.max(o.match_len) as u64;
        if most > u64::from(info.max_blocks_per_request) {
            return Err(invalid(format!(
                "the server takes at most {} blocks or hashes per request; \
                 lower --blocks-per-request / --match-len",
                info.max_blocks_per_request
            )));
        }
        // Header, count, then an index entry and the bytes of each block.
        let frame =
            (HEADER_LEN + 4 + o.blocks_per_request * (PUT_ENTRY_BYTES + o.block_bytes)) as u64;
        if frame > u64::from(info.max_frame_bytes) {
            return Err(invalid(format!(
                "a PUT of {} x {} B blocks exceeds the server's {}-byte frame limit",
                o.blocks_per_request, o.block_bytes, info.max_frame_bytes
            )));
        }
        self.send_limits.max_frame_bytes =
            info.max_frame_bytes.min(Limits::default().max_frame_bytes);
        self.send_limits.max_blocks_per_request = info
            .max_blocks_per_request
            .min(Limits::default().max_blocks_per_request);
        self.inb.consume(len);
        Ok(())
    }

    /// Reads until a whole frame is at the front of the read buffer; returns its length.
    fn next_frame(&mut self) -> io::Result<usize> {
        self.inb.fill(&mut self.stream, HEADER_LEN)?;
        let header = FrameHeader::parse_limited(self.inb.data(), self.recv_limits.max_frame_bytes)
            .map_err(|e| invalid(format!("bad frame from the server: {e}")))?
            .ok_or_else(|| invalid("no frame header".to_string()))?;
        let len = header.len as usize;
        self.inb.fill(&mut self.stream, len)?;
        Ok(len)
    }

    /// Fills `hashes` with the run of `n` keys from `key` on.
    fn run_of_keys(&mut self, key: u64, n: usize) {
        let keyspace = self.options.keyspace.max(1);
        self.hashes.clear();
        self.hashes
            .extend((0..n as u64).map(|i| block_hash((key + i) % keyspace)));
    }

    /// What the reply `response` to `op` means for the driver.
    fn outcome(&self, op: Op, response: Response<'_>) -> Outcome {
        let keyspace = self.options.keyspace.max(1);
        let per_request = self.options.blocks_per_request;
        match (op.kind, response) {
            (kind, Response::Error(e)) => Outcome::Failed(format!(
                "{kind:?} of key {}: server error {:?}: {}",
                op.key, e.code, e.message
            )),
            (OpKind::Put, Response::Put(statuses)) if statuses.len() == per_request => {
                match statuses
                    .iter()
                    .find(|s| !matches!(s, PutStatus::Stored | PutStatus::AlreadyPresent))
                {
                    Some(s) => Outcome::Failed(format!("PUT of key {}: status {s:?}", op.key)),
                    None => Outcome::Done {
                        bytes: (per_request * self.options.block_bytes) as u64,
                    },
                }
            }
            (OpKind::Get, Response::Get(blocks)) if blocks.len() == per_request => {
                let mut bytes = 0u64;
                let mut missing = false;
                for (i, result) in blocks.iter().enumerate() {
                    let key = (op.key + i as u64) % keyspace;
                    match result {
                        BlockResult::Missing => missing = true,
                        BlockResult::Found { bytes: block, .. } => {
                            if !stamped(block, key, self.options.block_bytes) {
                                return Outcome::Failed(format!(
                                    "GET of key {key} returned {} bytes that are not the block \
                                     stored under it",
                                    block.len()
                                ));
                            }
                            bytes += block.len() as u64;
                        }
                    }
                }
                if missing {
                    Outcome::Miss
                } else {
                    Outcome::Done { bytes }
                }
            }
            (OpKind::Match, Response::Match(tiers)) if tiers.len() <= self.options.match_len => {
                if tiers.is_empty() {
                    Outcome::Miss
                } else {
                    Outcome::Done { bytes: 0 }
                }
            }
            (kind, response) => Outcome::Failed(format!(
                "{kind:?} of key {} answered with a {:?} reply of the wrong shape",
                op.key,
                response.opcode()
            )),
        }
    }
}

impl Conn for KvtierConn {
    fn send(&mut self, tag: u64, op: Op) -> io::Result<()> {
        let id = self.next_id;
        let n = match op.kind {
            OpKind::Put | OpKind::Get => self.options.blocks_per_request,
            OpKind::Match => self.options.match_len,
        };
        self.run_of_keys(op.key, n);
        let mut slices: Vec<&[u8]> = Vec::new();
        if op.kind == OpKind::Put {
            let keyspace = self.options.keyspace.max(1);
            for (i, block) in self.blocks.iter_mut().enumerate() {
                stamp(block, (op.key + i as u64) % keyspace);
            }
            slices.extend(self.blocks.iter().map(Vec::as_slice));
        }
        let mut out = WriteBuf::new();
        let hashes = HashList::new(&self.hashes);
        let encoded = match op.kind {
            OpKind::Put => PutBlocks::new(&self.hashes, &slices).and_then(|blocks| {
                let put = Request::Put {
                    durable: false,
                    blocks,
                };
                put.encode(id, &self.send_limits, &mut out)
            }),
            OpKind::Get => Request::Get(hashes).encode(id, &self.send_limits, &mut out),
            OpKind::Match => Request::Match(hashes).encode(id, &self.send_limits, &mut out),
        };
        encoded.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if op.kind == OpKind::Put {
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(out.segment_count());
            out.io_slices(0, &mut iov);
            write_all_vectored(&mut self.stream, &mut iov)?;
        } else {
            for segment in out.segments() {
                self.stream.cork(segment)?;
            }
        }
        self.next_id += 1;
        self.pending.insert(id, (tag, op));
        Ok(())
    }

    fn recv(&mut self) -> io::Result<(u64, Outcome)> {
        if self.pending.is_empty() {
            return Err(io::Error::other("recv with nothing in flight"));
        }
        let len = self.next_frame()?;
        let frame = self.inb.data().get(..len).unwrap_or_default();
        let result =
            kvtier_proto::split_frame(frame, &self.recv_limits).map(|(header, payload)| {
                (
                    header.request_id,
                    Response::decode(&header, payload, &self.recv_limits),
                )
            });
        let (id, response) =
            result.map_err(|e| invalid(format!("bad frame from the server: {e}")))?;
        let Some((tag, op)) = self.pending.remove(&id) else {
            return Err(invalid(format!(
                "a reply to request id {id}, which is not in flight"
            )));
        };
        let outcome = match response {
            Ok(response) => self.outcome(op, response),
            Err(e) => Outcome::Failed(format!(
                "{:?} of key {}: malformed reply: {e}",
                op.kind, op.key
            )),
        };
        self.inb.consume(len);
        Ok((tag, outcome))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashSet;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use kvtier_events::InstanceId;
    use kvtier_proto::{
        ErrorCode, ErrorFrame, FrameReader, GetBlocks, ServerInfo, TierId, TierSet, encode_error,
    };

    use super::*;

    const BLOCK: usize = 20_000;

    /// A scripted kvtier peer: answers HELLO (announcing `block_bytes`), stores PUT blocks,
    /// answers GET/MATCH from them, and sends the replies to each batch of requests that
    /// arrived together in reverse order. A GET of `swap_key` gets `swap_key + 1`'s block; a
    /// MATCH from `error_key` gets an ERROR frame.
    /// Every connection is served by its own thread; the blocks are shared.
    pub(in crate::bench) fn peer(block_bytes: u32, swap_key: u64, error_key: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(HashMap::new()));
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let store = Arc::clone(&store);
                std::thread::spawn(move || serve(sock, &store, block_bytes, swap_key, error_key));
            }
        });
        addr
    }

    type Store = Mutex<HashMap<SequenceHash, Vec<u8>>>;

    fn serve(mut sock: TcpStream, store: &Store, block_bytes: u32, swap_key: u64, error_key: u64) {
        let limits = Limits::default();
        let mut reader = FrameReader::new(limits);
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            while let Some(frame) = reader.next_frame().unwrap() {
                let id = frame.header.request_id;
                let encode = |response: Response<'_>| {
                    let mut out = WriteBuf::new();
                    response.encode(id, &limits, &mut out).unwrap();
                    out.to_vec()
                };
                let reply = match frame.request(&limits).unwrap() {
                    Request::Hello(h) => {
                        assert_eq!(h.namespace, "bench-ns");
                        assert_eq!(h.token, Some(&b"tok"[..]));
                        encode(Response::Hello(ServerInfo {
                            version: 1,
                            block_bytes,
                            max_frame_bytes: limits.max_frame_bytes,
                            max_blocks_per_request: 64,
                            instance: InstanceId(1),
                            server: "scripted",
                        }))
                    }
                    Request::Put { blocks, .. } => {
                        let n = blocks.len();
                        let mut store = store.lock().unwrap();
                        store.extend(blocks.iter().map(|(h, b)| (h, b.to_vec())));
                        encode(Response::Put(vec![PutStatus::Stored; n]))
                    }
                    Request::Get(hashes) => {
                        let store = store.lock().unwrap();
                        let results: Vec<BlockResult<'_>> = hashes
                            .iter()
                            .map(|h| {
                                let h = if h == block_hash(swap_key) {
                                    block_hash(swap_key + 1)
                                } else {
                                    h
                                };
                                match store.get(&h) {
                                    Some(bytes) => BlockResult::Found {
                                        tier: TierId::G2,
                                        bytes,
                                    },
                                    None => BlockResult::Missing,
                                }
                            })
                            .collect();
                        encode(Response::Get(GetBlocks::new(&results)))
                    }
                    Request::Match(hashes) if hashes.get(0) == Some(block_hash(error_key)) => {
                        let mut out = WriteBuf::new();
                        encode_error(&mut out, id, ErrorCode::Busy, false, "busy", &limits)
                            .unwrap();
                        out.to_vec()
                    }
                    Request::Match(hashes) => encode(Response::Match(
                        hashes
                            .iter()
                            .take_while(|h| store.lock().unwrap().contains_key(h))
                            .map(|_| TierSet::EMPTY.with(TierId::G2))
                            .collect(),
                    )),
                    other => {
                        let message = format!("not scripted: {:?}", other.opcode());
                        encode(Response::Error(ErrorFrame {
                            code: ErrorCode::Internal,
                            fatal: true,
                            message: &message,
                        }))
                    }
                };
                batch.push(reply);
            }
            for reply in batch.drain(..).rev() {
                sock.write_all(&reply).unwrap();
            }
            match reader.read_from(&mut sock) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn options(blocks_per_request: usize) -> KvtierOptions {
        KvtierOptions {
            congestion: None,
            namespace: "bench-ns".to_string(),
            token: Some("tok".to_string()),
            block_bytes: BLOCK,
            blocks_per_request,
            match_len: 4,
            keyspace: 100,
        }
    }

    /// Sends `ops` (tags 0..) all at once, then collects every reply by tag.
    fn exchange(conn: &mut KvtierConn, ops: &[Op]) -> HashMap<u64, Outcome> {
        for (tag, op) in ops.iter().enumerate() {
            conn.send(tag as u64, *op).unwrap();
        }
        let mut got = HashMap::new();
        for _ in ops {
            let (tag, outcome) = conn.recv().unwrap();
            assert!(
                got.insert(tag, outcome).is_none(),
                "tag {tag} answered twice"
            );
        }
        got
    }

    fn op(kind: OpKind, key: u64) -> Op {
        Op { kind, key }
    }

    #[test]
    fn puts_gets_and_matches_are_checked_and_matched_by_id_out_of_order() {
        let addr = peer(BLOCK as u32, 50, 60);
        let mut conn = KvtierConn::connect(addr, &options(1)).unwrap();
        let puts: Vec<Op> = (0..10).map(|k| op(OpKind::Put, k)).collect();
        let got = exchange(&mut conn, &puts);
        assert_eq!(
            got.keys().copied().collect::<HashSet<_>>(),
            (0..10).collect()
        );
        assert!(got.values().all(|o| *o
            == Outcome::Done {
                bytes: BLOCK as u64
            }));

        // Key 50 and 51 are stored; the peer answers a GET of 50 with 51's block.
        exchange(&mut conn, &[op(OpKind::Put, 50), op(OpKind::Put, 51)]);
        let ops = [
            op(OpKind::Get, 3),
            op(OpKind::Get, 99), // never stored
            op(OpKind::Match, 2),
            op(OpKind::Match, 9), // 9 is stored, 10 is not
            op(OpKind::Match, 20),
            op(OpKind::Get, 50),
            op(OpKind::Match, 60),
        ];
        let got = exchange(&mut conn, &ops);
        assert_eq!(
            got[&0],
            Outcome::Done {
                bytes: BLOCK as u64
            }
        );
        assert_eq!(got[&1], Outcome::Miss);
        assert_eq!(got[&2], Outcome::Done { bytes: 0 });
        assert_eq!(got[&3], Outcome::Done { bytes: 0 });
        assert_eq!(got[&4], Outcome::Miss);
        match &got[&5] {
            Outcome::Failed(e) => assert!(e.contains("not the block stored"), "{e}"),
            other => panic!("a swapped block was accepted: {other:?}"),
        }
        match &got[&6] {
            Outcome::Failed(e) => assert!(e.contains("Busy"), "{e}"),
            other => panic!("an ERROR frame was accepted: {other:?}"),
        }
    }

    #[test]
    fn several_blocks_per_request_move_and_wrap_in_the_keyspace() {
        let addr = peer(0, 1000, 1000);
        let mut conn = KvtierConn::connect(addr, &options(3)).unwrap();
        // Keys 98, 99, 0.
        let got = exchange(&mut conn, &[op(OpKind::Put, 98)]);
        assert_eq!(
            got[&0],
            Outcome::Done {
                bytes: 3 * BLOCK as u64
            }
        );
        let got = exchange(&mut conn, &[op(OpKind::Get, 98), op(OpKind::Get, 99)]);
        assert_eq!(
            got[&0],
            Outcome::Done {
                bytes: 3 * BLOCK as u64
            }
        );
        assert_eq!(got[&1], Outcome::Miss); // key 1 was never stored
    }

    #[test]
    fn a_server_with_another_block_size_is_refused_at_connect() {
        let addr = peer(4096, 1000, 1000);
        let err = KvtierConn::connect(addr, &options(1)).err().unwrap();
        assert!(err.to_string().contains("--block-bytes 4096"), "{err}");
        let addr = peer(0, 1000, 1000);
        let err = KvtierConn::connect(addr, &options(65)).err().unwrap();
        assert!(err.to_string().contains("at most 64"), "{err}");
    }

    #[test]
    fn block_hashes_are_distinct_and_chained() {
        let hashes: HashSet<_> = (0..10_000).map(block_hash).collect();
        assert_eq!(hashes.len(), 10_000);
        assert!(block_hash(4).may_be_parent_of(block_hash(5)));
    }
}
