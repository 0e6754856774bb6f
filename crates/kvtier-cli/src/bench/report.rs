//! The result of a run, printed as a summary or as one JSON object whose top-level fields
//! `ops_per_sec`, `gb_per_sec`, `p50_us`, `p99_us`, `p999_us` and `errors` are stable for
//! scripts.

use std::fmt;

use serde::Serialize;

use super::driver::{Run, Settings};

/// What `kvtier bench` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `raw-tcp` or the target URL.
    pub target: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// `put:get:match`.
    pub mix: String,
    /// Distinct blocks named.
    pub keyspace: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests answered in the measured window (misses included, errors not).
    pub ops: u64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Measured PUTs, GETs and MATCHes.
    pub puts: u64,
    /// See `puts`.
    pub gets: u64,
    /// See `puts`.
    pub matches: u64,
    /// GETs and MATCHes that found nothing.
    pub misses: u64,
    /// Block bytes moved per second, 10^9 bytes.
    pub gb_per_sec: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// See `p50_us`.
    pub p999_us: f64,
    /// The slowest request, microseconds.
    pub max_us: f64,
    /// Failed requests (error replies, wrong blocks, requests lost with a connection).
    pub errors: u64,
    /// The first error messages.
    pub first_errors: Vec<String>,
}

impl Report {
    /// Summarises `run`.
    pub fn new(target: &str, settings: &Settings, run: &Run) -> Self {
        let t = &run.tally;
        let seconds = run.elapsed.as_secs_f64();
        let ops: u64 = t.ops.iter().sum();
        let us = |q: f64| {
            if t.latency.is_empty() {
                0.0
            } else {
                t.latency.value_at_quantile(q) as f64 / 1e3
            }
        };
        Self {
            target: target.to_string(),
            connections: settings.connections,
            pipeline: settings.pipeline,
            block_bytes: settings.block_bytes,
            mix: settings.mix.to_string(),
            keyspace: settings.keyspace,
            seconds,
            ops,
            ops_per_sec: ops as f64 / seconds,
            puts: t.ops[0],
            gets: t.ops[1],
            matches: t.ops[2],
            misses: t.misses,
            gb_per_sec: t.bytes as f64 / seconds / 1e9,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: t.latency.max() as f64 / 1e3,
            errors: t.errors,
            first_errors: t.messages.clone(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target {}: {} connections x pipeline {}, {} B blocks, mix put:get:match {}, \
             keyspace {}, {:.1} s measured",
            self.target,
            self.connections,
            self.pipeline,
            self.block_bytes,
            self.mix,
            self.keyspace,
            self.seconds
        )?;
        writeln!(
            f,
            "  {:.0} ops/s ({} put, {} get, {} match; {} misses), {:.3} GB/s",
            self.ops_per_sec, self.puts, self.gets, self.matches, self.misses, self.gb_per_sec
        )?;
        writeln!(
            f,
            "  latency us: p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        )?;
        writeln!(f, "  errors: {}", self.errors)?;
        for e in &self.first_errors {
            writeln!(f, "    {e}")?;
        }
        Ok(())
    }
}
