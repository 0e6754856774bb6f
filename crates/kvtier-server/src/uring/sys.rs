//! The only `unsafe` of kvtier-server: io_uring submissions, whose memory the kernel uses
//! after the submitting call returns.
//!
//! The module's safe API passes *ownership* of every buffer an operation touches into an
//! operation table (`ops`) at submission, and hands it back with the completion: a recv's
//! target buffer, a writev's segments and iovec array, the eventfd read's 8 bytes. The caller
//! cannot reach that memory, move it or free it while the kernel may use it.
//!
//! # Invariants
//!
//! - Every submitted entry's `user_data` is the key of its entry in `ops`; the entry is
//!   removed only when that key's completion is reaped, so a buffer lives at least until the
//!   kernel is done with it. Keys are never reused while their operation is in flight.
//! - Memory passed to the kernel is heap memory owned by the op entry (`Vec`/boxed contents),
//!   which does not move when the entry moves. Guarded response segments are boxed trait
//!   objects whose `as_ref()` memory stays valid while the box lives (they are only read
//!   through `&`), so a writev's iovecs stay valid while its entry lives.
//! - On drop, operations still in flight are cancelled and reaped for up to a second; if some
//!   never complete, the table is leaked, never freed under the kernel.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};
use slab::Slab;

use crate::conn::ReadTarget;
use crate::service::Segment;

/// What a completed operation hands back.
pub(crate) enum Owned {
    /// A recv's target buffer (result: bytes read, 0 at EOF, or -errno).
    Recv(ReadTarget),
    /// A writev's segments and the offset into the first (result: bytes written or -errno).
    Write(Vec<Segment>, usize),
    /// An accepted socket (`None` if the accept failed).
    Accepted(Option<OwnedFd>),
    /// The wake-up eventfd was read.
    Wake,
    /// A cancellation request finished.
    Cancel,
}

/// One reaped completion.
pub(crate) struct Done {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// The kernel's result: `>= 0` success, `-errno` failure.
    pub result: i32,
    /// The operation's memory, back to the caller.
    pub owned: Owned,
}

enum OpData {
    Recv(ReadTarget),
    Write {
        segments: Vec<Segment>,
        offset: usize,
        // Read by the kernel, never by Rust after submission.
        _iov: Vec<libc::iovec>,
    },
    Accept,
    Wake {
        // Written by the kernel, never read: the counter's value does not matter.
        _counter: Box<[u8; 8]>,
    },
    Cancel,
}

struct Op {
    tag: u64,
    data: OpData,
}

/// An io_uring instance and the memory of its in-flight operations.
pub(crate) struct Ring {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    ops: Slab<Op>,
}

/// Whether this kernel lets us create a ring with the operations the backend uses.
pub(crate) fn probe() -> io::Result<()> {
    let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder().build(8)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::Accept::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Writev::CODE, "writev"),
        (opcode::Read::CODE, "read"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring lacks {name}"),
            ));
        }
    }
    Ok(())
}

impl Ring {
    /// A ring used only by the calling thread: completion work runs when that thread asks
    /// for completions (`DEFER_TASKRUN`) instead of interrupting it; kernels without it
    /// (before 6.1) get a plain ring.
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| IoUring::<squeue::Entry, cqueue::Entry>::builder().build(entries))?;
        Ok(Self {
            ring,
            ops: Slab::new(),
        })
    }

    /// Operations submitted and not yet reaped.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Receives into `target`'s spare bytes.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>, mut target: ReadTarget, tag: u64) {
        let spare = target.spare_mut();
        let (ptr, len) = (
            spare.as_mut_ptr(),
            spare.len().min(u32::MAX as usize) as u32,
        );
        let entry = opcode::Recv::new(types::Fd(fd.as_raw_fd()), ptr, len).build();
        self.push(entry, tag, OpData::Recv(target));
    }

    /// Writes `segments` (the first from `offset`) with one writev.
    pub(crate) fn writev(
        &mut self,
        fd: BorrowedFd<'_>,
        segments: Vec<Segment>,
        offset: usize,
        tag: u64,
    ) {
        let iov: Vec<libc::iovec> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bytes = if i == 0 {
                    &s.bytes()[offset..]
                } else {
                    s.bytes()
                };
                libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                }
            })
            .collect();
        let entry =
            opcode::Writev::new(types::Fd(fd.as_raw_fd()), iov.as_ptr(), iov.len() as u32).build();
        self.push(
            entry,
            tag,
            OpData::Write {
                segments,
                offset,
                _iov: iov,
            },
        );
    }

    /// Accepts one connection on `listener` (close-on-exec, blocking mode).
    pub(crate) fn accept(&mut self, listener: BorrowedFd<'_>, tag: u64) {
        let entry = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        self.push(entry, tag, OpData::Accept);
    }

    /// Reads the wake-up eventfd's 8-byte counter.
    pub(crate) fn read_wake(&mut self, eventfd: BorrowedFd<'_>, tag: u64) {
        let mut buf = Box::new([0u8; 8]);
        let entry = opcode::Read::new(types::Fd(eventfd.as_raw_fd()), buf.as_mut_ptr(), 8).build();
        self.push(entry, tag, OpData::Wake { _counter: buf });
    }

    /// Asks the kernel to cancel every in-flight operation submitted with `tag`.
    pub(crate) fn cancel_tag(&mut self, tag: u64) {
        let keys: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| op.tag == tag && !matches!(op.data, OpData::Cancel))
            .map(|(k, _)| k as u64)
            .collect();
        for key in keys {
            let entry = opcode::AsyncCancel::new(key).build();
            self.push(entry, u64::MAX, OpData::Cancel);
        }
    }

    fn push(&mut self, entry: squeue::Entry, tag: u64, data: OpData) {
        let key = self.ops.insert(Op { tag, data });
        let entry = entry.user_data(key as u64);
        loop {
            // SAFETY: the entry's memory (buffer, iovecs and what they point to, the eventfd
            // counter) is owned by `self.ops[key]`, heap-allocated and not moved or touched
            // until the completion with user_data `key` is reaped in `complete` (module
            // invariants); fds are valid now, and the kernel holds its own file reference.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // Submission queue full: hand what is queued to the kernel, then retry.
            if let Err(e) = self.ring.submit() {
                tracing::warn!(%e, "io_uring submit failed while the queue was full");
                std::thread::yield_now();
            }
        }
    }

    /// Submits what is queued and waits for at least `want` completions, or `timeout`.
    pub(crate) fn submit_and_wait(
        &mut self,
        want: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let result = match timeout {
            Some(t) if want > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reaps every available completion into `out`.
    pub(crate) fn complete(&mut self, out: &mut Vec<Done>) {
        for cqe in self.ring.completion() {
            let key = cqe.user_data() as usize;
            if !self.ops.contains(key) {
                continue;
            }
            let op = self.ops.remove(key);
            let result = cqe.result();
            let owned = match op.data {
                OpData::Recv(target) => Owned::Recv(target),
                OpData::Write {
                    segments, offset, ..
                } => Owned::Write(segments, offset),
                OpData::Accept => Owned::Accepted((result >= 0).then(|| {
                    // SAFETY: a successful accept's result is a new file descriptor that
                    // nothing else owns.
                    unsafe { OwnedFd::from_raw_fd(result) }
                })),
                OpData::Wake { .. } => Owned::Wake,
                OpData::Cancel => Owned::Cancel,
            };
            out.push(Done {
                tag: op.tag,
                result,
                owned,
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        let keys: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| !matches!(op.data, OpData::Cancel))
            .map(|(k, _)| k as u64)
            .collect();
        for key in keys {
            self.push(
                opcode::AsyncCancel::new(key).build(),
                u64::MAX,
                OpData::Cancel,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut done = Vec::new();
        while !self.ops.is_empty() && Instant::now() < deadline {
            if self
                .submit_and_wait(1, Some(Duration::from_millis(50)))
                .is_err()
            {
                break;
            }
            self.complete(&mut done);
            done.clear();
        }
        if !self.ops.is_empty() {
            tracing::warn!(
                in_flight = self.ops.len(),
                "io_uring operations did not finish; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.ops));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ReadTarget;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn wait_one(ring: &mut Ring) -> Done {
        let mut out = Vec::new();
        while out.is_empty() {
            ring.submit_and_wait(1, Some(Duration::from_secs(5)))
                .unwrap();
            ring.complete(&mut out);
        }
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    #[test]
    fn accept_recv_writev_roundtrip_hands_buffers_back() {
        if probe().is_err() {
            eprintln!("io_uring unavailable; skipped");
            return;
        }
        let mut ring = Ring::new(16).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept(listener.as_fd(), 7);
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let done = wait_one(&mut ring);
        assert_eq!(done.tag, 7);
        let Owned::Accepted(Some(fd)) = done.owned else {
            panic!("accept failed: {}", done.result);
        };
        let server = TcpStream::from(fd);

        client.write_all(b"hello uring").unwrap();
        ring.recv(
            server.as_fd(),
            ReadTarget::Buffer {
                buf: vec![0; 64],
                at: 3,
            },
            8,
        );
        let done = wait_one(&mut ring);
        assert_eq!((done.tag, done.result), (8, 11));
        let Owned::Recv(ReadTarget::Buffer { buf, at }) = done.owned else {
            panic!("wrong buffer back");
        };
        assert_eq!((&buf[3..14], at), (&b"hello uring"[..], 3));

        let segments = vec![
            Segment::Owned(b"xxab".to_vec()),
            Segment::Guarded(Box::new(b"cdef".to_vec())),
        ];
        ring.writev(server.as_fd(), segments, 2, 9);
        let done = wait_one(&mut ring);
        assert_eq!((done.tag, done.result), (9, 6));
        let mut back = [0u8; 6];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abcdef");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn dropping_the_ring_cancels_pending_operations() {
        if probe().is_err() {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut ring = Ring::new(8).unwrap();
        // A recv that never completes (the client sends nothing) and an accept nobody hits.
        ring.recv(
            server.as_fd(),
            ReadTarget::Buffer {
                buf: vec![0; 1 << 16],
                at: 0,
            },
            1,
        );
        ring.accept(listener.as_fd(), 2);
        ring.submit_and_wait(0, None).unwrap();
        assert_eq!(ring.in_flight(), 2);
        drop(ring); // must cancel and reap both before the buffer is freed
        drop((client, server));
    }

    #[test]
    fn cancel_by_tag_completes_the_operation() {
        if probe().is_err() {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = Ring::new(8).unwrap();
        ring.accept(listener.as_fd(), 5);
        ring.submit_and_wait(0, None).unwrap();
        ring.cancel_tag(5);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ring.in_flight() > 0 && Instant::now() < deadline {
            ring.submit_and_wait(1, Some(Duration::from_millis(100)))
                .unwrap();
            ring.complete(&mut out);
        }
        let accept = out.iter().find(|d| d.tag == 5).expect("accept completion");
        assert_eq!(accept.result, -libc::ECANCELED);
        assert!(matches!(accept.owned, Owned::Accepted(None)));
    }
}
