//! The real vLLM ingestion path, end to end: msgspec-shaped msgpack batches published on a
//! ZeroMQ PUB socket, consumed by a [`VllmSource`] (decode, sequence tracking, re-hashing) and
//! applied to a [`Router`] — and its in-process parts, for profiles.
//!
//! The stream is what a busy engine publishes: batches of 64 `BlockStored` events, encoded the
//! way vLLM's msgspec encoder does (`array_like` batch `[ts, events, rank]`, tagged positional
//! events, 32-byte `bytes` hashes, block size 16, minimal-width token ids). Two shapes:
//!
//! - `1-block`: decode steps, one block per event, each the child of the previous one (chains
//!   of 32 blocks, a batch holds two);
//! - `32-block`: prefills, one whole 32-block chain per event.
//!
//! Every block is distinct (its hash and first token carry a counter), so the index grows by
//! one block per block published.
//!
//! Groups (throughput in blocks per second, on one core):
//!
//! - `decode`: bytes to [`VllmBatch`] with a [`VllmDecoder`] (each batch given back to it,
//!   as the source does), over 16 batches in a ring.
//! - `in_process`: the ZeroMQ-less ceiling on one thread: make the batch (a copy and a few
//!   patched bytes), decode, convert ([`VllmConverter`]), apply to a [`Router`].
//! - `zmq`: the whole path. A publisher thread sends the pre-encoded batches as fast as its
//!   TCP socket takes them, as a minimal ZeroMQ PUB peer on 127.0.0.1 (see [`Publisher`] for
//!   why not the `zeromq` crate's PUB socket, which drops what its peer cannot take); the
//!   consumer — a [`VllmSource`] with its `zeromq` SUB socket sending into a queue as
//!   `RouterService::spawn_vllm` does, and a loop applying 64 messages per receive to a
//!   [`Router`] as the service's ingest task does (without its lock) — runs on a
//!   `current_thread` runtime, so on one core. Also
//!   reports resident memory per indexed block: the RSS delta (`/proc/self/statm`) over
//!   indexing ~2 M blocks, divided by the blocks indexed. Each run is a fresh child process,
//!   so that no run reuses memory an earlier one freed.
//! - `memory`: the share of that memory that is the converter's map (external hash → kvtier
//!   hash): the same stream decoded and converted in a fresh child process, the messages
//!   dropped. The router's index and the rest are the difference.
//!
//! Run (`--quick` or `KVTIER_BENCH_QUICK=1`: one run of each on ~200 k blocks, a smoke test
//! for CI; `--runs N` sets the runs whose median is printed, default 5):
//!
//! ```text
//! cargo bench -p kvtier-router --bench vllm_path
//! cargo bench -p kvtier-router --bench vllm_path -- --quick
//! ```
//!
//! To profile one group, run the bench binary (the path `cargo bench --no-run` prints) as its
//! own child: `--child <zmq|in_process|memory|decode> <1-block|32-block> <blocks>`, for example
//! `perf record -F 4000 target/release/deps/vllm_path-<hash> --child zmq 1-block 2000000`
//! (the `decode` child runs for `blocks / 1e6` seconds).
//!
//! Every group prints medians of blocks per CPU-second of the consuming thread
//! (`/proc/thread-self/schedstat`: what one core really did, whatever else ran on the machine)
//! and, in brackets, per wall-clock second.
//!
//! Pass `--sized` to size the converter's map and the router's index for the whole stream up
//! front, as `kvtier router --expected-blocks-per-engine N` does
//! ([`VllmSourceBuilder::with_expected_blocks`](kvtier_router::VllmSourceBuilder::with_expected_blocks),
//! [`RouterBuilder::with_expected_blocks`](kvtier_router::RouterBuilder::with_expected_blocks)):
//! neither then grows (a growth copies every entry and faults in a new table). Their memory is
//! allocated before the clock starts and counted in the resident bytes.
//!
//! Reference figures, 2026-12-05 07:45–07:56, 2 M distinct blocks per run, blocks per
//! CPU-second, medians of 3 rounds interleaving the binaries and configurations (one run of
//! each per round, load 3.3–5.6 on the 2-core VM). "Before" is 6f34cec (which sized only
//! the converter's map with `--sized`); "now" is after the index and sources sized up front,
//! the one-shot block hash, the token loop and the converter's reuse of a batch's
//! fingerprints; "sized" is now with `--sized`, the configuration the CLI flag gives:
//!
//! | group | 1-block before | before sized | now | sized | 32-block before | before sized | now | sized |
//! |---|---:|---:|---:|---:|---:|---:|---:|---:|
//! | decode | 7.13 M | 6.78 M | 8.04 M | 7.93 M | 17.5 M | 17.6 M | 22.4 M | 22.3 M |
//! | memory (decode + convert) | 2.01 M | 2.89 M | 2.19 M | 3.36 M | 2.43 M | 4.34 M | 2.83 M | 4.77 M |
//! | in_process (+ router) | 1.47 M | 1.86 M | 1.64 M | 2.81 M | 1.67 M | 2.37 M | 1.84 M | 3.57 M |
//! | zmq (whole path) | 1.28 M | 1.58 M | 1.35 M | **2.18 M** | 1.54 M | 2.02 M | 1.52 M | **2.67 M** |
//! | zmq: resident bytes per indexed block | 126 | 127 | 126 | 127 | 127 | 128 | 128 | 127 |
//! | memory: converter's bytes per block | 50 | 51 | 50 | 51 | 51 | 51 | 51 | 51 |
//!
//! Per block, 1-block events, sized (differences of the medians): decode 126 ns, convert
//! 172 ns, router 58 ns (166 ns while its table still grew), socket, source loop and queue
//! 103 ns: 459 ns in all. The 2 M blocks/s goal (500 ns a block) is met by both shapes when
//! sized; without a size, the growth of the map and the index costs ~280 ns a block over a
//! cold start of 2 M blocks. Transparent huge pages for the map
//! (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) were slower here: on this VM a fresh 2 MiB page
//! costs more to fault in than its TLB misses save over a run.
//!
//! Resident memory per block: the converter's map is ~50 of the ~127 bytes (40-byte slots
//! grown by half at 13/16 full, so 50–75 bytes per entry depending on where the count falls;
//! ~50 when sized); the router's index is the other ~75.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvtier_events::{EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{
    INGEST_QUEUE, Router, VllmBatch, VllmConvertConfig, VllmConverter, VllmDecoder, VllmSource,
};
use tokio::sync::mpsc;

const BLOCK_SIZE: usize = 16;
const EVENTS_PER_BATCH: usize = 64;
/// Blocks per chain in the 1-block shape (two chains per batch).
const CHAIN: usize = 32;
const TOPIC: &[u8] = b"kv";
/// Messages the consumer applies per receive (the router service's ingest applies 64 per
/// write lock).
const PER_APPLY: usize = 64;

/// Blocks per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    One,
    ThirtyTwo,
}

impl Shape {
    fn blocks_per_event(self) -> usize {
        match self {
            Self::One => 1,
            Self::ThirtyTwo => 32,
        }
    }

    fn blocks_per_batch(self) -> usize {
        self.blocks_per_event() * EVENTS_PER_BATCH
    }

    fn name(self) -> &'static str {
        match self {
            Self::One => "1-block",
            Self::ThirtyTwo => "32-block",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::One, Self::ThirtyTwo]
            .into_iter()
            .find(|shape| shape.name() == s)
    }
}

// ---- msgpack, written the way msgspec writes it (minimal widths) ----

fn w_array(out: &mut Vec<u8>, n: usize) {
    match n {
        0..16 => out.push(0x90 | n as u8),
        16..65_536 => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn w_str(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 32, "fixstr only");
    out.push(0xa0 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// A 32-byte bin; returns where its bytes start.
fn w_hash(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0xc4, 32]);
    let at = out.len();
    out.extend_from_slice(&[0xab; 32]);
    at
}

fn w_uint(out: &mut Vec<u8>, v: u32) {
    match v {
        0..128 => out.push(v as u8),
        128..256 => out.extend_from_slice(&[0xcc, v as u8]),
        256..65_536 => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        _ => {
            out.push(0xce);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// One batch's bytes, and where to patch the counters that make its blocks distinct.
struct Template {
    bytes: Vec<u8>,
    /// Per block of the batch, in order: where its hash starts.
    hashes: Vec<usize>,
    /// Per parent reference: where the parent hash starts, and the block (of this batch) it is.
    parents: Vec<(usize, usize)>,
    /// Per block: where its first token's four bytes start (a uint32, value >= 65 536).
    first_tokens: Vec<usize>,
    blocks: usize,
}

impl Template {
    fn new(shape: Shape) -> Self {
        let mut t = Self {
            bytes: Vec::new(),
            hashes: Vec::new(),
            parents: Vec::new(),
            first_tokens: Vec::new(),
            blocks: shape.blocks_per_batch(),
        };
        let out = &mut t.bytes;
        w_array(out, 3);
        out.push(0xcb);
        out.extend_from_slice(&1_700_000_000.5f64.to_be_bytes());
        w_array(out, EVENTS_PER_BATCH);
        let per_event = shape.blocks_per_event();
        for e in 0..EVENTS_PER_BATCH {
            let first = e * per_event;
            // ["BlockStored", hashes, parent, tokens, block_size, lora_id, medium]
            w_array(out, 7);
            w_str(out, "BlockStored");
            w_array(out, per_event);
            for _ in 0..per_event {
                t.hashes.push(w_hash(out));
            }
            if shape == Shape::One && first % CHAIN != 0 {
                t.parents.push((w_hash(out), first - 1));
            } else {
                out.push(0xc0);
            }
            w_array(out, per_event * BLOCK_SIZE);
            for b in 0..per_event {
                out.push(0xce);
                t.first_tokens.push(out.len());
                out.extend_from_slice(&[0, 1, 0, 0]);
                for i in 1..BLOCK_SIZE {
                    // Token ids of a typical vocabulary, at their minimal widths.
                    w_uint(out, ((first + b) * 7919 + i * 104_729) as u32 % 150_000);
                }
            }
            w_uint(out, BLOCK_SIZE as u32);
            out.push(0xc0);
            w_str(out, "GPU");
        }
        out.push(0x00); // data_parallel_rank
        t
    }

    /// Batch number `k` of the stream: blocks `k * blocks .. (k + 1) * blocks`.
    fn fill(&self, k: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        let base = k * self.blocks as u64;
        let id = |block: usize| (base + block as u64).to_le_bytes();
        for (block, &at) in self.hashes.iter().enumerate() {
            out[at..at + 8].copy_from_slice(&id(block));
        }
        for &(at, block) in &self.parents {
            out[at..at + 8].copy_from_slice(&id(block));
        }
        for (block, &at) in self.first_tokens.iter().enumerate() {
            let token = 65_536u32.wrapping_add((base + block as u64) as u32);
            out[at..at + 4].copy_from_slice(&token.max(65_536).to_be_bytes());
        }
    }
}

fn created_blocks(m: &EventMessage) -> u64 {
    match &m.payload {
        Payload::Batch(b) if b.kind == EventKind::Create => b.hashes.len() as u64,
        _ => 0,
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`, nanoseconds): on
/// a shared machine, the time a core really spent, whatever else ran beside the bench.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    ns as f64 / 1e9
}

/// Runs `f`; returns its result, wall seconds and this thread's CPU seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
    let out = f();
    (
        out,
        wall.elapsed().as_secs_f64(),
        thread_cpu_seconds() - cpu,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.0} k", v / 1e3)
    }
}

// ---- in-process groups ----

fn bench_decode(shape: Shape, seconds: f64) -> Measured {
    let t = Template::new(shape);
    let batches: Vec<Vec<u8>> = (0..16)
        .map(|k| {
            let mut b = Vec::new();
            t.fill(k, &mut b);
            b
        })
        .collect();
    let mut decoder = VllmDecoder::new();
    let (blocks, wall, cpu) = timed(|| {
        let start = Instant::now();
        let mut blocks = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for b in &batches {
                let batch: VllmBatch = decoder.decode(black_box(b)).expect("valid batch");
                decoder.recycle(black_box(batch));
                blocks += t.blocks as u64;
            }
        }
        blocks
    });
    Measured {
        blocks_per_s: blocks as f64 / wall,
        blocks_per_cpu_s: blocks as f64 / cpu,
        bytes_per_block: f64::NAN,
    }
}

/// The converter's configuration: block size 16, and with `sized` the map sized for the
/// whole stream up front ([`VllmConvertConfig::with_expected_blocks`]).
fn convert_config(sized: bool, total_blocks: u64) -> VllmConvertConfig {
    let config = VllmConvertConfig::default().with_default_block_size(BLOCK_SIZE);
    if sized {
        config.with_expected_blocks(total_blocks as usize)
    } else {
        config
    }
}

/// The router: with `sized` its index sized for the whole stream up front
/// ([`kvtier_router::RouterBuilder::with_expected_blocks`]), as `kvtier router --expected-blocks-per-engine`
/// does.
fn router(sized: bool, total_blocks: u64) -> Router {
    let builder = Router::builder();
    if sized {
        builder.with_expected_blocks(total_blocks as usize).build()
    } else {
        builder.build()
    }
}

fn bench_in_process(shape: Shape, total_blocks: u64, sized: bool) -> Measured {
    // Before the converter: a map sized up front counts too.
    let rss_before = resident_bytes();
    let t = Template::new(shape);
    let config = convert_config(sized, total_blocks);
    let mut converter = VllmConverter::new(InstanceId(1), config);
    let mut router = router(sized, total_blocks);
    let mut decoder = VllmDecoder::new();
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    let batches = total_blocks.div_ceil(t.blocks as u64);
    let (created, wall, cpu) = timed(|| {
        let mut created = 0;
        for k in 0..batches {
            t.fill(k, &mut bytes);
            let batch = decoder.decode(&bytes).expect("valid batch");
            converter.apply_batch(&batch, &mut messages);
            decoder.recycle(batch);
            for m in messages.drain(..) {
                created += created_blocks(&m);
                router.apply(m);
            }
        }
        created
    });
    assert_eq!(created, batches * t.blocks as u64, "every block indexed");
    Measured {
        blocks_per_s: created as f64 / wall,
        blocks_per_cpu_s: created as f64 / cpu,
        bytes_per_block: resident_bytes().saturating_sub(rss_before) as f64 / created as f64,
    }
}

// ---- child processes: the ZeroMQ path and the converter's memory ----

/// What one run measured.
#[derive(Clone, Copy)]
struct Measured {
    /// Blocks per wall-clock second.
    blocks_per_s: f64,
    /// Blocks per second of CPU time of the consuming thread.
    blocks_per_cpu_s: f64,
    /// Resident bytes per block (NaN where not measured).
    bytes_per_block: f64,
}

/// Publishes the stream from its own thread: a minimal ZeroMQ PUB peer (ZMTP 3.0, NULL
/// mechanism) over a blocking `std` TCP socket.
///
/// The `zeromq` crate's `PubSocket` cannot be this bench's publisher: as ZeroMQ specifies, it
/// silently drops a message when its peer's buffer is full, and it writes what it buffered
/// only on its next send, so a publisher faster than its consumer loses batches (a gap, and an
/// unrepairable one without a replay socket). A blocking socket makes the publisher wait for
/// the consumer instead, so it is always ahead of it and never drops a batch. The consumer's
/// side is the real [`VllmSource`] with its `zeromq` SUB socket.
struct Publisher {
    endpoint: String,
    go: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Publisher {
    fn start(shape: Shape, batches: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("tcp://{}", listener.local_addr()?);
        let go = Arc::new(AtomicBool::new(false));
        let go_seen = go.clone();
        let done = Arc::new(AtomicBool::new(false));
        let done_seen = done.clone();
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let (mut peer, _) = listener.accept()?;
                peer.set_nodelay(true)?;
                zmtp_handshake(&mut peer)?;
                while !go_seen.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let t = Template::new(shape);
                let mut bytes = Vec::new();
                let mut message = Vec::new();
                for seq in 0..batches {
                    t.fill(seq, &mut bytes);
                    message.clear();
                    zmtp_frame(&mut message, TOPIC, true);
                    zmtp_frame(&mut message, &seq.to_be_bytes(), true);
                    zmtp_frame(&mut message, &bytes, false);
                    peer.write_all(&message)?;
                }
                // Hold the connection until the consumer is done (a closed peer is a reconnect).
                while !done_seen.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            })?;
        Ok(Self {
            endpoint,
            go,
            done,
            thread,
        })
    }
}

/// The ZMTP 3.0 greeting and `READY` of a PUB socket; reads the peer's greeting and `READY`.
fn zmtp_handshake(peer: &mut TcpStream) -> std::io::Result<()> {
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3; // version 3.0
    greeting[12..16].copy_from_slice(b"NULL");
    peer.write_all(&greeting)?;
    let mut ready = vec![0x04, 25, 5];
    ready.extend_from_slice(b"READY");
    ready.push(11);
    ready.extend_from_slice(b"Socket-Type");
    ready.extend_from_slice(&3u32.to_be_bytes());
    ready.extend_from_slice(b"PUB");
    peer.write_all(&ready)?;
    let mut theirs = [0u8; 64];
    peer.read_exact(&mut theirs)?;
    let mut flags = [0u8; 1];
    peer.read_exact(&mut flags)?;
    let len = if flags[0] & 0x02 != 0 {
        let mut size = [0u8; 8];
        peer.read_exact(&mut size)?;
        u64::from_be_bytes(size)
    } else {
        let mut size = [0u8; 1];
        peer.read_exact(&mut size)?;
        u64::from(size[0])
    };
    std::io::copy(&mut peer.take(len), &mut std::io::sink())?;
    Ok(())
}

/// Appends one ZMTP frame.
fn zmtp_frame(out: &mut Vec<u8>, data: &[u8], more: bool) {
    let more = u8::from(more);
    match u8::try_from(data.len()) {
        Ok(len) => out.extend_from_slice(&[more, len]),
        Err(_) => {
            out.push(more | 0x02);
            out.extend_from_slice(&(data.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(data);
}

fn child_zmq(shape: Shape, total_blocks: u64, sized: bool) -> Measured {
    let per_batch = shape.blocks_per_batch() as u64;
    let batches = total_blocks.div_ceil(per_batch);
    let total = batches * per_batch;
    let publisher = Publisher::start(shape, batches).expect("publisher");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let measured = rt.block_on(async {
        // Sized as `kvtier router --expected-blocks-per-engine` sizes each engine's source.
        let source = VllmSource::builder("bench", publisher.endpoint.clone())
            .with_convert_config(convert_config(false, total))
            .with_expected_blocks(if sized { total as usize } else { 0 })
            .with_idle_reconnect(None)
            .build()
            .expect("source");
        // As `RouterService::spawn_vllm` does: straight into the ingestion queue, applied 64
        // messages at a time (the service's ingest task, without its lock).
        let (tx, mut rx) = mpsc::channel::<Arc<EventMessage>>(INGEST_QUEUE);
        let handle = source.spawn_shared(tx);
        while handle.stats().connects == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The slow-joiner window: let the subscription reach the publisher.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut buf = Vec::with_capacity(PER_APPLY);
        // Before the router: an index sized up front counts too.
        let rss_before = resident_bytes();
        let mut router = router(sized, total);
        publisher.go.store(true, Ordering::Release);
        let mut created = 0u64;
        let mut start = None;
        let mut cpu_start = 0.0;
        while created < total {
            let n = match tokio::time::timeout(
                Duration::from_secs(5),
                rx.recv_many(&mut buf, PER_APPLY),
            )
            .await
            {
                Ok(n) if n > 0 => n,
                _ => panic!(
                    "stalled at {created} of {total} blocks: {:?}",
                    handle.stats()
                ),
            };
            if start.is_none() {
                start = Some(Instant::now());
                cpu_start = thread_cpu_seconds();
            }
            let _ = n;
            for m in buf.drain(..) {
                created += created_blocks(&m);
                router.apply(m);
            }
        }
        let elapsed = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
        let cpu = thread_cpu_seconds() - cpu_start;
        let rss_after = resident_bytes();
        let stats = handle.stats();
        assert_eq!(stats.gaps_detected, 0, "the publisher dropped batches");
        assert_eq!(stats.decode_errors, 0);
        assert_eq!(router.stats().creates, total);
        publisher.done.store(true, Ordering::Release);
        handle.shutdown().await;
        black_box(&router);
        Measured {
            // The first batch's arrival starts the clock: count the blocks after it.
            blocks_per_s: (total - per_batch) as f64 / elapsed,
            blocks_per_cpu_s: (total - per_batch) as f64 / cpu,
            bytes_per_block: rss_after.saturating_sub(rss_before) as f64 / total as f64,
        }
    });
    publisher
        .thread
        .join()
        .expect("publisher")
        .expect("publisher i/o");
    measured
}

fn child_converter_memory(shape: Shape, total_blocks: u64, sized: bool) -> Measured {
    // Before the converter: a map sized up front counts too.
    let rss_before = resident_bytes();
    let t = Template::new(shape);
    let config = convert_config(sized, total_blocks);
    let mut converter = VllmConverter::new(InstanceId(1), config);
    let mut decoder = VllmDecoder::new();
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    let batches = total_blocks.div_ceil(t.blocks as u64);
    let ((), wall, cpu) = timed(|| {
        for k in 0..batches {
            t.fill(k, &mut bytes);
            let batch = decoder.decode(&bytes).expect("valid batch");
            converter.apply_batch(&batch, &mut messages);
            decoder.recycle(batch);
            messages.clear();
        }
    });
    let total = batches * t.blocks as u64;
    assert_eq!(converter.len() as u64, total);
    Measured {
        blocks_per_s: total as f64 / wall,
        blocks_per_cpu_s: total as f64 / cpu,
        bytes_per_block: resident_bytes().saturating_sub(rss_before) as f64 / total as f64,
    }
}

fn run_child(group: &str, shape: Shape, blocks: u64, sized: bool) -> Measured {
    let mut args = vec!["--child", group, shape.name()];
    let blocks = blocks.to_string();
    args.push(&blocks);
    if sized {
        args.push("--sized");
    }
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "child {group} {} failed: {}{}",
                shape.name(),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut fields = line
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(f64::NAN));
    let mut next = || fields.next().unwrap_or(f64::NAN);
    Measured {
        blocks_per_s: next(),
        blocks_per_cpu_s: next(),
        bytes_per_block: next(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let group = args.get(at + 1).map(String::as_str).unwrap_or_default();
        let shape = args
            .get(at + 2)
            .and_then(|s| Shape::parse(s))
            .expect("a shape");
        let blocks: u64 = args
            .get(at + 3)
            .and_then(|b| b.parse().ok())
            .expect("a block count");
        let sized = args.iter().any(|a| a == "--sized");
        let m = match group {
            "zmq" => child_zmq(shape, blocks, sized),
            "memory" => child_converter_memory(shape, blocks, sized),
            "in_process" => bench_in_process(shape, blocks, sized),
            // For profiles: the decode loop alone, for `blocks / 100_000` tenths of a second.
            "decode" => bench_decode(shape, blocks as f64 / 1e6),
            other => panic!("unknown child group {other}"),
        };
        println!(
            "RESULT {} {} {}",
            m.blocks_per_s, m.blocks_per_cpu_s, m.bytes_per_block
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("KVTIER_BENCH_QUICK").is_some_and(|v| v != "0");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|at| args.get(at + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 })
        .max(1);
    let sized = args.iter().any(|a| a == "--sized");
    let blocks: u64 = if quick { 200_000 } else { 2_000_000 };
    let decode_seconds = if quick { 0.2 } else { 1.0 };
    println!(
        "vllm_path: {runs} run(s), {blocks} blocks per run{}; medians (blocks/s, bytes/block)",
        if sized {
            ", converter map and index sized up front"
        } else {
            ""
        }
    );
    for shape in [Shape::One, Shape::ThirtyTwo] {
        let name = shape.name();
        let decode: Vec<_> = (0..runs)
            .map(|_| bench_decode(shape, decode_seconds))
            .collect();
        report(&format!("decode/{name}"), &decode);
        let in_process: Vec<_> = (0..runs)
            .map(|_| run_child("in_process", shape, blocks, sized))
            .collect();
        report(&format!("in_process/{name}"), &in_process);
        let zmq: Vec<_> = (0..runs)
            .map(|_| run_child("zmq", shape, blocks, sized))
            .collect();
        report(&format!("zmq/{name}"), &zmq);
        let memory: Vec<_> = (0..runs)
            .map(|_| run_child("memory", shape, blocks, sized))
            .collect();
        report(&format!("memory/{name} (decode + convert)"), &memory);
    }
}

/// Prints the medians of `runs`: blocks per CPU-second of the consuming thread (the one-core
/// figure), per wall-clock second, and resident bytes per block where measured.
fn report(group: &str, runs: &[Measured]) {
    let med = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    let mut line = format!(
        "{group}: {} blocks/cpu-s ({} blocks/s wall)",
        fmt_rate(med(|m| m.blocks_per_cpu_s)),
        fmt_rate(med(|m| m.blocks_per_s)),
    );
    let bytes = med(|m| m.bytes_per_block);
    if !bytes.is_nan() {
        line += &format!(", {bytes:.0} resident bytes per block");
    }
    println!("{line}");
}
