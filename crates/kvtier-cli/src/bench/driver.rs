//! Runs a workload: one thread per connection, each keeping `pipeline` requests in flight,
//! after a prefill that stores every key a GET or MATCH may name.
//!
//! Timing: all connections start together (a barrier); requests answered during the warm-up
//! are not recorded; the measured window ends at the deadline, and the requests still in
//! flight then are awaited but not recorded. Latency is per request, from its send to its
//! reply, in an HDR histogram (3 significant digits) per connection, merged at the end.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::conn::{Conn, Outcome};
use super::workload::{Mix, Op, OpKind, OpSource};

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Connections, one thread each.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Operation weights.
    pub mix: Mix,
    /// Blocks the requests name (`0..keyspace`).
    pub keyspace: u64,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
}

/// What one connection (or, merged, the run) measured.
#[derive(Debug)]
pub struct Tally {
    /// Latency of every measured request, nanoseconds.
    pub latency: Histogram<u64>,
    /// Measured requests per kind: put, get, match.
    pub ops: [u64; 3],
    /// Block bytes moved by measured requests.
    pub bytes: u64,
    /// GETs and MATCHes that found nothing.
    pub misses: u64,
    /// Requests answered with an error, plus requests lost with a failed connection.
    pub errors: u64,
    /// The first error messages (at most 5).
    pub messages: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            ops: [0; 3],
            bytes: 0,
            misses: 0,
            errors: 0,
            messages: Vec::new(),
        }
    }

    fn error(&mut self, n: u64, message: String) {
        self.errors += n;
        if self.messages.len() < 5 {
            self.messages.push(message);
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (a, b) in self.ops.iter_mut().zip(other.ops) {
            *a += b;
        }
        self.bytes += other.bytes;
        self.misses += other.misses;
        self.errors += other.errors;
        for m in other.messages {
            if self.messages.len() < 5 {
                self.messages.push(m);
            }
        }
    }
}

/// The merged result and the measured window's length.
#[derive(Debug)]
pub struct Run {
    /// Everything measured.
    pub tally: Tally,
    /// The measured window.
    pub elapsed: Duration,
}

/// Runs `settings` over connections made by `connect(i)`; `progress` counts answered requests
/// (warm-up included) as they come, for a progress bar.
///
/// # Errors
///
/// A connection that cannot be made, or a prefill that fails: nothing is measured then.
pub fn run<C, F>(settings: &Settings, connect: F, progress: &AtomicU64) -> io::Result<Run>
where
    C: Conn + 'static,
    F: Fn(usize) -> io::Result<C> + Sync,
{
    let conns = (0..settings.connections)
        .map(&connect)
        .collect::<io::Result<Vec<C>>>()?;
    let barrier = Arc::new(Barrier::new(settings.connections + 1));
    let joined: Vec<io::Result<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, conn)| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || drive(i, conn, settings, &barrier, progress))
            })
            .collect();
        barrier.wait(); // every connection has prefilled
        barrier.wait(); // go
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a connection thread panicked")))
            })
            .collect()
    });
    let mut tally = Tally::new();
    for r in joined {
        tally.merge(r?);
    }
    Ok(Run {
        tally,
        elapsed: settings.duration,
    })
}

/// Stores the keys `i, i + n, i + 2n, ...` below `keyspace` (connection `i` of `n`).
fn prefill<C: Conn>(conn: &mut C, i: usize, settings: &Settings) -> io::Result<()> {
    let n = settings.connections as u64;
    let mut keys = (i as u64..settings.keyspace).step_by(n as usize);
    let mut in_flight = 0usize;
    loop {
        while in_flight < settings.pipeline {
            let Some(key) = keys.next() else { break };
            conn.send(
                0,
                Op {
                    kind: OpKind::Put,
                    key,
                },
            )?;
            in_flight += 1;
        }
        if in_flight == 0 {
            return Ok(());
        }
        let (_, outcome) = conn.recv()?;
        in_flight -= 1;
        if let Outcome::Failed(e) = outcome {
            return Err(io::Error::other(format!("prefill PUT failed: {e}")));
        }
    }
}

/// One connection's run.
fn drive<C: Conn>(
    i: usize,
    mut conn: C,
    settings: &Settings,
    barrier: &Barrier,
    progress: &AtomicU64,
) -> io::Result<Tally> {
    let needs_data = settings.mix.get > 0 || settings.mix.matches > 0;
    let prefilled = if needs_data {
        prefill(&mut conn, i, settings)
    } else {
        Ok(())
    };
    barrier.wait();
    barrier.wait();
    prefilled?;
    let begin = Instant::now() + settings.warmup;
    let end = begin + settings.duration;
    let mut source = OpSource::new(settings.mix, settings.keyspace, i);
    let mut tally = Tally::new();
    let depth = settings.pipeline.max(1);
    // pending[tag] = (sent at, kind) of the request in flight under that tag.
    let mut pending: Vec<Option<(Instant, OpKind)>> = vec![None; depth];
    let mut in_flight = 0usize;
    for (tag, slot) in pending.iter_mut().enumerate() {
        let op = source.next_op();
        if let Err(e) = conn.send(tag as u64, op) {
            tally.error((depth - tag) as u64, format!("send: {e}"));
            return Ok(tally);
        }
        *slot = Some((Instant::now(), op.kind));
        in_flight += 1;
    }
    while in_flight > 0 {
        let (tag, outcome) = match conn.recv() {
            Ok(r) => r,
            Err(e) => {
                tally.error(in_flight as u64, format!("connection {i}: {e}"));
                return Ok(tally);
            }
        };
        let now = Instant::now();
        let Some((sent, kind)) = pending.get_mut(tag as usize).and_then(Option::take) else {
            tally.error(
                in_flight as u64,
                format!("connection {i}: reply to unknown tag {tag}"),
            );
            return Ok(tally);
        };
        in_flight -= 1;
        progress.fetch_add(1, Ordering::Relaxed);
        if sent >= begin && now <= end {
            let ns = now.duration_since(sent).as_nanos().clamp(1, 60_000_000_000) as u64;
            let _ = tally.latency.record(ns);
            match outcome {
                Outcome::Done { bytes } => {
                    tally.ops[kind as usize] += 1;
                    tally.bytes += bytes;
                }
                Outcome::Miss => {
                    tally.ops[kind as usize] += 1;
                    tally.misses += 1;
                }
                Outcome::Failed(e) => tally.error(1, e),
            }
        } else if let Outcome::Failed(e) = outcome {
            tally.error(1, e);
        }
        if now < end {
            let op = source.next_op();
            if let Err(e) = conn.send(tag, op) {
                tally.error(in_flight as u64 + 1, format!("connection {i}: send: {e}"));
                return Ok(tally);
            }
            pending[tag as usize] = Some((Instant::now(), op.kind));
            in_flight += 1;
        }
    }
    Ok(tally)
}
