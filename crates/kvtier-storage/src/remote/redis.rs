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

use redis::{Client, Connection, ConnectionAddr, ConnectionLike, RedisError};

use super::backend::{Backend, BackendError, Framed, Live, StoredManifest, ValueSink};
use super::resp::{Endpoint, RespConn, bulk, io_error};

const PUT_NEW: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
     local n = redis.call('INCR', KEYS[2]) \
     redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[1]) \
     if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return n";
/// Version, frame and remaining time to live (ms; negative: none) of a manifest, atomically.
const GET: &str = "return {redis.call('HGET', KEYS[1], 'v'), redis.call('HGET', KEYS[1], 'd'), \
     redis.call('PTTL', KEYS[1])}";
const CAS: &str = "local v = redis.call('HGET', KEYS[1], 'v') \
     if v == false or v ~= ARGV[1] then return -1 end \
     if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 0 end \
     local n = redis.call('INCR', KEYS[2]) \
     redis.call('HSET', KEYS[1], 'v', n, 'd', ARGV[2]) redis.call('PERSIST', KEYS[1]) return n";

const POOL_MAX: usize = 16;
/// A pooled connection's request buffer is kept for the next call up to this capacity.
const BUF_KEEP: usize = 8 << 20;
/// Batches of values at least this large (measured: at 64 KiB the MGET is cheaper) are fetched as pipelined GETs (each checked while
/// the next arrives); smaller ones as one MGET, cheaper on the server for small values.
const STREAM_BYTES: usize = 128 << 10;

/// A pooled connection and its request buffer. Framed SETs are encoded (RESP) straight into
/// the buffer, header and payload as two pieces of one argument: one copy of the block, into
/// memory that is already faulted in, where a `redis::Cmd` copies it twice into fresh buffers.
struct Pooled {
    con: Connection,
    buf: Vec<u8>,
}

/// Appends `SET key header+payload [PX ms]` to `buf`.
fn encode_set(buf: &mut Vec<u8>, item: &Framed<'_>, ttl_ms: Option<u64>) {
    buf.extend_from_slice(if ttl_ms.is_some() {
        b"*5\r\n"
    } else {
        b"*3\r\n"
    });
    bulk(buf, &[b"SET"]);
    bulk(buf, &[item.key.as_bytes()]);
    bulk(buf, &[item.header, item.payload]);
    if let Some(ms) = ttl_ms {
        bulk(buf, &[b"PX"]);
        bulk(buf, &[ms.to_string().as_bytes()]);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| t.as_millis().max(1) as u64)
}

/// Blocks and manifests in a Redis-protocol server.
pub(crate) struct RedisBackend {
    client: Client,
    timeout: Duration,
    pool: Mutex<Vec<Pooled>>,
    /// Where block reads connect with their own RESP parser ([`RespConn`]); `None` for
    /// addresses it does not speak (TLS, Unix sockets): reads then use the `redis` crate.
    endpoint: Option<Endpoint>,
    reads: Mutex<Vec<RespConn>>,
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
        let info = client.get_connection_info();
        let endpoint = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let settings = info.redis_settings();
                Some(Endpoint {
                    host: host.clone(),
                    port: *port,
                    auth: settings
                        .password()
                        .map(|p| (settings.username().map(str::to_string), p.to_string())),
                    db: settings.db(),
                })
            }
            _ => None,
        };
        Ok(Self {
            client,
            timeout,
            pool: Mutex::new(Vec::new()),
            endpoint,
            reads: Mutex::new(Vec::new()),
        })
    }

    /// Runs a block read on a pooled [`RespConn`]; the connection goes back unless an I/O or
    /// protocol error left it out of step. A pooled connection that fails at the connection
    /// level (the server restarted since it was used) is replaced and the read, which is
    /// idempotent, runs once more on a fresh one. `None` when block reads use the `redis` crate.
    fn with_reads<T>(
        &self,
        mut f: impl FnMut(&mut RespConn) -> std::io::Result<Result<T, String>>,
    ) -> Option<Result<T, BackendError>> {
        let endpoint = self.endpoint.as_ref()?;
        let pooled = self
            .reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => match RespConn::connect(endpoint, self.timeout) {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            },
        };
        let mut result = f(&mut conn);
        if !fresh {
            if let Err(e) = &result {
                if !matches!(io_error(e), BackendError::Timeout) {
                    conn = match RespConn::connect(endpoint, self.timeout) {
                        Ok(c) => c,
                        Err(e) => return Some(Err(e)),
                    };
                    result = f(&mut conn);
                }
            }
        }
        conn.out.clear();
        if conn.out.capacity() > BUF_KEEP {
            conn.out = Vec::new();
        }
        Some(match result {
            Ok(answer) => {
                let mut pool = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
                if pool.len() < POOL_MAX {
                    pool.push(conn);
                }
                answer.map_err(BackendError::Other)
            }
            Err(e) => Err(io_error(&e)),
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
        self.with_buf(|p| f(&mut p.con))
    }

    /// As [`RedisBackend::with`], with the connection's request buffer (empty on entry).
    fn with_buf<T>(
        &self,
        f: impl FnOnce(&mut Pooled) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut p = match pooled {
            Some(p) => p,
            None => Pooled {
                con: self.connect()?,
                buf: Vec::new(),
            },
        };
        let result = f(&mut p);
        p.buf.clear();
        if p.buf.capacity() > BUF_KEEP {
            p.buf = Vec::new();
        }
        match result {
            Ok(v) => {
                let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                if pool.len() < POOL_MAX {
                    pool.push(p);
                }
                Ok(v)
            }
            Err(e) => {
                let err = classify(&e);
                if let BackendError::Other(_) = err {
                    if !e.is_unrecoverable_error() {
                        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                        pool.push(p);
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

    fn put_framed(&self, item: Framed<'_>, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.with_buf(|p| {
            encode_set(&mut p.buf, &item, ttl_ms(ttl));
            p.con.req_packed_command(&p.buf)?.extract_error()?;
            Ok(())
        })
    }

    fn put_batch_framed(
        &self,
        items: &[Framed<'_>],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        self.with_buf(|p| {
            let header_room = items.len() * 128;
            let payloads: usize = items.iter().map(|i| i.header.len() + i.payload.len()).sum();
            p.buf.reserve(header_room + payloads);
            for item in items {
                encode_set(&mut p.buf, item, ttl_ms(ttl));
            }
            // One write, then every reply read (even after an error reply, so the connection
            // stays in step); the first error is the result.
            p.con.send_packed_command(&p.buf)?;
            let mut first_err = None;
            for _ in items {
                if let Err(e) = p.con.recv_response()?.extract_error() {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        })
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

    fn get_to(&self, key: &str, sink: &mut dyn ValueSink) -> Result<(), BackendError> {
        let read = self.with_reads(|c| {
            c.out.extend_from_slice(b"*2\r\n");
            bulk(&mut c.out, &[b"GET"]);
            bulk(&mut c.out, &[key.as_bytes()]);
            c.send()?;
            c.bulks_into(1, sink)
        });
        read.unwrap_or_else(|| {
            super::backend::feed(sink, 0, self.get(key)?.as_deref());
            Ok(())
        })
    }

    fn get_batch_to(
        &self,
        keys: &[String],
        value_bytes: usize,
        sink: &mut dyn ValueSink,
    ) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let read = self.with_reads(|c| {
            if value_bytes < STREAM_BYTES {
                c.out
                    .extend_from_slice(format!("*{}\r\n", keys.len() + 1).as_bytes());
                bulk(&mut c.out, &[b"MGET"]);
                for key in keys {
                    bulk(&mut c.out, &[key.as_bytes()]);
                }
                c.send()?;
                return c.array_into(keys.len(), sink);
            }
            // Pipelined GETs rather than one MGET: each reply lands (and is checked) while the
            // server is still writing the next ones.
            for key in keys {
                c.out.extend_from_slice(b"*2\r\n");
                bulk(&mut c.out, &[b"GET"]);
                bulk(&mut c.out, &[key.as_bytes()]);
            }
            c.send()?;
            c.bulks_into(keys.len(), sink)
        });
        read.unwrap_or_else(|| {
            for (i, v) in self.get_batch(keys)?.iter().enumerate() {
                super::backend::feed(sink, i, v.as_deref());
            }
            Ok(())
        })
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.with(|c| redis::cmd("EXISTS").arg(key).query(c))
    }

    /// One pipeline of `EXISTS`, one per key (a multi-key `EXISTS` only counts them), in one
    /// write and one read pass.
    fn exists_batch(&self, keys: &[String]) -> Result<Vec<bool>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let read = self.with_reads(|c| {
            for key in keys {
                c.out.extend_from_slice(b"*2\r\n");
                bulk(&mut c.out, &[b"EXISTS"]);
                bulk(&mut c.out, &[key.as_bytes()]);
            }
            c.send()?;
            Ok(c.ints(keys.len())?
                .map(|n| n.iter().map(|&k| k > 0).collect()))
        });
        read.unwrap_or_else(|| {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("EXISTS").arg(key);
            }
            self.with(|c| pipe.query(c))
        })
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.with(|c| redis::cmd("DEL").arg(key).exec(c))
    }

    fn native_expiry(&self) -> bool {
        true
    }

    fn manifest_get(
        &self,
        key: &str,
        _live: Live<'_>,
    ) -> Result<Option<StoredManifest>, BackendError> {
        let (v, d, pttl): (Option<u64>, Option<Vec<u8>>, i64) =
            self.with(|c| redis::cmd("EVAL").arg(GET).arg(1).arg(key).query(c))?;
        let expiry = u64::try_from(pttl)
            .ok()
            .map(|ms| now_ms().saturating_add(ms).max(1));
        Ok(v.zip(d).map(|(v, d)| (v, d, expiry)))
    }

    fn manifest_put_new(
        &self,
        key: &str,
        frame: Vec<u8>,
        ttl: Option<Duration>,
        _live: Live<'_>,
    ) -> Result<Option<u64>, BackendError> {
        let ttl = ttl_ms(ttl).map_or(String::new(), |ms| ms.to_string());
        let n: u64 = self.with(|c| {
            redis::cmd("EVAL")
                .arg(PUT_NEW)
                .arg(2)
                .arg(key)
                .arg(seq_key(key))
                .arg(&frame)
                .arg(&ttl)
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
