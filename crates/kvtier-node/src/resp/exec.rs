//! Running one RESP command against the keyspace and writing its reply.

use std::borrow::Cow;
use std::fmt::Write as _;

use kvtier_proto::WriteBuf;
use kvtier_proto::resp::{
    ClientCommand, Command, CommandInfo, Expiry, Reply, Scan, Set, SetCondition, config_get_reply,
    glob_match, hello_reply, parse_command_into,
};
use kvtier_server::Response;

use super::keyspace::{Condition, SetError, Ttl, Value, now_ms};
use super::{RespOutcome, RespService, RespSession};

/// Values this long or longer are sent from where they are stored (a guarded segment);
/// shorter ones are copied into the reply.
const SEND_IN_PLACE: usize = 1024;

/// The version of redis whose behaviour the port follows, for clients that look at it.
const REDIS_VERSION: &str = "7.2.0";

/// Commands the port serves (`COMMAND COUNT`).
const COMMANDS_SERVED: i64 = 16;

/// A reply being built: protocol bytes accumulate in `meta`; large values become guarded
/// segments between them.
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

    fn reply(&mut self, reply: &Reply<'_>) {
        let mut buf = WriteBuf::new();
        reply.encode(&mut buf);
        for segment in buf.segments() {
            self.meta.extend_from_slice(segment);
        }
    }

    fn error(&mut self, text: &str) {
        self.reply(&Reply::Error(Cow::Borrowed(text)));
    }

    fn line(&mut self, prefix: u8, n: i64) {
        self.meta.push(prefix);
        let _ = write!(DigitSink(&mut self.meta), "{n}");
        self.meta.extend_from_slice(b"\r\n");
    }

    /// A bulk reply of `value` (or null): copied when short, else sent from where it is
    /// stored.
    fn value(&mut self, value: Option<Value<'_>>) {
        let Some(value) = value else {
            self.meta.extend_from_slice(b"$-1\r\n");
            return;
        };
        let bytes = value.as_slice();
        self.line(b'$', bytes.len() as i64);
        match value {
            Value::Shared(shared) if bytes.len() >= SEND_IN_PLACE => {
                let meta = std::mem::take(&mut self.meta);
                self.response = std::mem::take(&mut self.response)
                    .owned(meta)
                    .guarded(shared.clone());
            }
            _ => self.meta.extend_from_slice(bytes),
        }
        self.meta.extend_from_slice(b"\r\n");
    }

    fn finish(self) -> Response {
        if self.meta.is_empty() {
            self.response
        } else {
            self.response.owned(self.meta)
        }
    }
}

/// `write!` into a byte vector.
struct DigitSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for DigitSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl RespService {
    /// Runs the command in `frame` (one command, as the framer cut it).
    pub(crate) fn handle_frame(&self, session: &RespSession, frame: &[u8]) -> RespOutcome {
        let mut args = Vec::new();
        let mut out = Out::new();
        let mut close = false;
        match parse_command_into(frame, &self.limits, &mut args) {
            // An empty command (`*0`, a blank line): nothing to answer.
            Ok(None) => {}
            Ok(Some(_)) => {
                self.commands.add(1);
                match Command::from_args(&args) {
                    Ok(command) => close = self.run(session, command, &mut out),
                    Err(e) => {
                        self.errors.add(1);
                        out.error(&e.reply_text());
                    }
                }
            }
            Err(e) => {
                // The framer cuts by length; a last bulk not followed by CRLF is only seen
                // here. Answer as redis does and close.
                self.errors.add(1);
                out.error(&e.reply_text());
                close = true;
            }
        }
        RespOutcome {
            response: out.finish(),
            close,
        }
    }

    /// Runs one command into `out`; whether the connection closes after it.
    fn run(&self, session: &RespSession, command: Command<'_>, out: &mut Out) -> bool {
        match command {
            Command::Ping(None) => out.reply(&Reply::PONG),
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
            Command::Select(0) => out.reply(&Reply::OK),
            Command::Select(_) => self.fail(out, "ERR DB index is out of range"),
            Command::Quit => {
                out.reply(&Reply::OK);
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

    fn fail(&self, out: &mut Out, text: &str) {
        self.errors.add(1);
        out.error(text);
    }

    /// GET's reply for `key` into `out`, counted as a hit or a miss.
    fn get(&self, key: &[u8], out: &mut Out) {
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

    fn set(&self, set: &Set<'_>, out: &mut Out) {
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
            Ok(done) if done.stored => out.reply(&Reply::OK),
            Ok(_) => out.value(None),
            Err(SetError::OverBudget { .. }) => self.fail(
                out,
                "OOM command not allowed when used memory > 'maxmemory'.",
            ),
        }
    }

    fn scan(&self, scan: &Scan<'_>, out: &mut Out) {
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

    fn client(&self, session: &RespSession, client: ClientCommand<'_>, out: &mut Out) {
        match client {
            ClientCommand::SetName(name) => {
                if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return self.fail(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                *session.name.lock() = (!name.is_empty()).then(|| name.to_vec());
                out.reply(&Reply::OK);
            }
            ClientCommand::GetName => {
                let name = session.name.lock().clone();
                out.value(name.as_deref().map(Value::Inline));
            }
            ClientCommand::SetInfo { .. } => out.reply(&Reply::OK),
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
