//! [`Keyspace`]: the RESP port's keys and values in host memory, under a memory budget.
//!
//! Keys hash (xxh3) to one of `shards` mutex-guarded shards and, inside it, to one of
//! [`BUCKETS_PER_SHARD`] small hash maps. The buckets give two things a plain map cannot:
//!
//! - **SCAN with redis' guarantee.** The cursor is a bucket number; a key's bucket never
//!   changes, so every key present from the start to the end of an iteration is returned (at
//!   least once), whatever is added or removed meanwhile, and a call's cost is a few buckets,
//!   not the whole keyspace.
//! - **A global CLOCK.** One eviction hand walks all buckets of all shards in turn: an entry
//!   read since the hand last passed has its reference bit cleared, one that was not is
//!   evicted, until the bytes in use are under the budget. Every shard shares one budget, so
//!   a skewed key distribution loses no capacity.
//!
//! # Invariants
//!
//! - `used` is the sum of [`entry_cost`] of every stored entry; `keys` their number. Both
//!   change only under the owning shard's lock, together with the map.
//! - An entry whose expiry has passed is never returned: reads check it and remove it.
//! - A value larger than the budget is refused; any other SET succeeds and evicts others.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hashbrown::HashTable;
use parking_lot::Mutex;

/// Buckets in each shard: SCAN's unit of iteration and the CLOCK hand's step. Few enough
/// that a shard's bucket headers stay in cache (a lookup's first step is not a miss); a SCAN
/// call returns at least one whole bucket (about keys / 1024 keys with 64 shards).
pub(crate) const BUCKETS_PER_SHARD: usize = 16;

/// Bytes charged per entry on top of its key and value (map slot, boxes, expiry).
pub(crate) const ENTRY_OVERHEAD: u64 = 64;

/// What one entry costs against the budget.
pub(crate) fn entry_cost(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Values shorter than this share one allocation with their key (one cache miss fewer per
/// read, one allocation fewer per write); longer ones are shared [`Bytes`] that a reply can
/// send from where they are.
pub(crate) const INLINE_BELOW: usize = 1024;

/// A key and its value.
#[derive(Debug)]
enum Body {
    /// The key's bytes, then the value's.
    Inline { data: Box<[u8]>, key_len: usize },
    /// A long value, apart.
    Apart { key: Box<[u8]>, value: Bytes },
}

/// A stored value, borrowed under the shard's lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    /// A short value: copy it.
    Inline(&'a [u8]),
    /// A long value: clone the handle to send it without a copy.
    Shared(&'a Bytes),
}

impl Value<'_> {
    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Value::Inline(b) => b,
            Value::Shared(b) => b,
        }
    }

    /// An owned handle (a copy for a short value).
    pub(crate) fn to_bytes(self) -> Bytes {
        match self {
            Value::Inline(b) => Bytes::copy_from_slice(b),
            Value::Shared(b) => b.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// xxh3 of the key: placement, and the table's hash (compared before the key bytes).
    hash: u64,
    body: Body,
    /// Unix milliseconds after which the entry is gone; 0 = never.
    expires_ms: u64,
    /// Read (or written) since the CLOCK hand last passed.
    referenced: bool,
}

impl Entry {
    fn expired(&self, now: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now
    }

    fn key(&self) -> &[u8] {
        match &self.body {
            Body::Inline { data, key_len } => data.get(..*key_len).unwrap_or_default(),
            Body::Apart { key, .. } => key,
        }
    }

    fn value(&self) -> Value<'_> {
        match &self.body {
            Body::Inline { data, key_len } => {
                Value::Inline(data.get(*key_len..).unwrap_or_default())
            }
            Body::Apart { value, .. } => Value::Shared(value),
        }
    }

    fn cost(&self) -> u64 {
        entry_cost(self.key(), self.value().as_slice())
    }

    /// Gives the entry of `key` the value `value`, reusing its allocation when the new value
    /// is short and as long as the old one (a SET that overwrites a fixed-size record).
    fn replace_value(&mut self, key: &[u8], value: &[u8]) {
        self.referenced = true;
        if let Body::Inline { data, key_len } = &mut self.body
            && value.len() < INLINE_BELOW
            && data.len() == *key_len + value.len()
            && let Some(old) = data.get_mut(*key_len..)
        {
            old.copy_from_slice(value);
            return;
        }
        self.body = body(key, value);
    }
}

/// The body of `key` → `value`.
fn body(key: &[u8], value: &[u8]) -> Body {
    if value.len() < INLINE_BELOW {
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Body::Inline {
            data: data.into_boxed_slice(),
            key_len: key.len(),
        }
    } else {
        Body::Apart {
            key: key.into(),
            value: Bytes::copy_from_slice(value),
        }
    }
}

type Bucket = HashTable<Entry>;

#[derive(Debug)]
struct Shard {
    buckets: Vec<Bucket>,
}

/// When a SET stores its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// Always.
    Always,
    /// Only if the key is absent (NX).
    IfAbsent,
    /// Only if the key is present (XX).
    IfPresent,
}

/// The expiry a SET gives its key, resolved to an absolute time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// No expiry.
    None,
    /// Expires at this Unix millisecond (may be in the past: the key is then removed).
    At(u64),
    /// Keep the key's current expiry (KEEPTTL).
    Keep,
}

/// What a SET did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetOutcome {
    /// Whether the value was stored (false: NX/XX said no).
    pub(crate) stored: bool,
    /// The value the key had before (for SET ... GET).
    pub(crate) old: Option<Bytes>,
}

/// A SET the keyspace refuses.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SetError {
    /// The entry alone is larger than the whole memory budget.
    #[error("value of {cost} bytes does not fit the memory budget of {budget} bytes")]
    OverBudget {
        /// The entry's cost.
        cost: u64,
        /// The budget.
        budget: u64,
    },
}

/// Running totals of a keyspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyspaceCounts {
    pub(crate) keys: u64,
    pub(crate) keys_with_expiry: u64,
    pub(crate) used_bytes: u64,
    pub(crate) budget_bytes: u64,
    pub(crate) evicted: u64,
    pub(crate) expired: u64,
}

/// The RESP port's keys.
#[derive(Debug)]
pub(crate) struct Keyspace {
    shards: Box<[Mutex<Shard>]>,
    budget: u64,
    used: AtomicU64,
    keys: AtomicU64,
    keys_with_expiry: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    /// The CLOCK hand: a global bucket number (mod the bucket count).
    hand: AtomicUsize,
}

/// Where a key lives: (its hash, shard, bucket in the shard).
fn place(key: &[u8], shards: usize) -> (u64, usize, usize) {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    (
        h,
        (h as usize) % shards,
        ((h >> 32) as usize) % BUCKETS_PER_SHARD,
    )
}

/// The table's equality: hash first, then the key bytes.
fn is(hash: u64, key: &[u8]) -> impl Fn(&Entry) -> bool + '_ {
    move |e| e.hash == hash && e.key() == key
}

impl Keyspace {
    /// An empty keyspace of `shards` shards (at least 1) holding at most `budget` bytes.
    pub(crate) fn new(shards: usize, budget: u64) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    buckets: (0..BUCKETS_PER_SHARD).map(|_| Bucket::new()).collect(),
                })
            })
            .collect();
        Self {
            shards,
            budget,
            used: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            keys_with_expiry: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            hand: AtomicUsize::new(0),
        }
    }

    /// Number of buckets in all: SCAN cursors run from 0 to this.
    pub(crate) fn bucket_count(&self) -> u64 {
        (self.shards.len() * BUCKETS_PER_SHARD) as u64
    }

    fn shard(&self, i: usize) -> &Mutex<Shard> {
        // `place` and the cursor arithmetic keep `i` below the shard count.
        &self.shards[i % self.shards.len()]
    }

    /// Removes `key`'s entry from `bucket`, keeping the totals right.
    fn unlink(&self, bucket: &mut Bucket, hash: u64, key: &[u8]) -> Option<Entry> {
        let (entry, _) = bucket.find_entry(hash, is(hash, key)).ok()?.remove();
        self.forget(&entry);
        Some(entry)
    }

    fn forget(&self, entry: &Entry) {
        self.used.fetch_sub(entry.cost(), Ordering::Relaxed);
        self.keys.fetch_sub(1, Ordering::Relaxed);
        if entry.expires_ms != 0 {
            self.keys_with_expiry.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The live entry of `key` in `bucket` (marked referenced), removing it if it has
    /// expired. One table probe when the key is live.
    fn live<'b>(
        &self,
        bucket: &'b mut Bucket,
        hash: u64,
        key: &[u8],
        now: &mut Option<u64>,
    ) -> Option<&'b mut Entry> {
        let entry = bucket.find_entry(hash, is(hash, key)).ok()?;
        let e = entry.get();
        if e.expires_ms != 0 && e.expired(*now.get_or_insert_with(now_ms)) {
            let (gone, _) = entry.remove();
            self.forget(&gone);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let e = entry.into_mut();
        e.referenced = true;
        Some(e)
    }

    /// Runs `read` on the value of `key` (if it is there and has not expired) under the
    /// shard's lock: a small value is copied out without touching its reference count.
    pub(crate) fn with_value<T>(&self, key: &[u8], read: impl FnOnce(Option<Value<'_>>) -> T) -> T {
        let (h, s, b) = place(key, self.shards.len());
        let mut shard = self.shard(s).lock();
        let value = shard
            .buckets
            .get_mut(b)
            .and_then(|bucket| self.live(bucket, h, key, &mut None))
            .map(|e| e.value());
        read(value)
    }

    /// The value of `key`, if it is there and has not expired.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.with_value(key, |v| v.map(Value::to_bytes))
    }

    /// Whether `key` is there.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.with_value(key, |v| v.is_some())
    }

    /// Removes `key`; whether it was there (and live).
    pub(crate) fn remove(&self, key: &[u8]) -> bool {
        let (h, s, b) = place(key, self.shards.len());
        let mut shard = self.shard(s).lock();
        let Some(bucket) = shard.buckets.get_mut(b) else {
            return false;
        };
        let live = self.live(bucket, h, key, &mut None).is_some();
        if live {
            self.unlink(bucket, h, key);
        }
        live
    }

    /// Stores `value` under `key` as SET does, then evicts others while over the budget.
    ///
    /// # Errors
    ///
    /// [`SetError::OverBudget`] when the entry alone exceeds the budget (nothing changes).
    pub(crate) fn set(
        &self,
        key: &[u8],
        value: &[u8],
        condition: Condition,
        ttl: Ttl,
        want_old: bool,
    ) -> Result<SetOutcome, SetError> {
        let cost = entry_cost(key, value);
        if cost > self.budget {
            return Err(SetError::OverBudget {
                cost,
                budget: self.budget,
            });
        }
        let (h, s, b) = place(key, self.shards.len());
        let mut now = None;
        let outcome = {
            let mut shard = self.shard(s).lock();
            let Some(bucket) = shard.buckets.get_mut(b) else {
                return Ok(SetOutcome {
                    stored: false,
                    old: None,
                });
            };
            let present = self.live(bucket, h, key, &mut now);
            let old_expiry = present.as_ref().map_or(0, |e| e.expires_ms);
            let exists = present.is_some();
            let old = present
                .as_ref()
                .filter(|_| want_old)
                .map(|e| e.value().to_bytes());
            let allowed = match condition {
                Condition::Always => true,
                Condition::IfAbsent => !exists,
                Condition::IfPresent => exists,
            };
            if !allowed {
                return Ok(SetOutcome { stored: false, old });
            }
            let expires_ms = match ttl {
                Ttl::None => 0,
                Ttl::At(at) => at.max(1),
                Ttl::Keep => old_expiry,
            };
            let expired = expires_ms != 0 && expires_ms <= *now.get_or_insert_with(now_ms);
            if !expired && let Some(e) = present {
                // Overwrite in place: one probe, and no allocation when the size is the same.
                let old_cost = e.cost();
                e.replace_value(key, value);
                if (e.expires_ms != 0) != (expires_ms != 0) {
                    if expires_ms != 0 {
                        self.keys_with_expiry.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.keys_with_expiry.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                e.expires_ms = expires_ms;
                if cost != old_cost {
                    self.used.fetch_add(cost, Ordering::Relaxed);
                    self.used.fetch_sub(old_cost, Ordering::Relaxed);
                }
                drop(shard);
                if cost > old_cost {
                    self.evict_to_budget();
                }
                return Ok(SetOutcome { stored: true, old });
            }
            self.unlink(bucket, h, key);
            if expired {
                // Already expired (EXAT in the past): the key is simply gone, as in redis.
                self.expired.fetch_add(1, Ordering::Relaxed);
            } else {
                self.used.fetch_add(cost, Ordering::Relaxed);
                self.keys.fetch_add(1, Ordering::Relaxed);
                if expires_ms != 0 {
                    self.keys_with_expiry.fetch_add(1, Ordering::Relaxed);
                }
                bucket.insert_unique(
                    h,
                    Entry {
                        hash: h,
                        body: body(key, value),
                        expires_ms,
                        referenced: true,
                    },
                    |e| e.hash,
                );
            }
            SetOutcome { stored: true, old }
        };
        self.evict_to_budget();
        Ok(outcome)
    }

    /// Runs the CLOCK hand until the bytes in use are within the budget. Two full turns
    /// clear every reference bit and then evict, so the loop always ends.
    fn evict_to_budget(&self) {
        let total = self.shards.len() * BUCKETS_PER_SHARD;
        let mut steps = 0;
        while self.used.load(Ordering::Relaxed) > self.budget && steps <= 2 * total {
            steps += 1;
            let g = self.hand.fetch_add(1, Ordering::Relaxed) % total;
            let now = now_ms();
            let mut shard = self.shard(g / BUCKETS_PER_SHARD).lock();
            let Some(bucket) = shard.buckets.get_mut(g % BUCKETS_PER_SHARD) else {
                continue;
            };
            bucket.retain(|entry| {
                if entry.expired(now) {
                    self.forget(entry);
                    self.expired.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                if entry.referenced {
                    entry.referenced = false;
                    return true;
                }
                if self.used.load(Ordering::Relaxed) <= self.budget {
                    return true;
                }
                self.forget(entry);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                false
            });
        }
    }

    /// One SCAN step from `cursor` (a bucket number): the live keys of whole buckets, in
    /// cursor order, until at least `count` keys matching `pattern` are collected or the
    /// buckets run out; the next cursor is 0 when the iteration is complete. A cursor past the
    /// end completes the iteration at once.
    pub(crate) fn scan(
        &self,
        cursor: u64,
        count: usize,
        matches: impl Fn(&[u8]) -> bool,
    ) -> (u64, Vec<Box<[u8]>>) {
        let total = self.bucket_count();
        let mut g = cursor;
        let mut keys = Vec::new();
        // Like redis, look at up to 10 × count empty buckets before answering with fewer keys.
        let mut visited = 0usize;
        let now = now_ms();
        while g < total && keys.len() < count && visited < count.saturating_mul(10).max(1) {
            let shard_index = (g / BUCKETS_PER_SHARD as u64) as usize;
            let mut shard = self.shard(shard_index).lock();
            while g < total && (g / BUCKETS_PER_SHARD as u64) as usize == shard_index {
                let b = (g % BUCKETS_PER_SHARD as u64) as usize;
                g += 1;
                visited += 1;
                if let Some(bucket) = shard.buckets.get_mut(b) {
                    bucket.retain(|entry| {
                        if entry.expired(now) {
                            self.forget(entry);
                            self.expired.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                        if matches(entry.key()) {
                            keys.push(entry.key().into());
                        }
                        true
                    });
                }
                if keys.len() >= count || visited >= count.saturating_mul(10).max(1) {
                    break;
                }
            }
        }
        (if g >= total { 0 } else { g }, keys)
    }

    /// The totals now.
    pub(crate) fn counts(&self) -> KeyspaceCounts {
        KeyspaceCounts {
            keys: self.keys.load(Ordering::Relaxed),
            keys_with_expiry: self.keys_with_expiry.load(Ordering::Relaxed),
            used_bytes: self.used.load(Ordering::Relaxed),
            budget_bytes: self.budget,
            evicted: self.evicted.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }

    /// Recounts keys and bytes from the maps (tests: the running totals must agree).
    #[cfg(test)]
    fn recount(&self) -> (u64, u64) {
        let (mut keys, mut used) = (0, 0);
        for shard in self.shards.iter() {
            for bucket in &shard.lock().buckets {
                for e in bucket {
                    keys += 1;
                    used += e.cost();
                }
            }
        }
        (keys, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ks: &Keyspace, key: &str, value: &[u8]) {
        ks.set(key.as_bytes(), value, Condition::Always, Ttl::None, false)
            .unwrap();
    }

    #[test]
    fn set_get_overwrite_remove_keep_the_totals() {
        let ks = Keyspace::new(4, 1 << 20);
        set(&ks, "a", b"1");
        set(&ks, "a", b"22");
        set(&ks, "b", b"333");
        assert_eq!(ks.get(b"a").as_deref(), Some(&b"22"[..]));
        assert!(ks.contains(b"b") && !ks.contains(b"c"));
        assert!(ks.remove(b"b") && !ks.remove(b"b"));
        let c = ks.counts();
        assert_eq!((c.keys, c.used_bytes), ks.recount());
        assert_eq!(c.used_bytes, entry_cost(b"a", b"22"));
    }

    #[test]
    fn overwrites_keep_the_totals_across_sizes_and_expiries() {
        let ks = Keyspace::new(2, 1 << 22);
        let later = Ttl::At(now_ms() + 60_000);
        let long = vec![9u8; INLINE_BELOW + 10];
        let steps: [(&[u8], Ttl); 6] = [
            (b"aaaa", Ttl::None),
            (b"bbbb", later),   // same size: written over in place
            (b"cc", Ttl::Keep), // shorter
            (&long, Ttl::None), // inline to apart
            (&long, later),     // apart, same size
            (b"d", Ttl::None),  // apart to inline
        ];
        for (value, ttl) in steps {
            ks.set(b"k", value, Condition::Always, ttl, false).unwrap();
            set(&ks, "other", b"x");
            assert_eq!(ks.get(b"k").as_deref(), Some(value));
            let c = ks.counts();
            assert_eq!((c.keys, c.used_bytes), ks.recount(), "after {ttl:?}");
            let expiring = u64::from(!matches!(ttl, Ttl::None));
            assert_eq!(c.keys_with_expiry, expiring, "after {ttl:?}");
        }
    }

    #[test]
    fn nx_xx_get_and_keepttl() {
        let ks = Keyspace::new(1, 1 << 20);
        let v = |s: &'static str| s.as_bytes();
        let out = ks
            .set(b"k", v("1"), Condition::IfPresent, Ttl::None, true)
            .unwrap();
        assert!(!out.stored && out.old.is_none());
        let out = ks
            .set(
                b"k",
                v("1"),
                Condition::IfAbsent,
                Ttl::At(now_ms() + 60_000),
                false,
            )
            .unwrap();
        assert!(out.stored);
        let out = ks
            .set(b"k", v("2"), Condition::IfAbsent, Ttl::None, true)
            .unwrap();
        assert_eq!((out.stored, out.old.as_deref()), (false, Some(&b"1"[..])));
        let out = ks
            .set(b"k", v("3"), Condition::IfPresent, Ttl::Keep, true)
            .unwrap();
        assert_eq!((out.stored, out.old.as_deref()), (true, Some(&b"1"[..])));
        assert_eq!(ks.counts().keys_with_expiry, 1, "KEEPTTL kept the expiry");
        ks.set(b"k", v("4"), Condition::Always, Ttl::None, false)
            .unwrap();
        assert_eq!(ks.counts().keys_with_expiry, 0, "a plain SET clears it");
    }

    #[test]
    fn expired_keys_are_never_returned() {
        let ks = Keyspace::new(2, 1 << 20);
        let past = now_ms() - 1;
        ks.set(b"gone", b"x", Condition::Always, Ttl::At(past), false)
            .unwrap();
        assert!(ks.get(b"gone").is_none());
        ks.set(
            b"soon",
            b"x",
            Condition::Always,
            Ttl::At(now_ms() + 30),
            false,
        )
        .unwrap();
        assert!(ks.contains(b"soon"));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(ks.get(b"soon").is_none());
        assert_eq!(ks.counts().keys, 0);
        assert_eq!(ks.counts().expired, 2);
    }

    #[test]
    fn the_budget_holds_and_read_keys_survive_eviction() {
        let value = vec![7u8; 1000];
        let budget = 100 * entry_cost(b"key-000", &value);
        let ks = Keyspace::new(8, budget);
        for i in 0..100 {
            set(&ks, &format!("key-{i:03}"), &value);
        }
        assert_eq!(ks.counts().keys, 100);
        // The first key past the budget sends the hand round once (every bit was set at
        // insert) and evicts one; from then on a key read after every SET keeps its bit.
        set(&ks, "key-100", &value);
        assert_eq!(ks.counts().keys, 100);
        let hot = (0..100)
            .map(|i| format!("key-{i:03}"))
            .find(|k| ks.contains(k.as_bytes()))
            .unwrap();
        for i in 101..180 {
            set(&ks, &format!("key-{i:03}"), &value);
            assert!(
                ks.get(hot.as_bytes()).is_some(),
                "a key read every round stays"
            );
            assert!(ks.counts().used_bytes <= budget);
        }
        let c = ks.counts();
        assert_eq!((c.keys, c.used_bytes), ks.recount());
        assert_eq!(c.evicted, 80, "{c:?}");
        let e = ks
            .set(
                b"big",
                &vec![0u8; budget as usize],
                Condition::Always,
                Ttl::None,
                false,
            )
            .unwrap_err();
        assert!(matches!(e, SetError::OverBudget { .. }));
    }

    #[test]
    fn scan_returns_every_key_present_throughout_despite_changes() {
        let ks = Keyspace::new(4, 1 << 30);
        for i in 0..2000 {
            set(&ks, &format!("stay-{i}"), b"v");
        }
        let mut seen = std::collections::HashSet::new();
        let (mut cursor, mut calls, mut churn) = (0, 0, 0);
        loop {
            let (next, keys) = ks.scan(cursor, 10, |k| k.starts_with(b"stay-"));
            seen.extend(keys);
            // Keys come and go between calls.
            set(&ks, &format!("new-{churn}"), b"v");
            ks.remove(format!("new-{}", churn / 2).as_bytes());
            churn += 1;
            calls += 1;
            if next == 0 {
                break;
            }
            assert!(next > cursor);
            cursor = next;
        }
        assert_eq!(seen.len(), 2000);
        assert!(calls >= 32, "COUNT 10 pages, not one reply: {calls}");
        let (next, keys) = ks.scan(ks.bucket_count() + 5, 10, |_| true);
        assert_eq!((next, keys.len()), (0, 0));
    }
}
