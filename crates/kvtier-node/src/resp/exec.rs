//! Running one RESP command against the keyspace and writing its reply.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;

use bytes::Bytes;
use kvtier_proto::WriteBuf;
use kvtier_proto::resp::{
    Arg, ClientCommand, Command, CommandInfo, Expiry, Reply, Scan, Set, SetCondition,
    config_get_reply, glob_match, hello_reply, parse_command_into,
};
use kvtier_server::{InPlace, ReplyBuf, Response};

use super::keyspace::{Condition, SetError, Ttl, Value, now_ms};
use super::{RespOutcome, RespService, RespSession};

/// Values this long or longer are sent from where they are stored (a guarded segment: an
/// iovec, a boxed guard and a reference count each); shorter ones are copied into the reply,
/// which for a pipeline of small values is cheaper than a segment per value.
const SEND_IN_PLACE: usize = 16 << 10;

/// The version of redis whose behaviour the port follows, for clients that look at it.
const REDIS_VERSION: &str = "7.2.0";

/// Commands the port serves (`COMMAND COUNT`).
const COMMANDS_SERVED: i64 = 16;

/// Where a command's reply goes: protocol bytes into [`meta`](Sink::meta), large stored
/// values as segments sent from where they are stored.
pub(crate) trait Sink {
    /// The reply's protocol bytes so far.
    fn meta(&mut self) -> &mut Vec<u8>;

    /// Appends a stored value without copying it.
    fn shared(&mut self, value: &Bytes);

    fn reply(&mut self, reply: &Reply<'_>) {
        let mut buf = WriteBuf::new();
        reply.encode(&mut buf);
        let meta = self.meta();
        for segment in buf.segments() {
            meta.extend_from_slice(segment);
        }
    }

    fn error(&mut self, text: &str) {
        self.reply(&Reply::Error(Cow::Borrowed(text)));
    }

    #[inline]
    fn line(&mut self, prefix: u8, n: i64) {
        let meta = self.meta();
        meta.push(prefix);
        meta.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        meta.extend_from_slice(b"\r\n");
    }

    /// A bulk reply of `value` (or null): copied when short, else sent from where it is
    /// stored.
    #[inline]
    fn value(&mut self, value: Option<Value<'_>>) {
        let Some(value) = value else {
            self.meta().extend_from_slice(b"$-1\r\n");
            return;
        };
        let bytes = value.as_slice();
        self.line(b'$', bytes.len() as i64);
        match value {
            Value::Shared(shared) if bytes.len() >= SEND_IN_PLACE => self.shared(shared),
            _ => self.meta().extend_from_slice(bytes),
        }
        self.meta().extend_from_slice(b"\r\n");
    }
}

/// A reply built as a [`Response`] (commands that came through a worker or a frame buffer).
struct Out {
    response: Response,
    meta: Vec<u8>,
}

impl Out {
    fn new() -> Self {
        Self {
            response: Response::new(),
            meta: Vec::with_capacity(64),
        }
    }

    fn finish(self) -> Response {
        if self.meta.is_empty() {
            self.response
        } else {
            self.response.owned(self.meta)
        }
    }
}

impl Sink for Out {
    fn meta(&mut self) -> &mut Vec<u8> {
        &mut self.meta
    }

    fn shared(&mut self, value: &Bytes) {
        let meta = std::mem::take(&mut self.meta);
        self.response = std::mem::take(&mut self.response)
            .owned(meta)
            .guarded(value.clone());
    }
}

/// A reply written in place, into the connection's shared reply buffer.
impl Sink for ReplyBuf<'_> {
    #[inline]
    fn meta(&mut self) -> &mut Vec<u8> {
        self.bytes()
    }

    fn shared(&mut self, value: &Bytes) {
        self.guarded(value.clone());
    }
}

thread_local! {
    /// The argument vector's allocation, kept between commands of this thread.
    static ARGS: Cell<Vec<Arg<'static>>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with an empty argument vector that reuses this thread's allocation.
fn with_args<'a, R>(f: impl FnOnce(&mut Vec<Arg<'a>>) -> R) -> R {
    // Vectors are covariant: the stored `'static` vector serves as one of `'a`; emptied,
    // it goes back re-typed by an in-place collect (same layout, same allocation).
    let mut args: Vec<Arg<'a>> = ARGS.take();
    let r = f(&mut args);
    args.clear();
    ARGS.set(args.into_iter().map(|_| Arg::Borrowed(&[])).collect());
    r
}

impl RespService {
    /// Runs the command in `frame` (one command, as the framer cut it).
    pub(crate) fn handle_frame(&self, session: &RespSession, frame: &[u8]) -> RespOutcome {
        let mut out = Out::new();
        let close = self.execute(session, frame, &mut out);
        RespOutcome {
            response: out.finish(),
            close,
        }
    }

    /// Runs the command in `frame` with its reply written into the connection's reply buffer
    /// (see [`kvtier_server::Service::serve_in_place`]).
    pub(crate) fn serve_in_place(
        &self,
        session: &RespSession,
        frame: &[u8],
        out: &mut ReplyBuf<'_>,
    ) -> InPlace {
        if self.execute(session, frame, out) {
            InPlace::ServedThenClose
        } else {
            InPlace::Served
        }
    }

    /// Runs the command in `frame` into `out`; whether the connection closes after it.
    fn execute<O: Sink>(&self, session: &RespSession, frame: &[u8], out: &mut O) -> bool {
        with_args(|args| match parse_command_into(frame, &self.limits, args) {
            // An empty command (`*0`, a blank line): nothing to answer.
            Ok(None) => false,
            Ok(Some(_)) => {
                self.commands.add(1);
                match Command::from_args(args) {
                    Ok(command) => self.run(session, command, out),
                    Err(e) => {
                        self.errors.add(1);
                        out.error(&e.reply_text());
                        false
                    }
                }
            }
            Err(e) => {
                // The framer cuts by length; a last bulk not followed by CRLF is only seen
                // here. Answer as redis does and close.
                self.errors.add(1);
                out.error(&e.reply_text());
                true
            }
        })
    }

    /// Runs one command into `out`; whether the connection closes after it.
    fn run<O: Sink>(&self, session: &RespSession, command: Command<'_>, out: &mut O) -> bool {
        match command {
            Command::Ping(None) => out.meta().extend_from_slice(b"+PONG\r\n"),
            Command::Ping(Some(message)) | Command::Echo(message) => {
                out.reply(&Reply::Bulk(message));
            }
            Command::Get(key) => self.get(key, out),
            Command::Set(set) => self.set(&set, out),
            Command::MGet(keys) => {
                out.line(b'*', keys.len() as i64);
                for key in keys {
                    self.get(key, out);
                }
            }
            Command::Exists(keys) => {
                let n = keys.iter().filter(|k| self.keyspace.contains(k)).count();
                out.line(b':', n as i64);
            }
            Command::Del(keys) => {
                let n = keys.iter().filter(|k| self.keyspace.remove(k)).count();
                out.line(b':', n as i64);
            }
            Command::Scan(scan) => self.scan(&scan, out),
            Command::Info(sections) => {
                let text = self.info(sections.iter().map(|s| s.to_ascii_lowercase()).collect());
                out.reply(&Reply::Bulk(text.as_bytes()));
            }
            Command::DbSize => out.line(b':', self.keyspace.counts().keys as i64),
            Command::Select(0) => out.meta().extend_from_slice(b"+OK\r\n"),
            Command::Select(_) => self.fail(out, "ERR DB index is out of range"),
            Command::Quit => {
                out.meta().extend_from_slice(b"+OK\r\n");
                return true;
            }
            Command::ConfigGet(params) => {
                let settings = self.settings();
                let pairs: Vec<(&str, &str)> =
                    settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
                out.reply(&config_get_reply(params, &pairs));
            }
            Command::Client(client) => self.client(session, client, out),
            Command::Command(CommandInfo::Count) => out.line(b':', COMMANDS_SERVED),
            Command::Command(_) => out.reply(&Reply::Array(Vec::new())),
            Command::Hello(hello) => {
                if let Some(name) = hello.setname {
                    *session.name.lock() = Some(name.to_vec());
                }
                match hello_reply(&hello, "kvtier", REDIS_VERSION, session.id) {
                    Ok(reply) => out.reply(&reply),
                    Err(text) => self.fail(out, text),
                }
            }
            _ => self.fail(out, "ERR unknown command"),
        }
        false
    }

    fn fail<O: Sink>(&self, out: &mut O, text: &str) {
        self.errors.add(1);
        out.error(text);
    }

    /// GET's reply for `key` into `out`, counted as a hit or a miss.
    fn get<O: Sink>(&self, key: &[u8], out: &mut O) {
        let hit = self.keyspace.with_value(key, |value| {
            out.value(value);
            value.is_some()
        });
        if hit {
            self.hits.add(1);
        } else {
            self.misses.add(1);
        }
    }

    fn set<O: Sink>(&self, set: &Set<'_>, out: &mut O) {
        let now = now_ms;
        let at = |ms: Option<u64>| ms.filter(|&ms| ms > 0).map(Ttl::At);
        let ttl = match set.expiry {
            None => Some(Ttl::None),
            Some(Expiry::KeepTtl) => Some(Ttl::Keep),
            Some(Expiry::Ex(s)) => at(s.checked_mul(1000).and_then(|ms| ms.checked_add(now()))),
            Some(Expiry::Px(ms)) => at(ms.checked_add(now())),
            Some(Expiry::ExAt(s)) => at(s.checked_mul(1000)),
            Some(Expiry::PxAt(ms)) => at(Some(ms)),
        };
        let Some(ttl) = ttl else {
            return self.fail(out, "ERR invalid expire time in 'set' command");
        };
        let condition = match set.condition {
            None => Condition::Always,
            Some(SetCondition::Nx) => Condition::IfAbsent,
            Some(SetCondition::Xx) => Condition::IfPresent,
        };
        match self
            .keyspace
            .set(set.key, set.value, condition, ttl, set.get)
        {
            Ok(done) if set.get => out.value(done.old.as_ref().map(Value::Shared)),
            Ok(done) if done.stored => out.meta().extend_from_slice(b"+OK\r\n"),
            Ok(_) => out.value(None),
            Err(SetError::OverBudget { .. }) => self.fail(
                out,
                "OOM command not allowed when used memory > 'maxmemory'.",
            ),
        }
    }

    fn scan<O: Sink>(&self, scan: &Scan<'_>, out: &mut O) {
        let count = scan
            .count
            .map_or(10, |c| usize::try_from(c).unwrap_or(usize::MAX))
            .max(1);
        // Every key is a string: a TYPE filter for anything else matches nothing.
        let strings = scan
            .key_type
            .is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
        let (next, keys) = self.keyspace.scan(scan.cursor, count, |key| {
            strings && scan.pattern.is_none_or(|p| glob_match(p, key))
        });
        let keys: Vec<Reply<'_>> = keys.iter().map(|k| Reply::Bulk(k)).collect();
        let cursor = next.to_string();
        out.reply(&Reply::Array(vec![
            Reply::Bulk(cursor.as_bytes()),
            Reply::Array(keys),
        ]));
    }

    fn client<O: Sink>(&self, session: &RespSession, client: ClientCommand<'_>, out: &mut O) {
        match client {
            ClientCommand::SetName(name) => {
                if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return self.fail(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                *session.name.lock() = (!name.is_empty()).then(|| name.to_vec());
                out.meta().extend_from_slice(b"+OK\r\n");
            }
            ClientCommand::GetName => {
                let name = session.name.lock().clone();
                out.value(name.as_deref().map(Value::Inline));
            }
            ClientCommand::SetInfo { .. } => out.meta().extend_from_slice(b"+OK\r\n"),
            ClientCommand::Id => out.line(b':', session.id),
            _ => self.fail(out, "ERR unknown subcommand of CLIENT"),
        }
    }

    /// What CONFIG GET reports.
    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("save", String::new()),
            ("appendonly", "no".into()),
            ("maxmemory", self.config.memory_budget.bytes().to_string()),
            ("maxmemory-policy", "allkeys-lru".into()),
            (
                "proto-max-bulk-len",
                self.config.max_value_bytes.bytes().to_string(),
            ),
            ("databases", "1".into()),
        ]
    }

    /// INFO's text for `sections` (empty, `default`, `all` or `everything`: every section).
    fn info(&self, sections: Vec<Vec<u8>>) -> String {
        let all = sections.is_empty()
            || sections
                .iter()
                .any(|s| matches!(s.as_slice(), b"all" | b"default" | b"everything"));
        let want = |name: &[u8]| all || sections.iter().any(|s| s == name);
        let stats = self.stats();
        let mut text = String::new();
        if want(b"server") {
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nkvtier_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                self.port.get().copied().unwrap_or(0),
                self.started.elapsed().as_secs(),
            );
        }
        if want(b"memory") {
            let _ = write!(
                text,
                "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:allkeys-lru\r\n\r\n",
                stats.used_bytes, stats.budget_bytes
            );
        }
        if want(b"persistence") {
            text.push_str("# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\n\r\n");
        }
        if want(b"stats") {
            let _ = write!(
                text,
                "# Stats\r\ntotal_commands_processed:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nevicted_keys:{}\r\nexpired_keys:{}\r\ntotal_error_replies:{}\r\n\r\n",
                stats.commands,
                stats.hits,
                stats.misses,
                stats.evicted,
                stats.expired,
                stats.errors
            );
        }
        if want(b"keyspace") {
            text.push_str("# Keyspace\r\n");
            if stats.keys > 0 {
                let _ = write!(
                    text,
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    stats.keys, stats.keys_with_expiry
                );
            }
        }
        text
    }
}
