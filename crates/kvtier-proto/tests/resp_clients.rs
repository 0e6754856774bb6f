//! The RESP codec against real clients: `redis-cli`, `redis-benchmark` (Debian's redis-tools,
//! installed by `scripts/install-deps.sh`) and redis-py (in the venv `scripts/python-env.sh`
//! makes) talk to a tiny in-test server on 127.0.0.1 built only from this crate's parser,
//! command recogniser and reply encoder (replies go out with `write_vectored`, resuming after
//! partial writes). Every command the clients send is recorded and must parse and be
//! recognised; the clients must see correct answers. Set `KVTIER_SKIP_PYTHON_TESTS=1` to skip
//! the redis-py test.

use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};

use kvtier_proto::WriteBuf;
use kvtier_proto::resp::{
    ClientCommand, Command, CommandInfo, DEFAULT_CONFIG, Reply, RespLimits, SetCondition,
    config_get_reply, glob_match, hello_reply, parse_command, scan_reply, write_array_len,
    write_bulk,
};

type Store = BTreeMap<Vec<u8>, Vec<u8>>;
/// A received command: its arguments, and the error reply if it was refused.
type Logged = (Vec<Vec<u8>>, Option<String>);

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    /// Every command received.
    log: Mutex<Vec<Logged>>,
}

struct MiniServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MiniServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        MiniServer { addr, shared }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn commands(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    fn names(&self) -> Vec<String> {
        self.commands()
            .iter()
            .map(|(args, _)| {
                args.iter()
                    .take(2)
                    .map(|a| String::from_utf8_lossy(a).to_uppercase())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }
}

fn write_all_vectored(conn: &mut TcpStream, out: &WriteBuf<'_>) -> std::io::Result<()> {
    let mut written = 0;
    let mut iov: Vec<IoSlice<'_>> = Vec::new();
    while written < out.len() {
        iov.clear();
        out.io_slices(written, &mut iov);
        let n = conn.write_vectored(&iov)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    let limits = RespLimits::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut offset = 0;
        loop {
            let parsed = match parse_command(&buf[offset..], &limits) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    let mut out = WriteBuf::new();
                    Reply::Error(e.reply_text().into()).encode(&mut out);
                    let _ = write_all_vectored(&mut conn, &out);
                    return;
                }
            };
            offset += parsed.consumed;
            let args: Vec<Vec<u8>> = parsed.args.iter().map(|a| a.to_vec()).collect();
            let (error, quit, written) = match Command::from_args(&parsed.args) {
                Ok(cmd) => {
                    let quit = matches!(cmd, Command::Quit);
                    let mut store = shared.store.lock().unwrap();
                    (None, quit, execute(cmd, &mut store, &mut conn))
                }
                Err(e) => {
                    let mut out = WriteBuf::new();
                    Reply::Error(e.reply_text().into()).encode(&mut out);
                    (
                        Some(e.reply_text()),
                        false,
                        write_all_vectored(&mut conn, &out),
                    )
                }
            };
            shared.log.lock().unwrap().push((args, error));
            if quit || written.is_err() {
                return;
            }
        }
        buf.drain(..offset);
    }
}

/// Runs one command and writes its reply; read replies borrow the stored values.
fn execute(cmd: Command<'_>, store: &mut Store, conn: &mut TcpStream) -> std::io::Result<()> {
    let mut out = WriteBuf::new();
    match cmd {
        Command::Set(set) => {
            let old = store.get(set.key).cloned();
            let allowed = match set.condition {
                Some(SetCondition::Nx) => old.is_none(),
                Some(SetCondition::Xx) => old.is_some(),
                None => true,
            };
            if allowed {
                store.insert(set.key.to_vec(), set.value.to_vec());
            }
            match (set.get, &old) {
                (true, Some(v)) => write_bulk(&mut out, v),
                (false, _) if allowed => Reply::OK.encode(&mut out),
                _ => Reply::Null.encode(&mut out),
            }
            write_all_vectored(conn, &out)
        }
        Command::Del(keys) => {
            let n = keys
                .iter()
                .filter(|k| store.remove(&k[..]).is_some())
                .count();
            Reply::Integer(n as i64).encode(&mut out);
            write_all_vectored(conn, &out)
        }
        other => {
            reply(other, store, &mut out);
            write_all_vectored(conn, &out)
        }
    }
}

fn reply<'a>(cmd: Command<'a>, store: &'a Store, out: &mut WriteBuf<'a>) {
    match cmd {
        Command::Ping(None) => Reply::PONG.encode(out),
        Command::Ping(Some(m)) | Command::Echo(m) => write_bulk(out, m),
        Command::Get(key) => match store.get(key) {
            Some(v) => write_bulk(out, v),
            None => Reply::Null.encode(out),
        },
        Command::MGet(keys) => {
            write_array_len(out, keys.len());
            for k in keys {
                match store.get(&k[..]) {
                    Some(v) => write_bulk(out, v),
                    None => Reply::Null.encode(out),
                }
            }
        }
        Command::Exists(keys) => {
            let n = keys.iter().filter(|k| store.contains_key(&k[..])).count();
            Reply::Integer(n as i64).encode(out);
        }
        Command::Scan(scan) => {
            let count = scan.count.unwrap_or(10) as usize;
            let start = scan.cursor as usize;
            let page: Vec<&[u8]> = store
                .keys()
                .skip(start)
                .take(count)
                .filter(|k| scan.pattern.is_none_or(|p| glob_match(p, k)))
                .map(Vec::as_slice)
                .collect();
            let next = if start + count >= store.len() {
                0
            } else {
                (start + count) as u64
            };
            scan_reply(out, next, page);
        }
        Command::Info(_) => write_bulk(
            out,
            b"# Server\r\nredis_version:7.0.0\r\nkvtier:test-mini\r\n",
        ),
        Command::DbSize => Reply::Integer(store.len() as i64).encode(out),
        Command::Hello(hello) => match hello_reply(&hello, "kvtier-mini", "0.1.0", 1) {
            Ok(r) => r.encode(out),
            Err(text) => Reply::Error(text.into()).encode(out),
        },
        Command::Select(_) | Command::Quit => Reply::OK.encode(out),
        Command::ConfigGet(params) => config_get_reply(params, DEFAULT_CONFIG).encode(out),
        Command::Client(ClientCommand::GetName) => Reply::Null.encode(out),
        Command::Client(ClientCommand::Id) => Reply::Integer(1).encode(out),
        Command::Client(_) => Reply::OK.encode(out),
        Command::Command(CommandInfo::Count) => Reply::Integer(15).encode(out),
        Command::Command(_) => Reply::Array(vec![]).encode(out),
        other => Reply::Error(format!("ERR not in the mini server: {other:?}").into()).encode(out),
    }
}

fn redis_cli(server: &MiniServer, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Process::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-cli is not installed: run scripts/install-deps.sh");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_commands_parse_and_get_answers() {
    let server = MiniServer::start();
    assert_eq!(redis_cli(&server, &["SET", "k", "v"], None), "OK\n");
    assert_eq!(redis_cli(&server, &["GET", "k"], None), "v\n");
    // -x: the last argument from stdin, with CRLF and NUL inside (a binary bulk).
    assert_eq!(
        redis_cli(&server, &["-x", "SET", "bin"], Some(b"a\r\nb\0c")),
        "OK\n"
    );
    assert_eq!(
        server
            .shared
            .store
            .lock()
            .unwrap()
            .get(&b"bin"[..])
            .map(Vec::as_slice),
        Some(&b"a\r\nb\0c"[..])
    );
    assert_eq!(redis_cli(&server, &["SET", "k", "w", "NX"], None), "\n");
    assert_eq!(
        redis_cli(&server, &["SET", "k2", "x", "PX", "5000", "NX"], None),
        "OK\n"
    );
    assert_eq!(
        redis_cli(&server, &["MGET", "k", "nope", "k2"], None),
        "v\n\nx\n"
    );
    assert_eq!(
        redis_cli(&server, &["EXISTS", "k", "k2", "nope"], None),
        "2\n"
    );
    assert_eq!(
        redis_cli(&server, &["SCAN", "0", "MATCH", "k*", "COUNT", "1"], None),
        "1\n\n",
        "the first page of one key holds only `bin`, filtered out: cursor 1, no keys"
    );
    let mut scanned: Vec<String> = redis_cli(&server, &["--scan", "--pattern", "k*"], None)
        .lines()
        .map(str::to_owned)
        .collect();
    scanned.sort();
    assert_eq!(scanned, ["k", "k2"]);
    assert_eq!(
        redis_cli(&server, &["DEL", "k", "bin", "nope"], None),
        "2\n"
    );
    assert_eq!(redis_cli(&server, &["PING"], None), "PONG\n");
    assert!(redis_cli(&server, &["INFO"], None).contains("redis_version:7.0.0"));

    let log = server.commands();
    let set = log
        .iter()
        .find(|(args, _)| args.first().is_some_and(|a| a == b"SET"))
        .expect("a SET arrived");
    assert_eq!(set.0, [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
    let refused: Vec<_> = log.iter().filter(|(_, e)| e.is_some()).collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(
        server.names().iter().any(|n| n == "SCAN 0"),
        "{:?}",
        server.names()
    );
}

#[test]
fn inline_commands_as_telnet_sends_them() {
    let server = MiniServer::start();
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.write_all(b"SET greeting \"hello world\"\r\nGET greeting\nPING\r\nQUIT\r\n")
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n+OK\r\n");
}

#[test]
fn protocol_error_gets_redis_reply_and_close() {
    let server = MiniServer::start();
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.write_all(b"*1\r\n$3\r\nGET\r\n*1\r\n+x\r\n").unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    assert_eq!(
        reply,
        b"-ERR wrong number of arguments for 'get' command\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );
}

#[test]
fn redis_benchmark_runs_against_the_codec() {
    let server = MiniServer::start();
    let out = Process::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.port()])
        .args([
            "-t", "set,get", "-n", "2000", "-c", "4", "-P", "8", "-d", "100", "-r", "50", "--csv",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("redis-benchmark is not installed: run scripts/install-deps.sh");
    assert!(out.status.success());
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains("\"SET\"") && csv.contains("\"GET\""), "{csv}");
    let names = server.names();
    // 2,000 SETs and 2,000 GETs, pipelined 8 deep over 4 connections, all recognised.
    assert_eq!(names.iter().filter(|n| n.starts_with("SET ")).count(), 2000);
    assert_eq!(names.iter().filter(|n| n.starts_with("GET ")).count(), 2000);
    let refused: Vec<_> = server
        .commands()
        .into_iter()
        .filter(|(_, e)| e.is_some())
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    // What redis-benchmark asks at connect was served.
    assert!(names.iter().any(|n| n == "CONFIG GET"), "{names:?}");
    let values: Vec<_> = server
        .shared
        .store
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect();
    assert!(!values.is_empty() && values.iter().all(|v| v.len() == 100));
}

#[test]
fn redis_py_works_through_the_codec() {
    if kvtier_testkit::python::skip_python_tests() {
        return;
    }
    let server = MiniServer::start();
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), client_name="kvtier-test")
assert r.ping()
blob = bytes(range(256)) * 40
assert r.set("lmcache:abc:kv_bytes", blob)
assert r.set("lmcache:abc:metadata", b"{}", ex=60)
assert r.set("lmcache:abc:metadata", b"x", nx=True) is None
assert r.get("lmcache:abc:kv_bytes") == blob
assert r.mget(["lmcache:abc:metadata", "missing"]) == [b"{}", None]
assert r.exists("lmcache:abc:kv_bytes", "missing") == 1
assert sorted(r.scan_iter(match="*:kv_bytes", count=1)) == [b"lmcache:abc:kv_bytes"]
assert r.info()["redis_version"] == "7.0.0"
assert r.delete("lmcache:abc:kv_bytes", "lmcache:abc:metadata") == 2
assert r.get("lmcache:abc:kv_bytes") is None
p = r.pipeline(transaction=False)
for i in range(50):
    p.set(f"k{i}", str(i))
for i in range(50):
    p.get(f"k{i}")
res = p.execute()
assert res[50:] == [str(i).encode() for i in range(50)], res
print("ok")
"#;
    let out = Process::new(kvtier_testkit::python::python())
        .args(["-c", script, &server.port()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let names = server.names();
    assert!(names.iter().any(|n| n == "CLIENT SETNAME"), "{names:?}");
    let refused: Vec<_> = server
        .commands()
        .into_iter()
        .filter(|(_, e)| e.is_some())
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
}
