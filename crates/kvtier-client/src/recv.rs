//! [`FrameIn`]: the blocking client's receive side, reading whole frames from a `Read`.
//!
//! Small frames are read through one reusable 64 KiB staging buffer (few syscalls, one small
//! copy out into the frame's own [`Bytes`]). A frame longer than 16 KiB (a GET reply with
//! blocks) gets its own buffer of exactly its length: the bytes already staged are moved
//! there and the rest is read from the socket straight into it, so block bytes are never
//! copied after the kernel's copy, and the blocks handed out are windows on that buffer.
//!
//! Every read can fail (a timeout, an interrupted call) without losing the stream's place:
//! the partial frame stays here and the next call resumes it. After an I/O error other than a
//! timeout, an end of stream or a [`ProtoError`] the owner closes the connection.
//!
//! ```text
//!   staging: [consumed | start .. end (received, not yet a frame) | free]
//!   large:   Some(header, payload filled up to its len)   while a large frame is read
//! ```

use std::io::{self, Read};

use bytes::Bytes;
use kvtier_proto::{FrameHeader, HEADER_LEN, ProtoError};

use crate::reply::Frame;

/// Size of the staging buffer.
const STAGE: usize = 64 << 10;
/// Frames longer than this are read into their own buffer. Below `STAGE`, so a small frame
/// always fits in the staging buffer once it is compacted.
const LARGE: usize = 16 << 10;

/// Why no frame came.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The source failed (timeouts included: then the state is intact and a retry resumes).
    Io(io::Error),
    /// A frame header is invalid: the stream cannot be trusted past it.
    Proto(ProtoError),
    /// The source ended; `mid_frame` when part of a frame had been received.
    Eof {
        /// Whether a frame was cut.
        mid_frame: bool,
    },
}

/// A frame in the middle of being read into its own buffer.
struct Large {
    header: FrameHeader,
    payload: Vec<u8>,
}

/// Receive state of one connection.
pub(crate) struct FrameIn {
    max_frame_bytes: u32,
    stage: Vec<u8>,
    start: usize,
    end: usize,
    large: Option<Large>,
}

impl std::fmt::Debug for FrameIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameIn")
            .field("staged", &(self.end - self.start))
            .field(
                "large",
                &self.large.as_ref().map(|l| (l.header.len, l.payload.len())),
            )
            .finish()
    }
}

impl FrameIn {
    /// An empty receive state refusing frames longer than `max_frame_bytes`.
    pub(crate) fn new(max_frame_bytes: u32) -> Self {
        FrameIn {
            max_frame_bytes,
            stage: vec![0; STAGE],
            start: 0,
            end: 0,
            large: None,
        }
    }

    /// Reads until one whole frame is here and returns it.
    pub(crate) fn read_frame<R: Read>(&mut self, src: &mut R) -> Result<Frame, RecvError> {
        loop {
            if let Some(frame) = self.finish_large(src)? {
                return Ok(frame);
            }
            if let Some(frame) = self.frame_from_stage()? {
                return Ok(frame);
            }
            if self.large.is_some() {
                continue;
            }
            if self.stage.len() - self.end < LARGE {
                self.stage.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let free = self.stage.get_mut(self.end..).unwrap_or_default();
            match src.read(free) {
                Ok(0) => {
                    return Err(RecvError::Eof {
                        mid_frame: self.end > self.start,
                    });
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// Completes the large frame in progress, if any.
    fn finish_large<R: Read>(&mut self, src: &mut R) -> Result<Option<Frame>, RecvError> {
        let Some(large) = self.large.as_mut() else {
            return Ok(None);
        };
        let want = large.header.len as usize - HEADER_LEN;
        while large.payload.len() < want {
            let missing = (want - large.payload.len()) as u64;
            // Reads into the spare capacity (no zero-fill); on error the bytes read so far
            // stay in `payload`, so a retry resumes.
            match Read::take(&mut *src, missing).read_to_end(&mut large.payload) {
                Ok(0) => return Err(RecvError::Eof { mid_frame: true }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
        Ok(self.large.take().map(|large| Frame {
            header: large.header,
            payload: Bytes::from(large.payload),
        }))
    }

    /// The next frame if the staging buffer holds all of it; starts a large frame if it is
    /// one.
    fn frame_from_stage(&mut self) -> Result<Option<Frame>, RecvError> {
        let data = self.stage.get(self.start..self.end).unwrap_or_default();
        let Some(header) =
            FrameHeader::parse_limited(data, self.max_frame_bytes).map_err(RecvError::Proto)?
        else {
            return Ok(None);
        };
        let len = header.len as usize;
        if data.len() >= len {
            let payload = Bytes::copy_from_slice(data.get(HEADER_LEN..len).unwrap_or_default());
            self.start += len;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return Ok(Some(Frame { header, payload }));
        }
        if len > LARGE {
            // The declared length is within the configured frame limit.
            let mut payload = Vec::with_capacity(len - HEADER_LEN);
            payload.extend_from_slice(data.get(HEADER_LEN..).unwrap_or_default());
            self.start = 0;
            self.end = 0;
            self.large = Some(Large { header, payload });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use kvtier_proto::{Limits, Request, Response, WriteBuf};

    use super::*;

    /// Hands out at most `chunk` bytes per read, and a timeout every other read when `stall`.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        stall: bool,
        calls: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.stall && self.calls % 2 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = (self.data.len() - self.at).min(self.chunk).min(out.len());
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frames() -> Vec<u8> {
        let big = vec![7u8; 100_000];
        let mut out = WriteBuf::new();
        let limits = Limits::default();
        Request::Stats.encode(1, &limits, &mut out).unwrap();
        Response::Pong(&big).encode(2, &limits, &mut out).unwrap();
        Request::Ping(b"tail").encode(3, &limits, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn frames_come_whole_across_chunks_and_timeouts() {
        for (chunk, stall) in [(1, false), (7, true), (5000, true), (1 << 20, false)] {
            let mut src = Trickle {
                data: frames(),
                at: 0,
                chunk,
                stall,
                calls: 0,
            };
            let mut inbox = FrameIn::new(Limits::DEFAULT_MAX_FRAME_BYTES);
            let mut got = Vec::new();
            while got.len() < 3 {
                match inbox.read_frame(&mut src) {
                    Ok(f) => got.push(f),
                    Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("chunk {chunk}: {e:?}"),
                }
            }
            let ids: Vec<u64> = got.iter().map(Frame::id).collect();
            assert_eq!(ids, [1, 2, 3], "chunk {chunk}");
            assert_eq!(got[1].payload.len(), 100_000);
            assert!(got[1].payload.iter().all(|b| *b == 7));
            assert_eq!(&got[2].payload[..], b"tail");
            let end = loop {
                match inbox.read_frame(&mut src) {
                    Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => break other,
                }
            };
            assert!(matches!(end, Err(RecvError::Eof { mid_frame: false })));
        }
    }

    #[test]
    fn a_cut_frame_and_a_bad_header_are_errors() {
        let mut data = frames();
        data.truncate(16 + 16 + 50_000);
        let mut src = Trickle {
            data,
            at: 0,
            chunk: 4096,
            stall: false,
            calls: 0,
        };
        let mut inbox = FrameIn::new(Limits::DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(inbox.read_frame(&mut src).unwrap().id(), 1);
        assert!(matches!(
            inbox.read_frame(&mut src),
            Err(RecvError::Eof { mid_frame: true })
        ));

        let mut inbox = FrameIn::new(1024);
        let mut src = Trickle {
            data: frames()[16..].to_vec(), // starts at the 100 kB frame: over 1024
            at: 0,
            chunk: 4096,
            stall: false,
            calls: 0,
        };
        assert!(matches!(
            inbox.read_frame(&mut src),
            Err(RecvError::Proto(ProtoError::FrameTooLarge { .. }))
        ));
    }
}
