//! The service's event sources: the vLLM/SGLang sources it runs (their counters in
//! `/metrics`, their stop), and [`SourceStates`], the `<snapshot>.sources` file that lets a
//! restarted router resume each source where the snapshot left it.
//!
//! # Order of a snapshot
//!
//! Every source's state is captured first, then the router is snapshotted once everything the
//! sources sent before their capture is applied: the router is never behind the states. The
//! router snapshot is written first and the `.sources` file second, so that after a crash
//! between the two writes the states are older than the router, never newer: a resumed source
//! then replays a few batches the router already holds (discarded as duplicates, as they
//! are), instead of skipping batches the router never saw.
//!
//! # File format (`<snapshot>.sources`)
//!
//! ```text
//! magic  "KVTSRC01"
//! u32 LE count
//! count × { u32 LE name length, name (UTF-8), u32 LE state length, state bytes }
//! u64 LE XXH3-64 of every byte before it
//! ```
//!
//! A state is opaque here (each source versions and checks its own bytes).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kvtier_events::InstanceId;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::{VllmSourceBuilder, VllmSourceHandle, VllmSourceState, VllmStats};

const MAGIC: &[u8; 8] = b"KVTSRC01";
/// The longest source name accepted in a file.
const MAX_NAME: usize = 4096;

/// A `.sources` file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceStatesError {
    /// The file could not be read.
    #[error("cannot read source states: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a source-state file (truncated, wrong magic, bad checksum, ...).
    #[error("damaged source-state file: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

/// The saved states of a router's sources, by source name.
///
/// # Examples
///
/// ```
/// use kvtier_router::SourceStates;
///
/// let mut states = SourceStates::default();
/// states.insert("engine-a", vec![1, 2, 3]);
/// let back = SourceStates::from_bytes(&states.to_bytes())?;
/// assert_eq!(back.get("engine-a"), Some(&[1u8, 2, 3][..]));
/// assert!(SourceStates::from_bytes(b"garbage").is_err());
/// # Ok::<(), kvtier_router::SourceStatesError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStates {
    states: BTreeMap<String, Vec<u8>>,
}

impl SourceStates {
    /// The state file that goes with the router snapshot `snapshot`: `<snapshot>.sources`.
    pub fn path_for(snapshot: &Path) -> PathBuf {
        let mut name = snapshot.as_os_str().to_owned();
        name.push(".sources");
        PathBuf::from(name)
    }

    /// The saved state of the source called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.states.get(name).map(Vec::as_slice)
    }

    /// Sets the state of the source called `name`.
    pub fn insert(&mut self, name: impl Into<String>, state: Vec<u8>) {
        self.states.insert(name.into(), state);
    }

    /// How many sources have a state.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no source has a state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            20 + self
                .states
                .iter()
                .map(|(n, s)| 8 + n.len() + s.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&len_u32(self.states.len()).to_le_bytes());
        for (name, state) in &self.states {
            out.extend_from_slice(&len_u32(name.len()).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&len_u32(state.len()).to_le_bytes());
            out.extend_from_slice(state);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses a file's bytes.
    ///
    /// # Errors
    ///
    /// [`SourceStatesError::Malformed`] for anything but a complete, intact file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SourceStatesError> {
        let bad = |reason| SourceStatesError::Malformed { reason };
        if bytes.len() < MAGIC.len() + 4 + 8 {
            return Err(bad("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if &body[..MAGIC.len()] != MAGIC {
            return Err(bad("not a source-state file (magic)"));
        }
        let sum = u64::from_le_bytes(sum.try_into().map_err(|_| bad("too short"))?);
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut rest = &body[MAGIC.len()..];
        let count = take_u32(&mut rest).ok_or(bad("truncated count"))?;
        let mut states = BTreeMap::new();
        for _ in 0..count {
            let n = take_u32(&mut rest).ok_or(bad("truncated name length"))? as usize;
            if n > MAX_NAME {
                return Err(bad("source name too long"));
            }
            let name = take(&mut rest, n).ok_or(bad("truncated name"))?;
            let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
            let n = take_u32(&mut rest).ok_or(bad("truncated state length"))? as usize;
            let state = take(&mut rest, n).ok_or(bad("truncated state"))?;
            if states.insert(name.to_owned(), state.to_vec()).is_some() {
                return Err(bad("a source appears twice"));
            }
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(SourceStates { states })
    }

    /// Reads the file at `path`.
    ///
    /// # Errors
    ///
    /// [`SourceStatesError::Io`] when it cannot be read, [`SourceStatesError::Malformed`]
    /// when it is damaged.
    pub fn load(path: &Path) -> Result<Self, SourceStatesError> {
        Self::from_bytes(&std::fs::read(path)?)
    }

    /// Writes the file at `path` atomically (unique temporary file, file and directory
    /// synced).
    ///
    /// # Errors
    ///
    /// [`crate::SnapshotError::Io`]; `path` is then unchanged.
    pub fn save(&self, path: &Path) -> Result<(), crate::SnapshotError> {
        crate::write_snapshot(path, &self.to_bytes())
    }
}

/// A length as the file's u32 (states and names are far below 4 GiB: a larger one is a bug
/// of the source, and saturating makes the file fail its checks on load instead of wrapping).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    take(rest, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// One running source of the service. It sends straight into the ingest queue
/// ([`crate::VllmSource::spawn_shared`]), so what it counts as sent is queued.
pub(crate) struct RunningSource {
    pub(crate) name: String,
    /// Shared only while a capture awaits its state; otherwise the only reference.
    pub(crate) handle: Arc<VllmSourceHandle>,
}

/// The service's running sources, shared with the metrics collector.
#[derive(Clone, Default)]
pub(crate) struct Sources {
    running: Arc<Mutex<Vec<RunningSource>>>,
    /// Messages sent by sources that were stopped.
    stopped_sent: Arc<AtomicU64>,
}

impl Sources {
    pub(crate) fn add(&self, source: RunningSource) {
        self.running.lock().push(source);
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.running.lock().iter().any(|s| s.name == name)
    }

    /// Messages every source (running or stopped) has put in the ingest queue.
    pub(crate) fn sent(&self) -> u64 {
        let running: u64 = self
            .running
            .lock()
            .iter()
            .map(|s| s.handle.stats().messages)
            .sum();
        running + self.stopped_sent.load(Ordering::Acquire)
    }

    /// Every source's state (see the module docs for the order of a snapshot). A state covers
    /// exactly the messages its source had sent when it was taken, and those are in the
    /// ingest queue already.
    pub(crate) async fn capture(&self) -> SourceStates {
        // The lock is not held across an await: the handles are shared for the capture.
        let running: Vec<(String, Arc<VllmSourceHandle>)> = self
            .running
            .lock()
            .iter()
            .map(|s| (s.name.clone(), s.handle.clone()))
            .collect();
        let mut states = SourceStates::default();
        for (name, handle) in running {
            if let Some(bytes) = handle.state().await.map(|st| st.to_bytes()) {
                states.insert(name, bytes);
            }
        }
        states
    }

    /// Captures every source's state and stops it; returns the states.
    pub(crate) async fn stop_all(&self) -> SourceStates {
        let running = std::mem::take(&mut *self.running.lock());
        let mut states = SourceStates::default();
        for s in running {
            if let Some(bytes) = s.handle.state().await.map(|st| st.to_bytes()) {
                states.insert(s.name.clone(), bytes);
            }
            // Only a capture running concurrently shares the handle; dropping the last
            // reference stops the source as well.
            let sent = match Arc::try_unwrap(s.handle) {
                Ok(handle) => handle.shutdown().await.messages,
                Err(shared) => shared.stats().messages,
            };
            self.stopped_sent.fetch_add(sent, Ordering::Release);
        }
        states
    }

    fn stats(&self) -> Vec<(String, VllmStats)> {
        self.running
            .lock()
            .iter()
            .map(|s| (s.name.clone(), s.handle.stats()))
            .collect()
    }
}

/// Resumes `builder` from its saved state (a damaged one is reported and the source starts
/// fresh) and the router's event ids.
pub(crate) fn resume(
    builder: VllmSourceBuilder,
    saved: Option<&[u8]>,
    next_event_ids: Arc<dyn Fn(InstanceId) -> Option<u64> + Send + Sync>,
) -> VllmSourceBuilder {
    let builder = builder.with_start_event_ids(next_event_ids);
    match saved.map(VllmSourceState::from_bytes) {
        Some(Ok(state)) => builder.with_state(state),
        Some(Err(e)) => {
            eprintln!(
                "kvtier router: a saved source state is unusable ({e}); the source starts fresh"
            );
            builder
        }
        None => builder,
    }
}

/// A counter as (metric suffix, help, value).
type Counter = (&'static str, &'static str, u64);

/// Exports every source's counters as `kvtier_router_vllm_<suffix>_total{source="<name>"}`.
pub(crate) struct SourcesCollector {
    pub(crate) sources: Sources,
}

impl fmt::Debug for SourcesCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourcesCollector").finish_non_exhaustive()
    }
}

impl Collector for SourcesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let per_source: Vec<(String, Vec<Counter>, Vec<Counter>)> = self
            .sources
            .stats()
            .into_iter()
            .map(|(name, stats)| (name, stats.counters(), stats.gauges()))
            .collect();
        let Some((_, first, first_gauges)) = per_source.first() else {
            return Ok(());
        };
        // One family per counter, one sample per source.
        for (i, &(suffix, help, _)) in first.iter().enumerate() {
            let name = format!("kvtier_router_vllm_{suffix}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (source, counters, _) in &per_source {
                let Some(&(_, _, value)) = counters.get(i) else {
                    continue;
                };
                let labels = [("source", source.as_str())];
                let sample = family.encode_family(&labels)?;
                ConstCounter::new(value).encode(sample)?;
            }
        }
        for (i, &(suffix, help, _)) in first_gauges.iter().enumerate() {
            let name = format!("kvtier_router_vllm_{suffix}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            for (source, _, gauges) in &per_source {
                let Some(&(_, _, value)) = gauges.get(i) else {
                    continue;
                };
                let labels = [("source", source.as_str())];
                let sample = family.encode_family(&labels)?;
                ConstGauge::new(value as i64).encode(sample)?;
            }
        }
        Ok(())
    }
}
