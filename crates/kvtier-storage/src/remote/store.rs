//! [`G4Store`]: the blocking G4 API over one backend, and its builder.
//!
//! The store frames and checks values, builds namespaced keys, counts everything and runs
//! every backend call through the circuit breaker. It holds no lock across a network call
//! (the breaker's mutex is taken before and after, never during), so it is `Sync` and callers
//! on many threads proceed in parallel, each on its own pooled connection.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvtier_core::SequenceHash;
use xxhash_rust::xxh3::xxh3_128;

use super::backend::{Backend, BackendError, Framed};
use super::breaker::Breaker;
use super::frame::{self, Expect, Kind};
use super::landing::{Dest, Landing};
use super::stats::{Counters, add};
use super::{FrameError, G4Error, G4Stats, Namespace};

/// The result of a manifest compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written; the manifest's new version.
    Written(u64),
    /// Deleted.
    Deleted,
    /// Another writer got there first (or the manifest is absent, or already exists for
    /// [`G4Store::put_new`]); nothing changed. Re-read and retry if it still makes sense.
    Conflict,
}

/// A manifest read back: its version (for [`G4Store::cas_update`]) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version to pass to a compare-and-swap.
    pub version: u64,
    /// The value as written.
    pub value: Vec<u8>,
    /// When it expires, in milliseconds since the Unix epoch (`None`: never).
    pub expires_at_ms: Option<u64>,
}

/// One block of a [`G4Store::get_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Present and verified: the block's bytes.
    Hit(Vec<u8>),
    /// Not in the store.
    Miss,
    /// Present but refused by the check (counted, not served).
    Corrupt(FrameError),
}

/// One block of a [`G4Store::get_batch_into`]: what landed in its part of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// Present and verified: the block's bytes are in its part of the buffer.
    Hit,
    /// Not in the store (its part of the buffer is unchanged).
    Miss,
    /// Present but refused by the check (counted, not served; its part of the buffer is
    /// unspecified).
    Corrupt(FrameError),
}

#[derive(Debug, Clone)]
enum Target {
    LocalDir(PathBuf),
    Memory,
    Redis(String),
    #[cfg(feature = "s3")]
    S3(super::S3Config),
}

/// Builds a [`G4Store`]: pick one backend, then tune timeouts and the breaker.
#[derive(Debug, Clone)]
#[must_use]
pub struct G4StoreBuilder {
    ns: Namespace,
    target: Target,
    timeout: Duration,
    threshold: u32,
    backoff: Duration,
    block_ttl: Option<Duration>,
}

impl G4StoreBuilder {
    /// Blocks in files under `dir` (created if missing). The default backend.
    pub fn local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.target = Target::LocalDir(dir.into());
        self
    }

    /// Blocks in this process's memory (tests; a stand-in where no shared store exists).
    pub fn memory(mut self) -> Self {
        self.target = Target::Memory;
        self
    }

    /// Blocks in a Redis or Valkey server, e.g. `redis://127.0.0.1:6379/0`.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.target = Target::Redis(url.into());
        self
    }

    /// Blocks in an S3-compatible bucket.
    #[cfg(feature = "s3")]
    pub fn s3(mut self, config: super::S3Config) -> Self {
        self.target = Target::S3(config);
        self
    }

    /// Bound on each call, connecting included (default 1 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive outage errors that open the breaker, and how long it stays open before one
    /// probe (default 3 and 500 ms).
    pub fn with_breaker(mut self, threshold: u32, backoff: Duration) -> Self {
        self.threshold = threshold;
        self.backoff = backoff;
        self
    }

    /// Time to live of blocks in stores with per-key expiry (Redis); object stores use bucket
    /// lifecycle rules instead (default: none).
    pub fn with_block_ttl(mut self, ttl: Duration) -> Self {
        self.block_ttl = Some(ttl);
        self
    }

    /// Builds the store. Connections are made lazily: a server that is down now is not an
    /// error here, only in the calls that need it.
    ///
    /// # Errors
    ///
    /// [`G4Error::Config`] when the backend cannot be set up (a bad URL, a directory that
    /// cannot be created, an invalid S3 configuration).
    pub fn build(self) -> Result<G4Store, G4Error> {
        let config = |e: BackendError| G4Error::Config(format!("{e:?}"));
        let backend: Box<dyn Backend> = match &self.target {
            Target::LocalDir(dir) => Box::new(
                super::object::ObjectBackend::new(
                    super::object::local_dir(dir).map_err(config)?,
                    self.timeout,
                )
                .map_err(config)?,
            ),
            Target::Memory => Box::new(
                super::object::ObjectBackend::new(super::object::memory(), self.timeout)
                    .map_err(config)?,
            ),
            Target::Redis(url) => {
                Box::new(super::redis::RedisBackend::new(url, self.timeout).map_err(config)?)
            }
            #[cfg(feature = "s3")]
            Target::S3(s3) => Box::new(
                super::object::ObjectBackend::new(s3.build(self.timeout)?, self.timeout)
                    .map_err(config)?,
            ),
        };
        Ok(G4Store {
            backend,
            ns: self.ns,
            counters: Counters::default(),
            breaker: Breaker::new(self.threshold, self.backoff),
            block_ttl: self.block_ttl,
            timeout: self.timeout,
        })
    }
}

/// Blocks of one [`Namespace`] in an external store, with checked reads, counters and a
/// circuit breaker. See the [module docs](super) for the invariants and an example.
///
/// The API is blocking and `Sync`: share one store between threads. From async code, call it
/// on a blocking thread (`tokio::task::spawn_blocking`); an object-store call made on an
/// async runtime's thread fails with [`G4Error::Backend`] instead of blocking the runtime.
#[derive(Debug)]
pub struct G4Store {
    backend: Box<dyn Backend>,
    ns: Namespace,
    counters: Counters,
    breaker: Breaker,
    block_ttl: Option<Duration>,
    timeout: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn valid_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl G4Store {
    /// A builder for a store of `ns`'s blocks. Pick the backend on it:
    /// [`local_dir`](G4StoreBuilder::local_dir) (the embedded one),
    /// [`redis`](G4StoreBuilder::redis), or `s3` (feature `s3`); until one is picked, blocks
    /// stay in this process's memory.
    pub fn builder(ns: Namespace) -> G4StoreBuilder {
        G4StoreBuilder {
            ns,
            target: Target::Memory,
            timeout: Duration::from_secs(1),
            threshold: 3,
            backoff: Duration::from_millis(500),
            block_ttl: None,
        }
    }

    /// The namespace this store reads and writes.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The bound on each call (see [`G4StoreBuilder::with_timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The counters so far.
    pub fn stats(&self) -> G4Stats {
        self.counters.snapshot()
    }

    /// Whether the breaker is open (calls fail fast) right now.
    pub fn is_marked_down(&self) -> bool {
        self.breaker.is_open()
    }

    /// The store key of a block (for operators and tests; callers use the block API).
    pub fn block_key(&self, hash: SequenceHash) -> String {
        format!("{}/b/{:032x}", self.ns.prefix(), hash.as_u128())
    }

    fn manifest_key(&self, name: &str) -> Result<String, G4Error> {
        if !valid_name(name) {
            return Err(G4Error::InvalidName(name.to_string()));
        }
        Ok(format!("{}/m/{name}", self.ns.prefix()))
    }

    fn block_expect(&self, hash: SequenceHash) -> Expect {
        Expect {
            kind: Kind::Block,
            namespace: self.ns.tag(),
            key: hash.as_u128(),
        }
    }

    fn manifest_expect(&self, name: &str) -> Expect {
        Expect {
            kind: Kind::Manifest,
            namespace: self.ns.tag(),
            key: xxh3_128(name.as_bytes()),
        }
    }

    /// Runs one backend call through the breaker and the counters.
    fn call<T>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, BackendError>,
    ) -> Result<T, G4Error> {
        if !self.breaker.allow() {
            add(&self.counters.breaker_rejected, 1);
            add(&self.counters.errors, 1);
            return Err(G4Error::BreakerOpen);
        }
        match f(self.backend.as_ref()) {
            Ok(v) => {
                self.breaker.success();
                Ok(v)
            }
            Err(e) => {
                add(&self.counters.errors, 1);
                match e {
                    BackendError::Other(msg) => {
                        self.breaker.success(); // the server answered
                        Err(G4Error::Backend(msg))
                    }
                    outage => {
                        if self.breaker.failure() {
                            add(&self.counters.breaker_trips, 1);
                        }
                        if outage == BackendError::Timeout {
                            add(&self.counters.timeouts, 1);
                            Err(G4Error::Timeout)
                        } else {
                            let BackendError::Unavailable(msg) = outage else {
                                unreachable!()
                            };
                            Err(G4Error::Unavailable(msg))
                        }
                    }
                }
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), G4Error> {
        if len != self.ns.block_bytes() {
            return Err(G4Error::WrongSize {
                expected: self.ns.block_bytes(),
                actual: len,
            });
        }
        Ok(())
    }

    /// Stores one block (replacing any block under `hash`).
    ///
    /// # Errors
    ///
    /// [`G4Error::WrongSize`] if `block` is not the namespace's block size; otherwise the
    /// store's errors ([`G4Error::Timeout`], [`G4Error::Unavailable`], [`G4Error::BreakerOpen`],
    /// [`G4Error::Backend`]).
    pub fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), G4Error> {
        self.check_size(block.len())?;
        let header = frame::header(self.block_expect(hash), 0, block);
        let key = self.block_key(hash);
        let item = Framed {
            key: &key,
            header: &header,
            payload: block,
        };
        self.call(|b| b.put_framed(item, self.block_ttl))?;
        add(&self.counters.puts, 1);
        add(&self.counters.bytes_written, block.len() as u64);
        Ok(())
    }

    /// Stores many blocks in as few round trips as the store allows (one pipeline in Redis,
    /// concurrent requests in object stores). All or nothing as far as errors go: on an error
    /// some blocks may be stored.
    ///
    /// # Errors
    ///
    /// As [`G4Store::put`]; a wrong-sized block fails the batch before anything is sent.
    pub fn put_batch(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), G4Error> {
        for (_, block) in blocks {
            self.check_size(block.len())?;
        }
        let keys: Vec<String> = blocks.iter().map(|&(h, _)| self.block_key(h)).collect();
        let headers: Vec<[u8; frame::HEADER_BYTES]> = blocks
            .iter()
            .map(|&(hash, block)| frame::header(self.block_expect(hash), 0, block))
            .collect();
        let items: Vec<Framed<'_>> = blocks
            .iter()
            .zip(&keys)
            .zip(&headers)
            .map(|((&(_, payload), key), header)| Framed {
                key,
                header,
                payload,
            })
            .collect();
        self.call(|b| b.put_batch_framed(&items, self.block_ttl))?;
        add(&self.counters.puts, blocks.len() as u64);
        add(
            &self.counters.bytes_written,
            (blocks.len() * self.ns.block_bytes()) as u64,
        );
        Ok(())
    }

    /// Counts one received block's outcome.
    fn count(&self, outcome: &Result<Option<u64>, FrameError>) {
        add(&self.counters.gets, 1);
        match outcome {
            Ok(Some(_)) => {
                add(&self.counters.hits, 1);
                add(&self.counters.bytes_read, self.ns.block_bytes() as u64);
            }
            Ok(None) => add(&self.counters.misses, 1),
            Err(_) => add(&self.counters.corrupt, 1),
        }
    }

    /// Receives the blocks `hashes` into `dests` (one round trip where the store allows) and
    /// returns each one's checked, counted outcome.
    #[expect(
        clippy::type_complexity,
        reason = "one private helper's pair of results"
    )]
    fn land<'d>(
        &self,
        hashes: &[SequenceHash],
        dests: Vec<Dest<'d>>,
    ) -> Result<(Vec<Result<Option<u64>, FrameError>>, Vec<Dest<'d>>), G4Error> {
        let bb = self.ns.block_bytes();
        let mut landing = Landing {
            rx: hashes
                .iter()
                .map(|&h| frame::Receiver::new(self.block_expect(h), bb))
                .collect(),
            dests,
            payload_len: bb,
        };
        let result = if let [hash] = hashes {
            let key = self.block_key(*hash);
            self.call(|b| b.get_to(&key, &mut landing))
        } else {
            let keys: Vec<String> = hashes.iter().map(|&h| self.block_key(h)).collect();
            self.call(|b| b.get_batch_to(&keys, bb, &mut landing))
        };
        if let Err(e) = result {
            add(&self.counters.gets, hashes.len() as u64);
            return Err(e);
        }
        let outcomes: Vec<_> = landing.rx.iter().map(frame::Receiver::finish).collect();
        for outcome in &outcomes {
            self.count(outcome);
        }
        Ok((outcomes, landing.dests))
    }

    /// Fetches a block into `out`; `Ok(false)` when it is not in the store. The payload is
    /// read from the connection straight into `out` and checked as it lands (Redis).
    ///
    /// # Errors
    ///
    /// [`G4Error::WrongSize`] if `out` is not the block size, [`G4Error::Corrupt`] if the
    /// stored value fails its check (`out` is then unspecified), or the store's errors.
    pub fn get_into(&self, hash: SequenceHash, out: &mut [u8]) -> Result<bool, G4Error> {
        self.check_size(out.len())?;
        let (outcomes, _) = self.land(&[hash], vec![Dest::Borrowed(out)])?;
        match outcomes.into_iter().next() {
            Some(Ok(found)) => Ok(found.is_some()),
            Some(Err(source)) => Err(G4Error::Corrupt {
                key: self.block_key(hash),
                source,
            }),
            None => Err(G4Error::Backend("no outcome for one key".into())),
        }
    }

    /// Fetches a block into a new buffer; `Ok(None)` when it is not in the store.
    ///
    /// # Errors
    ///
    /// As [`G4Store::get_into`].
    pub fn get(&self, hash: SequenceHash) -> Result<Option<Vec<u8>>, G4Error> {
        let (outcomes, dests) = self.land(&[hash], vec![Dest::Owned(Vec::new())])?;
        match (outcomes.into_iter().next(), dests.into_iter().next()) {
            (Some(Ok(Some(_))), Some(Dest::Owned(v))) => Ok(Some(v)),
            (Some(Ok(_)), _) => Ok(None),
            (Some(Err(source)), _) => Err(G4Error::Corrupt {
                key: self.block_key(hash),
                source,
            }),
            (None, _) => Err(G4Error::Backend("no outcome for one key".into())),
        }
    }

    /// Fetches many blocks in one round trip where the store allows (`MGET` or pipelined
    /// `GET`s in Redis, concurrent requests in object stores), each checked on its own as it
    /// arrives, into one new buffer per block.
    ///
    /// # Errors
    ///
    /// The store's errors, for the batch as a whole; corrupt blocks are [`Fetched::Corrupt`].
    pub fn get_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<Fetched>, G4Error> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let dests = hashes.iter().map(|_| Dest::Owned(Vec::new())).collect();
        let (outcomes, dests) = self.land(hashes, dests)?;
        Ok(outcomes
            .into_iter()
            .zip(dests)
            .map(|(outcome, dest)| match (outcome, dest) {
                (Ok(Some(_)), Dest::Owned(v)) => Fetched::Hit(v),
                (Ok(_), _) => Fetched::Miss,
                (Err(e), _) => Fetched::Corrupt(e),
            })
            .collect())
    }

    /// Fetches many blocks, as [`G4Store::get_batch`], straight into `out`: block `i` lands
    /// in `out[i * block_bytes..(i + 1) * block_bytes]` (no buffer per block, no copy).
    ///
    /// # Errors
    ///
    /// [`G4Error::WrongSize`] if `out` is not `hashes.len()` blocks long; the store's errors,
    /// for the batch as a whole.
    pub fn get_batch_into(
        &self,
        hashes: &[SequenceHash],
        out: &mut [u8],
    ) -> Result<Vec<Landed>, G4Error> {
        let bb = self.ns.block_bytes();
        if hashes.len().checked_mul(bb) != Some(out.len()) {
            return Err(G4Error::WrongSize {
                expected: hashes.len().saturating_mul(bb),
                actual: out.len(),
            });
        }
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let dests = out.chunks_exact_mut(bb).map(Dest::Borrowed).collect();
        let (outcomes, _) = self.land(hashes, dests)?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                Ok(Some(_)) => Landed::Hit,
                Ok(None) => Landed::Miss,
                Err(e) => Landed::Corrupt(e),
            })
            .collect())
    }

    /// Whether a block is in the store (without fetching or checking it).
    ///
    /// # Errors
    ///
    /// The store's errors.
    pub fn exists(&self, hash: SequenceHash) -> Result<bool, G4Error> {
        let key = self.block_key(hash);
        self.call(|b| b.exists(&key))
    }

    /// Which of the blocks `hashes` are in the store, in order, in one round trip where the
    /// store allows (pipelined `EXISTS` in Redis, concurrent probes in object stores); nothing
    /// is fetched or checked.
    ///
    /// # Errors
    ///
    /// The store's errors, for the list as a whole.
    pub fn exists_batch(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, G4Error> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = hashes.iter().map(|&h| self.block_key(h)).collect();
        let found = self.call(|b| b.exists_batch(&keys))?;
        if found.len() != hashes.len() {
            return Err(G4Error::Backend(format!(
                "{} answers for {} keys",
                found.len(),
                hashes.len()
            )));
        }
        Ok(found)
    }

    /// Removes a block (no error when absent).
    ///
    /// # Errors
    ///
    /// The store's errors.
    pub fn delete(&self, hash: SequenceHash) -> Result<(), G4Error> {
        let key = self.block_key(hash);
        self.call(|b| b.delete(&key))
    }

    /// Whether a stored manifest frame has not expired (an unreadable frame counts as live,
    /// so that its reader reports it as corrupt).
    fn live(&self, name: &str) -> impl Fn(&[u8]) -> bool + use<> {
        let expect = self.manifest_expect(name);
        move |bytes: &[u8]| {
            frame::decode(bytes, expect, None)
                .map_or(true, |(c, _)| c.expiry_ms == 0 || c.expiry_ms > now_ms())
        }
    }

    fn manifest_call<T>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, BackendError>,
    ) -> Result<T, G4Error> {
        add(&self.counters.manifest_ops, 1);
        self.call(f)
    }

    fn cas_outcome(&self, version: Option<u64>) -> Cas {
        match version {
            Some(0) => Cas::Deleted,
            Some(v) => Cas::Written(v),
            None => {
                add(&self.counters.manifest_conflicts, 1);
                Cas::Conflict
            }
        }
    }

    /// Reads a manifest: its current version and value, or `None` if absent or expired.
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], [`G4Error::Corrupt`], or the store's errors.
    pub fn manifest(&self, name: &str) -> Result<Option<Manifest>, G4Error> {
        let key = self.manifest_key(name)?;
        let live = self.live(name);
        let Some((version, bytes, native)) = self.manifest_call(|b| b.manifest_get(&key, &live))?
        else {
            return Ok(None);
        };
        match frame::decode(&bytes, self.manifest_expect(name), None) {
            Ok((checked, value)) => Ok(Some(Manifest {
                version,
                value: value.to_vec(),
                expires_at_ms: native.or((checked.expiry_ms != 0).then_some(checked.expiry_ms)),
            })),
            Err(source) => {
                add(&self.counters.corrupt, 1);
                Err(G4Error::Corrupt { key, source })
            }
        }
    }

    /// Creates a manifest if none exists: [`Cas::Written`] with its version, or
    /// [`Cas::Conflict`] if one does (concurrent creators: exactly one wins).
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], or the store's errors.
    pub fn put_new(&self, name: &str, value: &[u8]) -> Result<Cas, G4Error> {
        self.put_new_with_ttl(name, value, None)
    }

    /// As [`G4Store::put_new`], expiring `ttl` from now when given (Redis: the key's own
    /// expiry; object stores: written into the manifest and checked on read).
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], or the store's errors.
    pub fn put_new_with_ttl(
        &self,
        name: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Cas, G4Error> {
        let key = self.manifest_key(name)?;
        let native = self.backend.native_expiry();
        let expiry = match ttl {
            Some(t) if !native => now_ms()
                .saturating_add(t.as_millis().min(u128::from(u64::MAX)) as u64)
                .max(1),
            _ => 0,
        };
        let value = frame::encode(self.manifest_expect(name), expiry, value);
        let live = self.live(name);
        let ttl = ttl.filter(|_| native);
        let v = self.manifest_call(|b| b.manifest_put_new(&key, value, ttl, &live))?;
        Ok(self.cas_outcome(v))
    }

    /// Replaces a manifest if its version is still `expected`: [`Cas::Written`] with the new
    /// version, or [`Cas::Conflict`] if it changed, expired or was deleted. A write clears any
    /// time to live.
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], or the store's errors.
    pub fn cas_update(&self, name: &str, expected: u64, value: &[u8]) -> Result<Cas, G4Error> {
        self.cas_with_expiry(name, expected, Some(value), 0)
    }

    fn cas_with_expiry(
        &self,
        name: &str,
        expected: u64,
        value: Option<&[u8]>,
        expiry_ms: u64,
    ) -> Result<Cas, G4Error> {
        let key = self.manifest_key(name)?;
        let value = value.map(|v| frame::encode(self.manifest_expect(name), expiry_ms, v));
        let live = self.live(name);
        let v = self.manifest_call(|b| b.manifest_cas(&key, expected, value, &live))?;
        Ok(self.cas_outcome(v))
    }

    /// Deletes a manifest if its version is still `expected`: [`Cas::Deleted`], or
    /// [`Cas::Conflict`].
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], or the store's errors.
    pub fn delete_manifest(&self, name: &str, expected: u64) -> Result<Cas, G4Error> {
        self.cas_with_expiry(name, expected, None, 0)
    }

    /// Makes a manifest expire `ttl` from now; `Ok(false)` if it does not exist. In Redis this
    /// is `PEXPIRE` and keeps the version; in object stores the expiry is rewritten into the
    /// manifest by a compare-and-swap, so the version advances (re-read before a
    /// [`G4Store::cas_update`]).
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidName`], [`G4Error::Corrupt`], or the store's errors.
    pub fn touch_ttl(&self, name: &str, ttl: Duration) -> Result<bool, G4Error> {
        let key = self.manifest_key(name)?;
        if let Some(existed) = self.manifest_call(|b| b.manifest_touch_ttl(&key, ttl))? {
            return Ok(existed);
        }
        let expiry = now_ms().saturating_add(ttl.as_millis() as u64).max(1);
        for _ in 0..8 {
            let Some(current) = self.manifest(name)? else {
                return Ok(false);
            };
            match self.cas_with_expiry(name, current.version, Some(&current.value), expiry)? {
                Cas::Conflict => continue,
                _ => return Ok(true),
            }
        }
        Err(G4Error::Backend(format!(
            "manifest {name} kept changing while its TTL was set"
        )))
    }
}
