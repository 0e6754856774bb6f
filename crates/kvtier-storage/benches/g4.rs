//! G4 round trips against a real redis-server, side by side with a plain `redis` client doing
//! the same SET/GET of the same sizes in the same run.
//!
//! Groups (each size, each rep, run back to back in the order plain SET, G4 put, plain GET,
//! G4 get, so noise from the other helpers on the machine hits both sides alike):
//! - `set` / `put`: one value per round trip. G4 adds a 56-byte frame, its xxh3 checksum, a
//!   copy into the connection's request buffer, and the breaker's two uncontended lock/unlocks.
//! - `get` / `get_into`: G4 checks the frame (length, owner, checksum); its own RESP reader
//!   reads the payload from the socket straight into the caller's buffer and hashes it chunk
//!   by chunk as it lands; plain GET returns the reply's `Vec<u8>` (parsed by the `redis`
//!   crate, one copy out of its read buffer).
//! - `pipeline` / `put_batch`, `mget` / `get_batch`: 16 blocks in one round trip (`get_batch`
//!   lands each block in a buffer of its own, checked as it arrives).
//!
//! Reported: the median over reps of µs per operation for each side, and the median of the
//! per-rep ratios G4 / plain (goal: within 1.10). Run:
//!
//! ```text
//! cargo bench -p kvtier-storage --bench g4            # 7 reps
//! cargo bench -p kvtier-storage --bench g4 -- --quick # smoke: 2 reps, few ops
//! cargo bench -p kvtier-storage --bench g4 -- --reps 1 # one rep (scripts interleave builds)
//! ```
//!
//! Needs `redis-server` on PATH (`scripts/install-deps.sh`). Reference figures (2 shared cores,
//! loopback) are in `docs/storage-bench.md`.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::time::Instant;

use kvtier_core::SequenceHash;
use kvtier_storage::remote::{Fetched, G4Store, Namespace};

const KEYSPACE: u64 = 64;
const BATCH: usize = 16;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// µs per op of `ops` calls of `f(i)`.
fn time(ops: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / ops as f64
}

struct Row {
    what: &'static str,
    size: usize,
    plain: Vec<f64>,
    g4: Vec<f64>,
}

impl Row {
    fn print(&self) {
        let ratios: Vec<f64> = self
            .plain
            .iter()
            .zip(&self.g4)
            .map(|(p, g)| g / p)
            .collect();
        let (p, g) = (median(self.plain.clone()), median(self.g4.clone()));
        println!(
            "{:<22} {:>8} KiB  plain {:>9.1} µs  g4 {:>9.1} µs  g4/plain median {:.3}  (min {:.3}, max {:.3})  g4 {:>7.0} MB/s",
            self.what,
            self.size >> 10,
            p,
            g,
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
            self.size as f64 / g,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 2 } else { 7 });
    let server = redis_support::RedisServer::start();
    let mut plain = server.plain();
    println!(
        "g4 bench: redis-server on 127.0.0.1:{}, {reps} reps",
        server.port()
    );
    for size in [4usize << 10, 64 << 10, 256 << 10] {
        let ops: u64 = if quick {
            50
        } else {
            (200_000_000 / size as u64).clamp(300, 3000)
        };
        let ns = Namespace::new("bench-model", "xxh3-v1/bs16", size).expect("ns");
        let g4 = G4Store::builder(ns)
            .redis(server.url())
            .build()
            .expect("g4");
        let value: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut out = vec![0u8; size];
        let mut rows = [("set / put", size), ("get / get_into", size)].map(|(what, size)| Row {
            what,
            size,
            plain: vec![],
            g4: vec![],
        });
        let mut batch_rows =
            [("pipeline / put_batch", size), ("mget / get_batch", size)].map(|(what, size)| Row {
                what,
                size,
                plain: vec![],
                g4: vec![],
            });
        let batch_keys: Vec<String> = (0..BATCH).map(|i| format!("plain/{i}")).collect();
        let batch_hashes: Vec<SequenceHash> = (0..BATCH as u64).map(SequenceHash::root).collect();
        let batch_blocks: Vec<(SequenceHash, &[u8])> = batch_hashes
            .iter()
            .map(|&h| (h, value.as_slice()))
            .collect();
        let batch_ops = (ops / BATCH as u64).max(10);
        // One more rep than reported: the first (page faults, server warm-up) is dropped.
        for _ in 0..=reps {
            rows[0].plain.push(time(ops, |i| {
                redis::cmd("SET")
                    .arg(format!("plain/{}", i % KEYSPACE))
                    .arg(&value)
                    .exec(&mut plain)
                    .expect("SET")
            }));
            rows[0].g4.push(time(ops, |i| {
                g4.put(SequenceHash::root(i % KEYSPACE), &value)
                    .expect("put")
            }));
            rows[1].plain.push(time(ops, |i| {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(format!("plain/{}", i % KEYSPACE))
                    .query(&mut plain)
                    .expect("GET");
                assert_eq!(v.len(), size);
            }));
            rows[1].g4.push(time(ops, |i| {
                assert!(
                    g4.get_into(SequenceHash::root(i % KEYSPACE), &mut out)
                        .expect("get")
                );
            }));
            batch_rows[0].plain.push(
                time(batch_ops, |_| {
                    let mut pipe = redis::pipe();
                    for key in &batch_keys {
                        pipe.cmd("SET").arg(key).arg(&value).ignore();
                    }
                    pipe.exec(&mut plain).expect("pipeline")
                }) / BATCH as f64,
            );
            batch_rows[0].g4.push(
                time(batch_ops, |_| {
                    g4.put_batch(&batch_blocks).expect("put_batch")
                }) / BATCH as f64,
            );
            batch_rows[1].plain.push(
                time(batch_ops, |_| {
                    let v: Vec<Vec<u8>> = redis::cmd("MGET")
                        .arg(&batch_keys)
                        .query(&mut plain)
                        .expect("MGET");
                    assert_eq!(v.len(), BATCH);
                }) / BATCH as f64,
            );
            batch_rows[1].g4.push(
                time(batch_ops, |_| {
                    let got = g4.get_batch(&batch_hashes).expect("get_batch");
                    assert!(got.iter().all(|f| matches!(f, Fetched::Hit(_))));
                }) / BATCH as f64,
            );
        }
        for row in rows.iter_mut().chain(&mut batch_rows) {
            row.plain.remove(0);
            row.g4.remove(0);
            row.print();
        }
        let s = g4.stats();
        assert_eq!((s.corrupt, s.errors), (0, 0), "bench run had errors: {s:?}");
    }
}
