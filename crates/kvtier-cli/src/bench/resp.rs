//! The Redis target: RESP2 over TCP, as `redis-benchmark` speaks it, so one tool measures
//! redis-server and kvtier's RESP port side by side.
//!
//! PUT is `SET kvbench:<key> <block>`, GET is `GET kvbench:<key>`; MATCH has no Redis
//! equivalent and is refused before the run starts. Every GET reply is checked: its length and
//! the key stamped into the block (see [`stamp`](super::workload::stamp)).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};

use super::conn::{Conn, CorkedStream, InBuf, Outcome, write_all_vectored};

/// SET values shorter than this are corked with the command; longer ones go out at once.
const SMALL_VALUE: usize = 16 << 10;
use super::workload::{Op, OpKind, stamp, stamped};

/// Key prefix of every key `kvtier bench` writes.
pub const KEY_PREFIX: &str = "kvbench:";

/// The longest status or error line accepted in a reply.
const MAX_LINE: usize = 64 << 10;

/// A pipelined RESP2 connection.
pub struct RespConn {
    /// GETs and SETs of small values are corked; large SETs go out at once.
    stream: CorkedStream<TcpStream>,
    block: Vec<u8>,
    head: Vec<u8>,
    inb: InBuf,
    /// Requests in flight, oldest first (Redis answers in order).
    pending: VecDeque<(u64, Op)>,
}

impl RespConn {
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
            stream: CorkedStream::new(stream),
            block: vec![0xA5; block_bytes],
            head: Vec::with_capacity(128),
            inb: InBuf::default(),
            pending: VecDeque::new(),
        })
    }

    /// Sends `PING` and waits for `+PONG` (checks the peer speaks RESP before a run).
    ///
    /// # Errors
    ///
    /// The socket's error, or `InvalidData` when the reply is not `+PONG`.
    pub fn ping(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            return Err(io::Error::other("ping with requests in flight"));
        }
        self.stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        match self.reply()? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("PING answered {other:?}, not +PONG: is this a Redis server?"),
            )),
        }
    }

    /// Reads one reply.
    fn reply(&mut self) -> io::Result<Reply> {
        let line_end = loop {
            if let Some(at) = self.inb.data().windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if self.inb.data().len() > MAX_LINE {
                return Err(bad("reply line longer than 64 KiB"));
            }
            self.inb.fill_more(&mut self.stream)?;
        };
        let line = &self.inb.data()[..line_end];
        let (kind, rest) = line.split_first().ok_or_else(|| bad("empty reply line"))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        match kind {
            b'+' => {
                self.inb.consume(line_end + 2);
                Ok(Reply::Status(text))
            }
            b'-' => {
                self.inb.consume(line_end + 2);
                Ok(Reply::Error(text))
            }
            b':' => {
                self.inb.consume(line_end + 2);
                text.parse::<i64>()
                    .map(|_| Reply::Int)
                    .map_err(|_| bad("bad integer reply"))
            }
            b'$' => {
                let len: i64 = text.parse().map_err(|_| bad("bad bulk length"))?;
                self.inb.consume(line_end + 2);
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let len = usize::try_from(len).map_err(|_| bad("bulk length overflows"))?;
                self.inb.fill(&mut self.stream, len + 2)?;
                if &self.inb.data()[len..len + 2] != b"\r\n" {
                    return Err(bad("bulk reply not followed by CRLF"));
                }
                Ok(Reply::Bulk(len))
            }
            _ => Err(bad("unexpected reply type")),
        }
    }
}

/// A parsed reply; a bulk's bytes stay in the read buffer until the caller consumes them.
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int,
    /// The bulk's bytes are the first `len` of the read buffer, then CRLF.
    Bulk(usize),
    Nil,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn for RespConn {
    fn send(&mut self, tag: u64, op: Op) -> io::Result<()> {
        let key = format!("{KEY_PREFIX}{}", op.key);
        self.head.clear();
        match op.kind {
            OpKind::Put => {
                write!(
                    self.head,
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                    key.len(),
                    self.block.len()
                )?;
                stamp(&mut self.block, op.key);
                if self.block.len() < SMALL_VALUE {
                    self.stream.cork(&self.head)?;
                    self.stream.cork(&self.block)?;
                    self.stream.cork(b"\r\n")?;
                } else {
                    write_all_vectored(
                        &mut self.stream,
                        &mut [
                            IoSlice::new(&self.head),
                            IoSlice::new(&self.block),
                            IoSlice::new(b"\r\n"),
                        ],
                    )?;
                }
            }
            OpKind::Get => {
                write!(self.head, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len())?;
                self.stream.cork(&self.head)?;
            }
            OpKind::Match => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "MATCH is not a Redis command",
                ));
            }
        }
        self.pending.push_back((tag, op));
        Ok(())
    }

    fn recv(&mut self) -> io::Result<(u64, Outcome)> {
        let (tag, op) = self
            .pending
            .pop_front()
            .ok_or_else(|| io::Error::other("recv with nothing in flight"))?;
        let outcome = match (op.kind, self.reply()?) {
            (_, Reply::Error(e)) => Outcome::Failed(e),
            (OpKind::Put, Reply::Status(s)) if s == "OK" => Outcome::Done {
                bytes: self.block.len() as u64,
            },
            (OpKind::Get, Reply::Nil) => Outcome::Miss,
            (OpKind::Get, Reply::Bulk(len)) => {
                let ok = stamped(&self.inb.data()[..len], op.key, self.block.len());
                self.inb.consume(len + 2);
                if ok {
                    Outcome::Done { bytes: len as u64 }
                } else {
                    Outcome::Failed(format!(
                        "GET {KEY_PREFIX}{} returned {len} bytes that are not the block stored \
                         under it",
                        op.key
                    ))
                }
            }
            (kind, reply) => {
                if let Reply::Bulk(len) = reply {
                    self.inb.consume(len + 2);
                }
                Outcome::Failed(format!("unexpected reply to {kind:?}: {reply:?}"))
            }
        };
        Ok((tag, outcome))
    }
}
