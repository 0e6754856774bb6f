//! A minimal RESP2 connection for the Redis backend's block reads: bulk replies are parsed by
//! hand and their bytes read from the socket straight into the place a
//! [`ValueSink`] names (a caller's buffer), with no intermediate reply buffer.
//!
//! The `redis` crate parses a reply into a fresh `Vec` (one copy out of its read buffer), after
//! which G4 used to copy or shift the payload once more; here the only copy is the kernel's,
//! and the checksum runs on each chunk as it lands. Only what block reads need is spoken:
//! `AUTH` and `SELECT` at connect, then pipelined `GET`s or one `MGET`, whose replies are bulk
//! strings (or an error), and pipelined `EXISTS` (integers) for presence probes. Anything else
//! stays on the `redis` crate's connections.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::backend::{BackendError, ValueSink};

/// Read-buffer size: reply headers and small values are read through it; large payloads skip it.
const READ_BUF: usize = 16 << 10;
/// Longest reply header line accepted (`$262200\r\n` is 9 bytes).
const MAX_LINE: usize = 512;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `AUTH` credentials (user, password), if any.
    pub auth: Option<(Option<String>, String)>,
    /// Database to `SELECT` when not 0.
    pub db: i64,
}

/// One reply's first line.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// `$len` (`None` for `$-1`).
    Bulk(Option<usize>),
    /// `*n` (`None` for `*-1`).
    Array(Option<usize>),
    /// `+...`.
    Simple,
    /// `:n`.
    Int(i64),
    /// `-...`: the server's error message.
    Error(String),
}

/// A connection: the socket, a small read buffer and a request buffer.
#[derive(Debug)]
pub(crate) struct RespConn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The next request, encoded by the caller.
    pub out: Vec<u8>,
}

/// An I/O error as a backend error: timeouts apart, the connection is unusable.
pub(crate) fn io_error(e: &io::Error) -> BackendError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BackendError::Timeout,
        _ => BackendError::Unavailable(e.to_string()),
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RESP: {what}"))
}

fn parse_len(digits: &[u8]) -> io::Result<Option<usize>> {
    if digits == b"-1" {
        return Ok(None);
    }
    let text = std::str::from_utf8(digits).map_err(|_| protocol("length not ASCII"))?;
    text.parse::<usize>()
        .map(Some)
        .map_err(|_| protocol("bad length"))
}

/// Appends one RESP bulk string made of `parts` to `buf`.
pub(crate) fn bulk(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.push(b'$');
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.extend_from_slice(b"\r\n");
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.extend_from_slice(b"\r\n");
}

impl RespConn {
    /// Connects (bounded by `timeout`), sets read and write timeouts, authenticates and selects
    /// the database.
    pub(crate) fn connect(to: &Endpoint, timeout: Duration) -> Result<Self, BackendError> {
        let unavailable = |e: io::Error| io_error(&e);
        let addrs = (to.host.as_str(), to.port)
            .to_socket_addrs()
            .map_err(unavailable)?;
        let mut last = BackendError::Unavailable(format!("{}: no address", to.host));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let mut conn = Self {
                        stream,
                        buf: vec![0u8; READ_BUF].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        out: Vec::new(),
                    };
                    conn.setup(timeout).map_err(unavailable)?;
                    return conn.handshake(to);
                }
                Err(e) => last = io_error(&e),
            }
        }
        Err(last)
    }

    fn setup(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_nodelay(true)?;
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))
    }

    fn handshake(mut self, to: &Endpoint) -> Result<Self, BackendError> {
        let mut commands: Vec<Vec<&[u8]>> = Vec::new();
        let db = to.db.to_string();
        if let Some((user, password)) = &to.auth {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = user {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            commands.push(auth);
        }
        if to.db != 0 {
            commands.push(vec![b"SELECT", db.as_bytes()]);
        }
        for args in commands {
            self.out
                .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in &args {
                bulk(&mut self.out, &[a]);
            }
            self.send().map_err(|e| io_error(&e))?;
            match self.head().map_err(|e| io_error(&e))? {
                Head::Simple => {}
                Head::Error(msg) => return Err(BackendError::Other(msg)),
                other => {
                    return Err(BackendError::Other(format!(
                        "unexpected reply to {:?}: {other:?}",
                        String::from_utf8_lossy(args[0])
                    )));
                }
            }
        }
        Ok(self)
    }

    /// Writes the request in [`RespConn::out`] and clears it.
    pub(crate) fn send(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result
    }

    /// Refills the read buffer (which must be empty of unread bytes).
    fn fill(&mut self) -> io::Result<()> {
        let n = self.stream.read(&mut self.buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.start = 0;
        self.end = n;
        Ok(())
    }

    /// Reads one reply's first line.
    fn head(&mut self) -> io::Result<Head> {
        let mut line: Vec<u8> = Vec::new();
        loop {
            if self.start == self.end {
                self.fill()?;
            }
            let avail = &self.buf[self.start..self.end];
            if let Some(nl) = avail.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&avail[..nl]);
                self.start += nl + 1;
                break;
            }
            line.extend_from_slice(avail);
            self.start = self.end;
            if line.len() > MAX_LINE {
                return Err(protocol("reply line too long"));
            }
        }
        let Some(b'\r') = line.pop() else {
            return Err(protocol("line without CR"));
        };
        let (&kind, rest) = line.split_first().ok_or_else(|| protocol("empty line"))?;
        Ok(match kind {
            b'$' => Head::Bulk(parse_len(rest)?),
            b'*' => Head::Array(parse_len(rest)?),
            b'+' => Head::Simple,
            b':' => Head::Int(
                std::str::from_utf8(rest)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| protocol("bad integer"))?,
            ),
            b'-' => Head::Error(String::from_utf8_lossy(rest).into_owned()),
            _ => return Err(protocol("unknown reply type")),
        })
    }

    /// Fills `dst` from the buffered bytes, then straight from the socket.
    fn read_exact_into(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.start).min(dst.len());
        dst[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        let rest = &mut dst[buffered..];
        if rest.is_empty() {
            return Ok(());
        }
        if rest.len() < READ_BUF {
            // Small remainders go through the buffer (fewer reads for small values).
            let mut at = 0;
            while at < rest.len() {
                self.fill()?;
                let n = (self.end - self.start).min(rest.len() - at);
                rest[at..at + n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                at += n;
            }
            return Ok(());
        }
        self.stream.read_exact(rest)
    }

    /// Skips `n` bytes of the reply.
    fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let k = (self.end - self.start).min(n);
            self.start += k;
            n -= k;
        }
        Ok(())
    }

    /// Reads one bulk reply into `sink` as value `i`. An error reply is returned as
    /// `Ok(Err(message))` (the connection stays in step); I/O and protocol errors as `Err`.
    fn bulk_into(&mut self, i: usize, sink: &mut dyn ValueSink) -> io::Result<Result<(), String>> {
        let len = match self.head()? {
            Head::Bulk(len) => len,
            Head::Error(msg) => return Ok(Err(msg)),
            other => return Err(protocol(&format!("expected a bulk string, got {other:?}"))),
        };
        sink.start(i, len);
        let Some(len) = len else {
            return Ok(Ok(()));
        };
        let mut at = 0;
        while at < len {
            let region = sink.region(i);
            if region.is_empty() {
                break;
            }
            let n = region.len().min(len - at);
            self.read_exact_into(&mut region[..n])?;
            sink.filled(i, n);
            at += n;
        }
        self.skip(len - at + 2)?;
        Ok(Ok(()))
    }

    /// Reads `count` bulk replies (pipelined `GET`s) into `sink`, every one even after an
    /// error reply; the first error reply is the result.
    pub(crate) fn bulks_into(
        &mut self,
        count: usize,
        sink: &mut dyn ValueSink,
    ) -> io::Result<Result<(), String>> {
        let mut first = Ok(());
        for i in 0..count {
            if let Err(msg) = self.bulk_into(i, sink)? {
                if first.is_ok() {
                    first = Err(msg);
                }
            }
        }
        Ok(first)
    }

    /// Reads `count` integer replies (pipelined `EXISTS`), every one even after an error
    /// reply; the first error reply is the result.
    pub(crate) fn ints(&mut self, count: usize) -> io::Result<Result<Vec<i64>, String>> {
        let mut out = Vec::with_capacity(count);
        let mut first = None;
        for _ in 0..count {
            match self.head()? {
                Head::Int(n) => out.push(n),
                Head::Error(msg) => {
                    first.get_or_insert(msg);
                }
                other => return Err(protocol(&format!("expected an integer, got {other:?}"))),
            }
        }
        Ok(first.map_or(Ok(out), Err))
    }

    /// Reads an array reply of `count` bulk strings (`MGET`) into `sink`.
    pub(crate) fn array_into(
        &mut self,
        count: usize,
        sink: &mut dyn ValueSink,
    ) -> io::Result<Result<(), String>> {
        match self.head()? {
            Head::Array(Some(n)) if n == count => self.bulks_into(count, sink),
            Head::Error(msg) => Ok(Err(msg)),
            other => Err(protocol(&format!(
                "expected an array of {count}, got {other:?}"
            ))),
        }
    }
}
