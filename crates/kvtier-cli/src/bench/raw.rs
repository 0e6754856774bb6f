//! The ceiling: plain loopback TCP doing the same exchanges as the server under test, with
//! nothing in between but the kernel.
//!
//! [`RawServer`] is a thread-per-connection server started inside `kvtier bench`; each request
//! is a 16-byte header (request payload length `u32`, reply length `u32`, tag `u64`, all
//! little-endian) and its payload, each reply a 16-byte header (reply length, 0, tag) and that
//! many bytes from a pre-filled buffer. A GET asks for a block and sends none, a PUT sends a
//! block and asks for nothing, a MATCH sends 32 hashes (256 bytes) and asks for 8: the bytes
//! on the wire are those of the real protocols, minus their parsing and storage.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::conn::{Conn, InBuf, Outcome, write_all_vectored};
use super::workload::{MATCH_HASHES, Op, OpKind};

const HEADER: usize = 16;
/// The largest payload either side accepts (a bad header is an error, not an allocation).
const MAX_PAYLOAD: usize = 1 << 30;

fn header(payload: usize, reply: usize, tag: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&(payload as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(reply as u32).to_le_bytes());
    h[8..].copy_from_slice(&tag.to_le_bytes());
    h
}

fn parse(h: &[u8]) -> io::Result<(usize, usize, u64)> {
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]) as usize;
    let (payload, reply) = (word(0), word(4));
    if payload > MAX_PAYLOAD || reply > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "raw-tcp header asks for more than 1 GiB",
        ));
    }
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&h[8..HEADER]);
    Ok((payload, reply, u64::from_le_bytes(tag)))
}

/// The in-process raw TCP server; stops (and joins its acceptor) on drop.
pub struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Listens on a free 127.0.0.1 port; with `cpu`, its threads run on that CPU only.
    ///
    /// # Errors
    ///
    /// The bind error. A CPU the threads cannot be moved to is reported on stderr, and the
    /// run goes on unpinned.
    pub fn start(cpu: Option<usize>, congestion: Option<String>) -> io::Result<Self> {
        let pin = move || {
            cpu.is_none_or(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name("raw-tcp-accept".into())
            .spawn(move || {
                if !pin() {
                    eprintln!("raw TCP server: cannot run on CPU {cpu:?}; not pinned");
                }
                for stream in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let congestion = congestion.clone();
                    let _ = std::thread::Builder::new()
                        .name("raw-tcp-conn".into())
                        .spawn(move || {
                            let _ = pin();
                            serve(stream, congestion.as_deref())
                        });
                }
            })?;
        Ok(Self {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocked accept; connections end when their clients close.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves one connection until the client closes it (or sends a bad header), with the
/// client's loopback congestion control, as `kvtier serve` does.
fn serve(mut stream: TcpStream, congestion: Option<&str>) {
    if kvtier_client::tune_connection(&stream, congestion).is_err() {
        let _ = stream.set_nodelay(true);
    }
    let mut inb = InBuf::default();
    let mut reply = Vec::new();
    loop {
        if inb.fill(&mut stream, HEADER).is_err() {
            return;
        }
        let Ok((payload, reply_len, tag)) = parse(&inb.data()[..HEADER]) else {
            return;
        };
        inb.consume(HEADER);
        // Receive the payload (the bytes a PUT stores), then drop it.
        if inb.fill(&mut stream, payload).is_err() {
            return;
        }
        inb.consume(payload);
        if reply.len() < reply_len {
            reply.resize(reply_len, 0x5A);
        }
        let head = header(reply_len, 0, tag);
        if write_all_vectored(
            &mut stream,
            &mut [IoSlice::new(&head), IoSlice::new(&reply[..reply_len])],
        )
        .is_err()
        {
            return;
        }
    }
}

/// A pipelined connection to a [`RawServer`].
pub struct RawConn {
    stream: TcpStream,
    block: Vec<u8>,
    block_bytes: usize,
    inb: InBuf,
    /// Kinds of the requests in flight, oldest first (the server answers in order).
    pending: VecDeque<OpKind>,
}

impl RawConn {
    /// Connects to `addr` (a loopback connection with `congestion`, if given); blocks are
    /// `block_bytes` long.
    ///
    /// # Errors
    ///
    /// The connect error, or the kernel's refusal of `congestion`.
    pub fn connect(
        addr: SocketAddr,
        block_bytes: usize,
        congestion: Option<&str>,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        kvtier_client::tune_connection(&stream, congestion)?;
        Ok(Self {
            stream,
            block: vec![0xA5; block_bytes.max(MATCH_HASHES * 8)],
            block_bytes,
            inb: InBuf::default(),
            pending: VecDeque::new(),
        })
    }
}

impl Conn for RawConn {
    fn send(&mut self, tag: u64, op: Op) -> io::Result<()> {
        let block_bytes = self.block_bytes;
        let (payload, reply) = match op.kind {
            OpKind::Get => (0, block_bytes),
            OpKind::Put => (block_bytes, 0),
            OpKind::Match => (MATCH_HASHES * 8, 8),
        };
        let head = header(payload, reply, tag);
        write_all_vectored(
            &mut self.stream,
            &mut [IoSlice::new(&head), IoSlice::new(&self.block[..payload])],
        )?;
        self.pending.push_back(op.kind);
        Ok(())
    }

    fn recv(&mut self) -> io::Result<(u64, Outcome)> {
        self.inb.fill(&mut self.stream, HEADER)?;
        let (len, _, tag) = parse(&self.inb.data()[..HEADER])?;
        self.inb.consume(HEADER);
        self.inb.fill(&mut self.stream, len)?;
        self.inb.consume(len);
        let kind = self
            .pending
            .pop_front()
            .ok_or_else(|| io::Error::other("a reply with nothing in flight"))?;
        // Block bytes moved: a PUT's block out, a GET's block in; a MATCH moves none.
        let bytes = match kind {
            OpKind::Put => self.block_bytes,
            OpKind::Get => len,
            OpKind::Match => 0,
        };
        Ok((
            tag,
            Outcome::Done {
                bytes: bytes as u64,
            },
        ))
    }
}

/// Reads exactly one reply header from `r` (for tests of the server's framing).
#[cfg(test)]
fn read_reply<R: std::io::Read>(r: &mut R) -> io::Result<(usize, u64)> {
    let mut h = [0u8; HEADER];
    r.read_exact(&mut h)?;
    let (len, _, tag) = parse(&h)?;
    io::copy(
        &mut std::io::Read::take(&mut *r, len as u64),
        &mut io::sink(),
    )?;
    Ok((len, tag))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn a_pinned_raw_server_runs_its_connections_on_that_cpu() {
        let server = RawServer::start(Some(0), None).unwrap();
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(&header(0, 64, 1)).unwrap();
        assert_eq!(read_reply(&mut c).unwrap(), (64, 1));
        // The connection's thread (named by the server) is allowed CPU 0 only.
        let pid = std::process::id();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let allowed: Vec<String> = tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                (name.trim() == "raw-tcp-conn").then(|| {
                    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
            })
            .collect();
        assert!(!allowed.is_empty(), "no connection thread found");
        assert!(allowed.iter().all(|a| a == "0"), "{allowed:?}");
    }

    #[test]
    fn the_raw_server_answers_each_shape_and_refuses_absurd_headers() {
        let server = RawServer::start(None, None).unwrap();
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(&header(0, 4096, 7)).unwrap();
        assert_eq!(read_reply(&mut c).unwrap(), (4096, 7));
        let mut put = header(1000, 0, 8).to_vec();
        put.extend(std::iter::repeat_n(1u8, 1000));
        c.write_all(&put).unwrap();
        assert_eq!(read_reply(&mut c).unwrap(), (0, 8));
        // A header asking for 4 GiB: the server closes instead of allocating.
        c.write_all(&header(u32::MAX as usize, 0, 9)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
        assert!(parse(&header(u32::MAX as usize, 0, 1)).is_err());
    }
}
