//! The scripted peer the client tests talk to: a std `TcpListener` on 127.0.0.1 whose one
//! accepted connection runs a test's script. The script reads request frames (decoded with
//! kvtier-proto), answers them from a [`Store`] (a map of blocks, the reference model of a
//! server) or with hand-made frames, in whatever order the test wants, and can cut the
//! connection anywhere.
//!
//! The peer thread's result (and any panic in the script) comes back from [`Peer::join`], so
//! a test also fails when the server side saw something wrong.

#![allow(dead_code, reason = "each test file uses part of the peer")]

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use kvtier_core::SequenceHash;
use kvtier_events::InstanceId;
use kvtier_proto::{
    BlockResult, ErrorCode, ErrorFrame, FrameHeader, FrameReader, GetBlocks, Limits, PutStatus,
    Request, Response, ServerInfo, Stat, TierId, TierSet, WriteBuf, encode_error,
};

/// The instance id the peer announces at HELLO.
pub const INSTANCE: InstanceId = InstanceId(0xC0FFEE);
/// The server name the peer announces.
pub const SERVER_NAME: &str = "scripted-peer";

/// A peer serving one connection with a script.
pub struct Peer {
    addr: SocketAddr,
    thread: JoinHandle<io::Result<()>>,
}

impl Peer {
    /// Listens on a free port; the first connection runs `script`.
    pub fn spawn<F>(script: F) -> Peer
    where
        F: FnOnce(&mut PeerConn) -> io::Result<()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let thread = std::thread::spawn(move || {
            let (sock, _) = listener.accept()?;
            sock.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut conn = PeerConn {
                sock,
                reader: FrameReader::new(Limits::default()),
                limits: Limits::default(),
            };
            script(&mut conn)
        });
        Peer { addr, thread }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the script to end and fails the test if it failed.
    pub fn join(self) {
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("scripted peer failed: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// One received request frame, owned.
#[derive(Debug)]
pub struct Received {
    /// Its header.
    pub header: FrameHeader,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Received {
    /// The request id.
    pub fn id(&self) -> u64 {
        self.header.request_id
    }

    /// The decoded request.
    pub fn request(&self) -> Request<'_> {
        Request::decode(&self.header, &self.payload, &Limits::default()).expect("a valid request")
    }
}

/// The accepted connection, as the script sees it.
pub struct PeerConn {
    sock: TcpStream,
    reader: FrameReader,
    limits: Limits,
}

impl PeerConn {
    /// The next request frame; `None` when the client closed the connection.
    pub fn recv(&mut self) -> io::Result<Option<Received>> {
        loop {
            if let Some(frame) = self.reader.next_frame().map_err(io::Error::other)? {
                return Ok(Some(Received {
                    header: frame.header,
                    payload: frame.payload.to_vec(),
                }));
            }
            if self.reader.read_from(&mut self.sock)? == 0 {
                return Ok(None);
            }
        }
    }

    /// Whether received bytes wait to be read as frames (another request arrived together
    /// with the last one).
    pub fn has_buffered(&self) -> bool {
        self.reader.buffered() > 0
    }

    /// The next request frame, which must come.
    pub fn expect(&mut self) -> io::Result<Received> {
        self.recv()?
            .ok_or_else(|| io::Error::other("the client closed the connection early"))
    }

    /// Reads the HELLO, checks it asks for version 1, answers it with a server that takes
    /// any block size; returns the namespace and token.
    pub fn hello(&mut self) -> io::Result<(String, Option<Vec<u8>>)> {
        let frame = self.expect()?;
        let Request::Hello(hello) = frame.request() else {
            return Err(io::Error::other(format!(
                "expected HELLO, got {:?}",
                frame.header.opcode
            )));
        };
        if hello.version != 1 {
            return Err(io::Error::other("HELLO version is not 1"));
        }
        let got = (hello.namespace.to_string(), hello.token.map(<[u8]>::to_vec));
        self.send(frame.id(), &hello_reply())?;
        Ok(got)
    }

    /// Writes `response` for request `id`.
    pub fn send(&mut self, id: u64, response: &Response<'_>) -> io::Result<()> {
        let bytes = encode(id, response);
        self.sock.write_all(&bytes)
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Writes an ERROR frame for request `id`.
    pub fn send_error(
        &mut self,
        id: u64,
        code: ErrorCode,
        fatal: bool,
        message: &str,
    ) -> io::Result<()> {
        let mut out = WriteBuf::new();
        encode_error(&mut out, id, code, fatal, message, &self.limits).map_err(io::Error::other)?;
        self.sock.write_all(&out.to_vec())
    }

    /// Closes both directions of the connection.
    pub fn close(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The HELLO reply the peer sends.
pub fn hello_reply() -> Response<'static> {
    let limits = Limits::default();
    Response::Hello(ServerInfo {
        version: 1,
        block_bytes: 0,
        max_frame_bytes: limits.max_frame_bytes,
        max_blocks_per_request: limits.max_blocks_per_request,
        instance: INSTANCE,
        server: SERVER_NAME,
    })
}

/// One response frame's bytes.
pub fn encode(id: u64, response: &Response<'_>) -> Vec<u8> {
    let mut out = WriteBuf::new();
    response
        .encode(id, &Limits::default(), &mut out)
        .expect("encodable response");
    out.to_vec()
}

/// The reference model: blocks by hash, all in G2, and a PUT counter for STATS.
#[derive(Debug, Default)]
pub struct Store {
    /// The stored blocks.
    pub blocks: HashMap<SequenceHash, Vec<u8>>,
    /// Blocks stored so far.
    pub puts: u64,
}

impl Store {
    /// The reply frame to `frame` (one of PUT, GET, MATCH, EXISTS, DELETE, STATS, PING).
    pub fn answer(&mut self, frame: &Received) -> Vec<u8> {
        let id = frame.id();
        match frame.request() {
            Request::Put { blocks, .. } => {
                let statuses = blocks
                    .iter()
                    .map(|(hash, bytes)| {
                        if self.blocks.insert(hash, bytes.to_vec()).is_some() {
                            PutStatus::AlreadyPresent
                        } else {
                            self.puts += 1;
                            PutStatus::Stored
                        }
                    })
                    .collect();
                encode(id, &Response::Put(statuses))
            }
            Request::Get(hashes) => {
                let results: Vec<BlockResult<'_>> = hashes
                    .iter()
                    .map(|h| match self.blocks.get(&h) {
                        Some(bytes) => BlockResult::Found {
                            tier: TierId::G2,
                            bytes,
                        },
                        None => BlockResult::Missing,
                    })
                    .collect();
                encode(id, &Response::Get(GetBlocks::new(&results)))
            }
            Request::Match(hashes) => {
                let prefix = hashes
                    .iter()
                    .take_while(|h| self.blocks.contains_key(h))
                    .map(|_| TierSet::EMPTY.with(TierId::G2))
                    .collect();
                encode(id, &Response::Match(prefix))
            }
            Request::Exists(hashes) => {
                let tiers = hashes
                    .iter()
                    .map(|h| {
                        if self.blocks.contains_key(&h) {
                            TierSet::EMPTY.with(TierId::G2)
                        } else {
                            TierSet::EMPTY
                        }
                    })
                    .collect();
                encode(id, &Response::Exists(tiers))
            }
            Request::Delete(hashes) => {
                let found = hashes
                    .iter()
                    .map(|h| self.blocks.remove(&h).is_some())
                    .collect();
                encode(id, &Response::Delete(found))
            }
            Request::Stats => encode(
                id,
                &Response::Stats(vec![
                    Stat {
                        name: "blocks",
                        value: self.blocks.len() as u64,
                    },
                    Stat {
                        name: "puts",
                        value: self.puts,
                    },
                ]),
            ),
            Request::Ping(bytes) => encode(id, &Response::Pong(bytes)),
            other => encode(
                id,
                &Response::Error(ErrorFrame {
                    code: ErrorCode::Internal,
                    fatal: false,
                    message: &format!("the store does not script {:?}", other.opcode()),
                }),
            ),
        }
    }

    /// Serves requests in order until the client closes the connection.
    pub fn serve(&mut self, conn: &mut PeerConn) -> io::Result<()> {
        while let Some(frame) = conn.recv()? {
            let reply = self.answer(&frame);
            conn.send_raw(&reply)?;
        }
        Ok(())
    }
}

/// `n` distinct hashes of a chain.
pub fn chain(n: usize) -> Vec<SequenceHash> {
    let mut out: Vec<SequenceHash> = Vec::with_capacity(n);
    for i in 0..n {
        let chained = 0x1000 + i as u64;
        out.push(match out.last() {
            None => SequenceHash::root(chained),
            Some(parent) => SequenceHash::child_of(*parent, chained),
        });
    }
    out
}

/// A block of `len` bytes made from `seed`.
pub fn block(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}
