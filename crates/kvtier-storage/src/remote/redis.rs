//! The Redis/Valkey backend: blocks as plain string values, manifests as small hashes changed
//! by Lua scripts (atomic on the server), over blocking connections with bounded timeouts.
//!
//! Connections live in a small pool: a call takes one (or connects, bounded by the timeout),
//! and gives it back only if the call did not fail at the connection level, so a server
//! restart costs one failed call per pooled connection at most and the pool heals by itself.
//!
//! Manifest layout: the hash `KEY` holds `v` (version) and `d` (frame); versions come from
//! one `INCR` counter per namespace (`KEY`'s namespace + `/manifest-seq`), so they only grow.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::{Client, Connection, RedisError};

use super::backend::{Backend, BackendError, Live};

const PUT_NEW: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
     local n = redis.call('INCR', KEYS[2]) \
     redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[1]) return n";
const CAS: &str = "local v = redis.call('HGET', KEYS[1], 'v') \
     if v == false or v ~= ARGV[1] then return -1 end \
     if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 0 end \
     local n = redis.call('INCR', KEYS[2]) \
     redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[2]) redis.call('PERSIST', KEYS[1]) return n";

const POOL_MAX: usize = 16;

/// Blocks and manifests in a Redis-protocol server.
pub(crate) struct RedisBackend {
    client: Client,
    timeout: Duration,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn classify(e: &RedisError) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        BackendError::Unavailable(e.to_string())
    } else {
        BackendError::Other(e.to_string())
    }
}

fn seq_key(key: &str) -> String {
    let ns = key.split('/').next().unwrap_or(key);
    format!("{ns}/manifest-seq")
}

impl RedisBackend {
    /// A backend for the server at `url` (`redis://host:port/db`); connects lazily.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, BackendError> {
        let client = Client::open(url).map_err(|e| BackendError::Other(e.to_string()))?;
        Ok(Self {
            client,
            timeout,
            pool: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self) -> Result<Connection, BackendError> {
        let con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| classify(&e))?;
        con.set_read_timeout(Some(self.timeout))
            .map_err(|e| classify(&e))?;
        con.set_write_timeout(Some(self.timeout))
            .map_err(|e| classify(&e))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection; the connection goes back unless it failed.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut con = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        match f(&mut con) {
            Ok(v) => {
                let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                if pool.len() < POOL_MAX {
                    pool.push(con);
                }
                Ok(v)
            }
            Err(e) => {
                let err = classify(&e);
                if let BackendError::Other(_) = err {
                    if !e.is_unrecoverable_error() {
                        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                        pool.push(con);
                    }
                }
                Err(err)
            }
        }
    }
}

fn set_cmd(key: &str, value: &[u8], ttl: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
    }
    cmd
}

impl Backend for RedisBackend {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.with(|c| set_cmd(key, &value, ttl).exec(c))
    }

    fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in &items {
            pipe.add_command(set_cmd(key, value, ttl)).ignore();
        }
        self.with(|c| pipe.exec(c))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.with(|c| redis::cmd("GET").arg(key).query(c))
    }

    fn get_batch(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|c| redis::cmd("MGET").arg(keys).query(c))
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.with(|c| redis::cmd("EXISTS").arg(key).query(c))
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.with(|c| redis::cmd("DEL").arg(key).exec(c))
    }

    fn manifest_get(
        &self,
        key: &str,
        _live: Live<'_>,
    ) -> Result<Option<(u64, Vec<u8>)>, BackendError> {
        let (v, d): (Option<u64>, Option<Vec<u8>>) =
            self.with(|c| redis::cmd("HMGET").arg(key).arg("v").arg("d").query(c))?;
        Ok(v.zip(d))
    }

    fn manifest_put_new(
        &self,
        key: &str,
        frame: Vec<u8>,
        _live: Live<'_>,
    ) -> Result<Option<u64>, BackendError> {
        let n: u64 = self.with(|c| {
            redis::cmd("EVAL")
                .arg(PUT_NEW)
                .arg(2)
                .arg(key)
                .arg(seq_key(key))
                .arg(&frame)
                .query(c)
        })?;
        Ok((n > 0).then_some(n))
    }

    fn manifest_cas(
        &self,
        key: &str,
        expected: u64,
        frame: Option<Vec<u8>>,
        _live: Live<'_>,
    ) -> Result<Option<u64>, BackendError> {
        let value = frame.unwrap_or_default();
        let n: i64 = self.with(|c| {
            redis::cmd("EVAL")
                .arg(CAS)
                .arg(2)
                .arg(key)
                .arg(seq_key(key))
                .arg(expected.to_string())
                .arg(&value)
                .query(c)
        })?;
        Ok(u64::try_from(n).ok())
    }

    fn manifest_touch_ttl(&self, key: &str, ttl: Duration) -> Result<Option<bool>, BackendError> {
        let ms = ttl.as_millis().max(1) as u64;
        let set: bool = self.with(|c| redis::cmd("PEXPIRE").arg(key).arg(ms).query(c))?;
        Ok(Some(set))
    }
}
