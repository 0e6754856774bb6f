//! Shared by the node's end-to-end tests: a node on free 127.0.0.1 ports with small tiers in
//! a temporary directory, and a raw protocol connection (frames from `kvtier-proto`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kvtier_core::SequenceHash;
use kvtier_node::{ByteSize, IoBackend, Node, NodeConfig};
use kvtier_proto::{FrameReader, Hello, Limits, Request, Response, WriteBuf, decode_response};

/// Both IO backends.
pub const BACKENDS: [IoBackend; 2] = [IoBackend::Uring, IoBackend::Epoll];

/// A config with small tiers in `dir` and every port on a free 127.0.0.1 port.
pub fn config(dir: &std::path::Path, backend: IoBackend, block: usize) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_listen: None,
        metrics_listen: None,
        data_dir: dir.to_path_buf(),
        block_bytes: ByteSize(block as u64),
        host_bytes: ByteSize(64 * block as u64),
        disk_bytes: ByteSize(1024 * block as u64),
        io_backend: backend,
        ..NodeConfig::default()
    }
}

/// A node on `config`, or `None` (with a note) when io_uring is refused here.
pub fn start(config: NodeConfig) -> Option<Node> {
    let backend = config.io_backend;
    match Node::start(config) {
        Ok(node) => Some(node),
        Err(e) if backend == IoBackend::Uring && e.to_string().contains("uring") => {
            eprintln!("skipping io_uring: {e}");
            None
        }
        Err(e) => panic!("node did not start: {e}"),
    }
}

/// The bytes block `hash` holds in every test, derived from the hash.
pub fn pattern(hash: SequenceHash, len: usize) -> Vec<u8> {
    let seed = hash.as_u128().to_le_bytes();
    (0..len).map(|i| seed[i % 16] ^ (i / 16) as u8).collect()
}

/// A chain of `n` hashes from `seed`.
pub fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut h = SequenceHash::root(seed);
    let mut out = vec![h];
    for i in 1..n {
        h = SequenceHash::child_of(h, seed.wrapping_mul(31) + i as u64);
        out.push(h);
    }
    out
}

/// A raw binary-protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    reader: FrameReader,
    pub limits: Limits,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let limits = Limits::default();
        Self {
            stream,
            reader: FrameReader::new(limits),
            limits,
        }
    }

    /// Sends one request with `id`.
    pub fn send(&mut self, id: u64, request: &Request<'_>) {
        let mut out = WriteBuf::new();
        request.encode(id, &self.limits, &mut out).unwrap();
        self.stream.write_all(&out.to_vec()).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next whole reply frame, or `None` once the server closed the connection.
    pub fn recv_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame)) => {
                    let mut bytes = Vec::with_capacity(16 + frame.payload.len());
                    let mut header = [0u8; 16];
                    frame
                        .header
                        .write(&mut header, (16 + frame.payload.len()) as u32);
                    bytes.extend_from_slice(&header);
                    bytes.extend_from_slice(frame.payload);
                    return Some(bytes);
                }
                Ok(None) => {}
                Err(e) => panic!("bad reply frame: {e}"),
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends `request` and returns its reply frame (asserting the id).
    pub fn call(&mut self, id: u64, request: &Request<'_>) -> Vec<u8> {
        self.send(id, request);
        let frame = self
            .recv_frame()
            .expect("connection closed before the reply");
        let (header, _) = decode_response(&frame, &self.limits).unwrap();
        assert_eq!(header.request_id, id);
        frame
    }

    /// HELLO into `namespace` with `token`.
    pub fn hello(&mut self, namespace: &str, token: Option<&[u8]>) -> Vec<u8> {
        self.call(
            u64::MAX - 1,
            &Request::Hello(Hello {
                version: u16::from(kvtier_proto::VERSION),
                namespace,
                token,
            }),
        )
    }

    /// Whether the server closed the connection (reads until EOF, bounded).
    pub fn closed_by_server(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// Decodes `frame` as a response.
pub fn response<'a>(frame: &'a [u8], limits: &Limits) -> Response<'a> {
    decode_response(frame, limits).unwrap().1
}

/// Waits (bounded) until `done` holds: a liveness deadline, not a timing assertion.
pub fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
