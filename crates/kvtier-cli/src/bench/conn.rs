//! One client connection as the driver sees it: send a tagged request, receive a tagged
//! outcome. Implementations: [`RespConn`](super::resp::RespConn) (any Redis server, kvtier's
//! RESP port) and [`RawConn`](super::raw::RawConn) (plain loopback TCP, the ceiling).
//!
//! Requests are written at once (one vectored write per request: the block is never copied
//! into a send buffer); replies are read into one reusable buffer per connection.

use std::io::{self, IoSlice, Read, Write};

use super::workload::Op;

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served; `bytes` of block data moved (sent for a PUT, received for a GET).
    Done {
        /// Block bytes moved by this request.
        bytes: u64,
    },
    /// A GET of a block the server does not hold, or a MATCH that found nothing.
    Miss,
    /// The server answered with an error, or with a block that is not the one asked for.
    Failed(String),
}

/// A pipelined connection: many requests may be in flight.
pub trait Conn: Send {
    /// Sends `op`, tagged `tag`, on the wire now.
    ///
    /// # Errors
    ///
    /// The socket's error.
    fn send(&mut self, tag: u64, op: Op) -> io::Result<()>;

    /// Waits for the next reply.
    ///
    /// # Errors
    ///
    /// The socket's error, or `InvalidData` for a reply that cannot be parsed.
    fn recv(&mut self) -> io::Result<(u64, Outcome)>;
}

/// `write_all` for several slices, with as few `writev` calls as the kernel allows.
pub fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Small requests that need not go out one syscall each: [`cork`](Self::cork) holds them
/// until the connection writes something else or is about to wait for a reply (any `read`),
/// then they leave in one write. A pipelined client that answers each reply with a new
/// request thus writes once per batch of replies it has read, as redis-benchmark does.
#[derive(Debug)]
pub struct CorkedStream<S> {
    stream: S,
    out: Vec<u8>,
}

/// Corked bytes past this are written at once.
const CORK_LIMIT: usize = 64 << 10;

impl<S: Read + Write> CorkedStream<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            out: Vec::new(),
        }
    }

    /// The wrapped stream.
    #[cfg(test)]
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Holds `bytes` until the next read or write (or until 64 KiB are held).
    ///
    /// # Errors
    ///
    /// The socket's error when the held bytes had to be written.
    pub fn cork(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= CORK_LIMIT {
            self.uncork()?;
        }
        Ok(())
    }

    fn uncork(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for CorkedStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.uncork()?;
        self.stream.read(buf)
    }
}

impl<S: Read + Write> Write for CorkedStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.uncork()?;
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.uncork()?;
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.uncork()?;
        self.stream.flush()
    }
}

/// A read buffer: bytes `start..end` of `buf` are received and not yet consumed.
#[derive(Debug, Default)]
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// The received, unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads until at least `want` unconsumed bytes are here (one read may bring more).
    ///
    /// # Errors
    ///
    /// The socket's error; `UnexpectedEof` when the peer closes first.
    pub fn fill(&mut self, r: &mut impl Read, want: usize) -> io::Result<()> {
        if self.end - self.start >= want {
            return Ok(());
        }
        if self.start + want > self.buf.len() {
            // Move the unconsumed bytes to the front, then grow to fit (64 KiB at least).
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if want > self.buf.len() {
                self.buf.resize(want.max(64 << 10), 0);
            }
        }
        while self.end - self.start < want {
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads at least one more byte.
    ///
    /// # Errors
    ///
    /// As [`InBuf::fill`].
    pub fn fill_more(&mut self, r: &mut impl Read) -> io::Result<()> {
        let have = self.end - self.start;
        self.fill(r, have + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corked_bytes_leave_before_a_read_or_another_write() {
        let mut s = CorkedStream::new(io::Cursor::new(Vec::new()));
        s.cork(b"GET a;").unwrap();
        s.cork(b"GET b;").unwrap();
        assert!(s.get_ref().get_ref().is_empty(), "held");
        s.write_all(b"PUT c;").unwrap();
        assert_eq!(s.get_ref().get_ref(), b"GET a;GET b;PUT c;");
        s.cork(b"GET d;").unwrap();
        let mut buf = [0u8; 4];
        let _ = s.read(&mut buf).unwrap();
        assert_eq!(s.get_ref().get_ref(), b"GET a;GET b;PUT c;GET d;");
        s.cork(&vec![b'x'; CORK_LIMIT]).unwrap();
        assert_eq!(
            s.get_ref().get_ref().len(),
            24 + CORK_LIMIT,
            "a full cork goes at once"
        );
    }

    /// A reader that hands out at most `chunk` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(self.chunk).min(out.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn inbuf_fills_consumes_and_reports_eof() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut r = Trickle {
            data: &data,
            chunk: 7000,
        };
        let mut b = InBuf::default();
        b.fill(&mut r, 10).unwrap();
        assert_eq!(&b.data()[..10], &data[..10]);
        b.consume(10);
        b.fill(&mut r, 150_000).unwrap();
        assert_eq!(&b.data()[..150_000], &data[10..150_010]);
        b.consume(150_000);
        b.fill(&mut r, 49_990).unwrap();
        assert_eq!(b.data(), &data[150_010..]);
        b.consume(49_990);
        assert!(b.data().is_empty());
        let err = b.fill(&mut r, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn vectored_writes_survive_short_writes() {
        struct Short(Vec<u8>);
        impl Write for Short {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let n = b.len().min(3);
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Short(Vec::new());
        write_all_vectored(
            &mut w,
            &mut [
                IoSlice::new(b"hello "),
                IoSlice::new(b""),
                IoSlice::new(b"world"),
            ],
        )
        .unwrap();
        assert_eq!(w.0, b"hello world");
    }
}
