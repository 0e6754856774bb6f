//! Echo throughput of the IO runtime against raw loopback TCP.
//!
//! Groups: frame sizes 256 KiB and 1 MiB × 1, 4 and 16 connections, each a client sending a
//! frame and reading its echo back (ping-pong; `--pipeline D` keeps D frames outstanding per
//! connection instead), the same request pattern for every target, against three servers:
//!
//! - `raw`: a plain blocking thread per connection that reads a whole frame and writes it back
//!   (the loopback ceiling: no framing layer, no hand-off between threads);
//! - `uring` and `epoll`: kvtier-server on each backend with its [`Echo`] service (the request
//!   buffer sent back as a guarded segment) (1 IO thread and 2 workers unless
//!   `KVTIER_BENCH_IO` / `KVTIER_BENCH_WORKERS` say otherwise).
//!
//! Reps are interleaved (raw, uring, epoll, raw, ...) and the table shows medians and the
//! ratio of medians to `raw`; GB/s counts echoed bytes once (the same bytes also went in).
//! `cpu s/GB` is the whole process's CPU time (clients included, the same for every target)
//! per GB echoed: it tells a server that burns more CPU from one that waits more.
//!
//! Run: `cargo bench -p kvtier-server --bench echo -- [--reps N] [--secs S] [--quick]
//! [--pipeline D] [--inline] [--size BYTES --conns N] [--only raw|uring|epoll]`
//!
//! Reference figures (2-vCPU EPYC VM shared with other builds, load average 3-10 during the
//! runs, so ±30% between runs; 1 IO thread, 2 workers; `--reps 5 --secs 1`, medians):
//!
//! ```text
//! ping-pong    frame conns  raw GB/s  uring (ratio)  epoll (ratio)  cpu s/GB raw/uring/epoll
//!              256K     1     3.27    2.64 (0.81)    2.42 (0.74)    0.31 0.38 0.41
//!              256K     4     5.22    2.56 (0.49)    2.83 (0.54)    0.36 0.45 0.46
//!              256K    16     4.21    2.44 (0.58)    2.30 (0.55)    0.40 0.52 0.52
//!             1024K     1     3.83    2.44 (0.64)    2.54 (0.66)    0.26 0.40 0.37
//!             1024K     4     3.54    2.37 (0.67)    2.55 (0.72)    0.33 0.42 0.43
//!             1024K    16     2.10    1.80 (0.85)    1.97 (0.94)    0.48 0.54 0.50
//! ```
//!
//! What they say: one IO thread does every socket copy of the server (the raw server spreads
//! them over a thread per connection), and each request costs two extra thread hand-offs
//! (IO thread -> worker -> IO thread), about 1.2-1.6x raw's CPU per byte. An experiment that
//! ran the service inline on the IO thread brought the CPU per byte back to raw's, so the
//! hand-offs, not the framing or buffers (<2% of samples in `perf`), are the cost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvtier_server::{
    Backend, BackendChoice, BinaryFramer, ConnInfo, Context, Echo, Request, Server, ServerBuilder,
    Service,
};

/// [`Echo`] handled on the IO thread (`Service::run_inline`): no hand-off to a worker.
struct InlineEcho;

impl Service for InlineEcho {
    type Session = ();
    fn open(&self, _conn: &ConnInfo) {}
    fn handle(&self, ctx: Context<()>, request: Request) {
        Echo.handle(ctx, request);
    }
    fn run_inline(&self, _conn: &ConnInfo, _frame: &[u8]) -> bool {
        true
    }
}

/// A thread-per-connection blocking echo server; stops accepting when `stop` is set.
fn raw_server(stop: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut s) = stream else { continue };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let mut h = [0u8; 16];
                    if s.read_exact(&mut h).is_err() {
                        return;
                    }
                    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
                    buf.resize(len, 0);
                    buf[..16].copy_from_slice(&h);
                    if s.read_exact(&mut buf[16..]).is_err() || s.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[..4].copy_from_slice(&(len as u32).to_le_bytes());
    f[4] = 1;
    f[5..16].fill(0);
    f
}

/// Echoed bytes per second over `conns` connections for `secs`, each with up to `depth`
/// frames outstanding (1: ping-pong on one thread; more: a writer and a reader thread, the
/// writer taking a credit per frame that the reader hands back per echo).
fn drive(addr: SocketAddr, size: usize, conns: usize, depth: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                let request = frame(size);
                let mut back = vec![0u8; size];
                if depth <= 1 {
                    let mut bytes = 0u64;
                    while Instant::now() < deadline {
                        s.write_all(&request).unwrap();
                        s.read_exact(&mut back).unwrap();
                        bytes += size as u64;
                    }
                    assert!(back == request, "echo corrupted");
                    return bytes;
                }
                let (credit, credits) = std::sync::mpsc::sync_channel::<()>(depth);
                for _ in 0..depth {
                    credit.send(()).unwrap();
                }
                // Frames fully written so far, and whether the writer has stopped.
                let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let done = Arc::new(AtomicBool::new(false));
                let mut writer = s.try_clone().unwrap();
                let (request_w, sent_w, done_w) = (request.clone(), sent.clone(), done.clone());
                let sender = std::thread::spawn(move || {
                    while Instant::now() < deadline {
                        if credits.recv_timeout(Duration::from_millis(10)).is_err() {
                            continue;
                        }
                        writer.write_all(&request_w).unwrap();
                        sent_w.fetch_add(1, Ordering::Release);
                    }
                    done_w.store(true, Ordering::Release);
                });
                let mut received = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    if received < sent.load(Ordering::Acquire) {
                        s.read_exact(&mut back).unwrap();
                        received += 1;
                        let _ = credit.try_send(());
                    } else if finished {
                        break;
                    } else {
                        std::thread::yield_now();
                    }
                }
                sender.join().unwrap();
                assert!(back == request, "echo corrupted");
                received * size as u64
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// kvtier with [`Echo`] (or [`InlineEcho`]); thread counts from `KVTIER_BENCH_IO` /
/// `KVTIER_BENCH_WORKERS` (defaults 1 and 2).
fn kvtier(backend: Backend, inline: bool) -> Server {
    fn start<S: Service>(builder: ServerBuilder<S>, backend: Backend) -> Server {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        builder
            .listen("127.0.0.1:0".parse().unwrap(), BinaryFramer::new())
            .with_backend(BackendChoice::Force(backend))
            .with_io_threads(env("KVTIER_BENCH_IO", 1))
            .with_workers(env("KVTIER_BENCH_WORKERS", 2))
            .with_worker_spins(env("KVTIER_BENCH_SPINS", 200) as u32)
            .start()
            .unwrap()
    }
    if inline {
        start(ServerBuilder::new(InlineEcho), backend)
    } else {
        start(ServerBuilder::new(Echo), backend)
    }
}

/// CPU time of the whole process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let quick = args.iter().any(|a| a == "--quick");
    // `--conns N` / `--size BYTES`: one cell only (for profiling).
    let only_conns = value("--conns", 0.0) as usize;
    let only_size = value("--size", 0.0) as usize;
    // `--only raw|uring|epoll`: drive one target only (for profiling).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let reps = value("--reps", if quick { 1.0 } else { 5.0 }) as usize;
    let secs = value("--secs", if quick { 0.2 } else { 1.0 });
    let depth = value("--pipeline", 1.0) as usize;
    // `--inline`: the kvtier targets answer on their IO thread (`Service::run_inline`).
    let inline = args.iter().any(|a| a == "--inline");
    let sizes: &[usize] = match (only_size, quick) {
        (0, true) => &[256 << 10],
        (0, false) => &[256 << 10, 1 << 20],
        _ => std::slice::from_ref(&only_size),
    };
    let conn_counts: &[usize] = match (only_conns, quick) {
        (0, true) => &[1, 4],
        (0, false) => &[1, 4, 16],
        _ => std::slice::from_ref(&only_conns),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let raw = raw_server(stop.clone());
    let uring = kvtier(Backend::Uring, inline);
    let epoll = kvtier(Backend::Epoll, inline);
    let targets = [
        ("raw", raw),
        ("uring", uring.local_addrs()[0]),
        ("epoll", epoll.local_addrs()[0]),
    ];
    println!(
        "reps={reps} secs={secs} pipeline={depth} inline={inline} (medians; GB/s of echoed bytes; ratio = vs raw)"
    );
    println!(
        "{:>9} {:>5} {:>10} {:>10} {:>7} {:>10} {:>7}   cpu s/GB: raw uring epoll",
        "frame", "conns", "raw GB/s", "uring GB/s", "ratio", "epoll GB/s", "ratio"
    );
    for &size in sizes {
        for &conns in conn_counts {
            let mut results = vec![Vec::new(); targets.len()];
            let mut cpu = vec![Vec::new(); targets.len()];
            drive(raw, size, conns, depth, 0.1); // warm-up, dropped
            for _ in 0..reps {
                for (i, (name, addr)) in targets.iter().enumerate() {
                    let skip = only.as_deref().is_some_and(|o| o != *name);
                    if skip {
                        results[i].push(f64::NAN);
                        cpu[i].push(f64::NAN);
                        continue;
                    }
                    let (cpu0, t0) = (cpu_seconds(), Instant::now());
                    let rate = drive(*addr, size, conns, depth, secs);
                    let (used, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
                    results[i].push(rate / 1e9);
                    // CPU (whole process: clients and server) per GB echoed.
                    cpu[i].push(used / (rate * wall / 1e9));
                }
            }
            let m: Vec<f64> = results.iter_mut().map(|r| median(r)).collect();
            let c: Vec<f64> = cpu.iter_mut().map(|r| median(r)).collect();
            println!(
                "{:>8}K {:>5} {:>10.2} {:>10.2} {:>7.2} {:>10.2} {:>7.2}   {:>5.2} {:>5.2} {:>5.2}",
                size >> 10,
                conns,
                m[0],
                m[1],
                m[1] / m[0],
                m[2],
                m[2] / m[0],
                c[0],
                c[1],
                c[2]
            );
        }
    }
    let (cu, ce) = (uring.counters(), epoll.counters());
    println!(
        "uring: frames {} pool fallbacks {} ring full {}; epoll: frames {} pool fallbacks {} ring full {}",
        cu.frames_in,
        cu.pool_fallbacks,
        cu.ring_full,
        ce.frames_in,
        ce.pool_fallbacks,
        ce.ring_full
    );
    stop.store(true, Ordering::Relaxed);
    uring.shutdown().unwrap();
    epoll.shutdown().unwrap();
}
