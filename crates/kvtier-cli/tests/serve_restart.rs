//! `kvtier serve` as a process: every block whose PUT was acknowledged as durable is served
//! byte for byte after `kill -9` and a restart on the same data directory; after SIGTERM the
//! process exits 0 and the blocks that were still only in host memory are on disk too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kvtier_core::SequenceHash;
use kvtier_proto::{
    BlockResult, FrameReader, HashList, Limits, PutBlocks, PutStatus, Request, Response, TierId,
    WriteBuf,
};

mod common;

use common::ServeProcess;

const BLOCK: usize = 4096;

/// Starts `kvtier serve` on a free port over `dir` (16 MiB of disk), returns once it listens.
fn serve(dir: &std::path::Path) -> ServeProcess {
    serve_with(dir, &[])
}

/// [`serve`] with more flags.
fn serve_with(dir: &std::path::Path, extra: &[&str]) -> ServeProcess {
    ServeProcess::start("127.0.0.1:0", dir, "16MiB", extra)
}

/// SIGTERM, and the graceful stop exits 0.
fn stop_gracefully(served: &mut ServeProcess) {
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut served.child);
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}

fn pattern(hash: SequenceHash) -> Vec<u8> {
    let seed = hash.as_u128().to_le_bytes();
    (0..BLOCK).map(|i| seed[i % 16] ^ (i / 16) as u8).collect()
}

struct Conn {
    stream: TcpStream,
    reader: FrameReader,
    limits: Limits,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let limits = Limits::default();
        Self {
            stream,
            reader: FrameReader::new(limits),
            limits,
        }
    }

    fn call<T>(&mut self, request: &Request<'_>, check: impl FnOnce(Response<'_>) -> T) -> T {
        let mut out = WriteBuf::new();
        request.encode(1, &self.limits, &mut out).unwrap();
        self.stream.write_all(&out.to_vec()).unwrap();
        loop {
            if let Some(frame) = self.reader.next_frame().unwrap() {
                return check(frame.response(&self.limits).unwrap());
            }
            assert!(
                self.reader.read_from(&mut self.stream).unwrap() > 0,
                "closed"
            );
        }
    }

    fn put(&mut self, hashes: &[SequenceHash], durable: bool) {
        let bytes: Vec<Vec<u8>> = hashes.iter().map(|&h| pattern(h)).collect();
        let slices: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let blocks = PutBlocks::new(hashes, &slices).unwrap();
        self.call(&Request::Put { durable, blocks }, |r| {
            assert_eq!(r, Response::Put(vec![PutStatus::Stored; hashes.len()]));
        });
    }

    /// How many of `hashes` come back with exactly their bytes (and from which tier).
    fn intact(&mut self, hashes: &[SequenceHash]) -> (usize, usize) {
        self.call(&Request::Get(HashList::new(hashes)), |r| {
            let Response::Get(got) = r else {
                panic!("not a GET reply: {r:?}")
            };
            let (mut ok, mut from_disk) = (0, 0);
            for (r, h) in got.iter().zip(hashes) {
                if let BlockResult::Found { tier, bytes } = r {
                    assert_eq!(
                        bytes,
                        pattern(*h).as_slice(),
                        "a block came back with other bytes"
                    );
                    ok += 1;
                    from_disk += usize::from(tier == TierId::G3);
                }
            }
            (ok, from_disk)
        })
    }
}

fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut h = SequenceHash::root(seed);
    let mut out = vec![h];
    for i in 1..n as u64 {
        h = SequenceHash::child_of(h, seed * 1_000_000 + i);
        out.push(h);
    }
    out
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "kvtier serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn durable_puts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve(dir.path());
    let mut c = Conn::new(served.addr);
    let durable = chain(1, 100);
    for chunk in durable.chunks(10) {
        c.put(chunk, true);
    }
    // More than host memory holds (256 blocks), not durable: evicts durable ones from G2.
    c.put(&chain(2, 200), false);
    served.child.kill().unwrap(); // SIGKILL
    served.child.wait().unwrap();

    let mut again = serve(dir.path());
    let mut c = Conn::new(again.addr);
    let (ok, from_disk) = c.intact(&durable);
    assert_eq!(ok, 100, "every acknowledged durable block is back");
    assert_eq!(from_disk, 100, "host memory starts empty: all from disk");
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

#[test]
fn sigterm_exits_zero_and_persists_what_host_memory_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve(dir.path());
    let mut c = Conn::new(served.addr);
    let blocks = chain(3, 64);
    c.put(&blocks, false);
    drop(c);
    stop_gracefully(&mut served);

    let mut again = serve(dir.path());
    let mut c = Conn::new(again.addr);
    assert_eq!(
        c.intact(&blocks),
        (64, 64),
        "written through to disk before exit"
    );
    let mut buf = [0u8; 1];
    let _ = c.stream.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = c.stream.read(&mut buf);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}

/// Write-back copies blocks to disk only on eviction; a graceful stop writes the blocks still
/// in host memory (the policy must not lose them at a planned restart).
#[test]
fn sigterm_under_write_back_writes_host_blocks_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_with(dir.path(), &["--write-policy", "write_back"]);
    let mut c = Conn::new(served.addr);
    let blocks = chain(4, 100); // 100 blocks of 4 KiB: 64 fit in host memory
    c.put(&blocks[..40], false);
    drop(c);
    stop_gracefully(&mut served);

    let mut again = serve_with(dir.path(), &["--write-policy", "write_back"]);
    let mut c = Conn::new(again.addr);
    assert_eq!(
        c.intact(&blocks[..40]),
        (40, 40),
        "written back at the stop"
    );
    let _ = again.child.kill();
    again.child.wait().unwrap();
}
