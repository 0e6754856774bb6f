//! The seam between [`G4Store`](super::G4Store) and a concrete external store.
//!
//! A backend moves opaque values under string keys and keeps versioned manifests; it knows
//! nothing of frames, namespaces, counters or the breaker (the store owns those). Every call
//! is bounded by the backend's timeout and reports outages as [`BackendError::Timeout`] or
//! [`BackendError::Unavailable`] so the store can trip its breaker.

use std::time::Duration;

/// How a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BackendError {
    /// The call ran past the timeout.
    Timeout,
    /// The server could not be reached or dropped the connection.
    Unavailable(String),
    /// The server answered with an error, or the request was invalid.
    Other(String),
}

/// One framed value to store: a frame header and the payload it covers, kept apart so that a
/// backend able to send them as two pieces need not copy the payload into a framed buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framed<'a> {
    /// The store key.
    pub key: &'a str,
    /// The frame header (`frame::header` of `payload`).
    pub header: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl Framed<'_> {
    /// The whole frame in one new buffer.
    pub fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.header.len() + self.payload.len());
        v.extend_from_slice(self.header);
        v.extend_from_slice(self.payload);
        v
    }
}

/// Receives values streamed by [`Backend::get_to`] / [`Backend::get_batch_to`] straight into
/// their final place: for value `i`, [`start`](Self::start) with its length, then
/// [`region`](Self::region) (where the next bytes go; empty: discard the rest of the value)
/// and [`filled`](Self::filled), until the value ends or the sink wants no more.
pub(crate) trait ValueSink {
    /// Value `i` is `len` bytes (`None`: its key holds nothing).
    fn start(&mut self, i: usize, len: Option<usize>);
    /// Where the next bytes of value `i` go.
    fn region(&mut self, i: usize) -> &mut [u8];
    /// The first `n` bytes of the last region of value `i` are filled.
    fn filled(&mut self, i: usize, n: usize);
}

/// Feeds a whole value already in memory to `sink` (the default path of backends that do
/// not stream).
pub(crate) fn feed(sink: &mut dyn ValueSink, i: usize, value: Option<&[u8]>) {
    sink.start(i, value.map(<[u8]>::len));
    let value = value.unwrap_or_default();
    let mut at = 0;
    while at < value.len() {
        let region = sink.region(i);
        if region.is_empty() {
            return;
        }
        let n = region.len().min(value.len() - at);
        region[..n].copy_from_slice(&value[at..at + n]);
        sink.filled(i, n);
        at += n;
    }
}

/// A manifest as a backend holds it: version, frame, and native expiry (ms since the Unix
/// epoch) where the store keeps one.
pub(crate) type StoredManifest = (u64, Vec<u8>, Option<u64>);

/// Checks whether a stored manifest frame is still live (not expired).
pub(crate) type Live<'a> = &'a dyn Fn(&[u8]) -> bool;

/// A raw external store. Manifest versions start at 1 and only grow, also across a delete and
/// a re-create, so a stale version never matches a newer value.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key`, replacing any value; `ttl` where the store supports it.
    fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), BackendError>;
    /// Stores many values in as few round trips as the store allows.
    fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError>;
    /// Stores one framed value; by default as one buffer through [`Backend::put`].
    fn put_framed(&self, item: Framed<'_>, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.put(item.key, item.to_vec(), ttl)
    }
    /// Stores many framed values; by default as buffers through [`Backend::put_batch`].
    fn put_batch_framed(
        &self,
        items: &[Framed<'_>],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let items = items.iter().map(|i| (i.key.to_string(), i.to_vec()));
        self.put_batch(items.collect(), ttl)
    }
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// The values under `keys`, in order.
    fn get_batch(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError>;
    /// Streams the value under `key` into `sink` (as value 0). By default through
    /// [`Backend::get`] and a copy.
    fn get_to(&self, key: &str, sink: &mut dyn ValueSink) -> Result<(), BackendError> {
        feed(sink, 0, self.get(key)?.as_deref());
        Ok(())
    }
    /// Streams the values under `keys` into `sink` (value `i` for `keys[i]`), in as few
    /// round trips as the store allows. By default through [`Backend::get_batch`]. `value_bytes`
    /// is the size the caller expects of each value (a hint: large values are worth
    /// streaming, small ones one request). On an error some values may have been received.
    fn get_batch_to(
        &self,
        keys: &[String],
        value_bytes: usize,
        sink: &mut dyn ValueSink,
    ) -> Result<(), BackendError> {
        let _ = value_bytes;
        for (i, v) in self.get_batch(keys)?.iter().enumerate() {
            feed(sink, i, v.as_deref());
        }
        Ok(())
    }
    /// Whether `key` holds a value.
    fn exists(&self, key: &str) -> Result<bool, BackendError>;
    /// Whether each of `keys` holds a value, in as few round trips as the store allows; by
    /// default one [`Backend::exists`] per key.
    fn exists_batch(&self, keys: &[String]) -> Result<Vec<bool>, BackendError> {
        keys.iter().map(|k| self.exists(k)).collect()
    }
    /// Removes `key` (no error when absent).
    fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Whether manifests expire natively (a per-key TTL in the store); otherwise the store
    /// writes the expiry into the frame and checks it on read.
    fn native_expiry(&self) -> bool;
    /// The current version and frame of a manifest, if it exists, and its native expiry (ms
    /// since the Unix epoch) when it has one.
    fn manifest_get(
        &self,
        key: &str,
        live: Live<'_>,
    ) -> Result<Option<StoredManifest>, BackendError>;
    /// Creates a manifest if none is live, expiring natively after `ttl` where the store has
    /// native expiry; `None` when one is live.
    fn manifest_put_new(
        &self,
        key: &str,
        frame: Vec<u8>,
        ttl: Option<Duration>,
        live: Live<'_>,
    ) -> Result<Option<u64>, BackendError>;
    /// Replaces (`Some`) or deletes (`None`) a manifest if its version is `expected`; returns
    /// the new version (0 for a delete), or `None` on a version mismatch.
    fn manifest_cas(
        &self,
        key: &str,
        expected: u64,
        frame: Option<Vec<u8>>,
        live: Live<'_>,
    ) -> Result<Option<u64>, BackendError>;
    /// Sets a manifest's time to live natively: `Some(existed)`, or `None` when the store has
    /// no native expiry (the store then rewrites the frame's expiry through `manifest_cas`).
    fn manifest_touch_ttl(&self, key: &str, ttl: Duration) -> Result<Option<bool>, BackendError>;
}
