//! The Redis-compatible port of a real node, driven by real clients on both IO backends:
//! `redis-cli` and `redis-benchmark` (installed by `scripts/install-deps.sh`), redis-py (in
//! the venv of `scripts/python-env.sh`, skipped with `KVTIER_SKIP_PYTHON_TESTS=1`), and raw
//! sockets for pipelining, inline commands and protocol errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use common::{BACKENDS, config, start};
use kvtier_node::{ByteSize, IoBackend, Node, NodeConfig};

fn resp_node(
    dir: &std::path::Path,
    backend: IoBackend,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Option<Node> {
    let mut c = config(dir, backend, 4096);
    c.redis_listen = Some("127.0.0.1:0".parse().unwrap());
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    tweak(&mut c);
    start(c)
}

fn redis_addr(node: &Node) -> SocketAddr {
    node.redis_addr().expect("the RESP port is on")
}

fn redis_cli(addr: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Process::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-cli is not installed: run scripts/install-deps.sh");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    // Error replies make redis-cli exit non-zero; their text is what the tests check.
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn redis_cli_gets_redis_answers() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = resp_node(dir.path(), backend, |_| {}) else {
            continue;
        };
        let addr = redis_addr(&node);
        assert_eq!(redis_cli(addr, &["PING"], None), "PONG\n");
        assert_eq!(redis_cli(addr, &["SET", "k", "v"], None), "OK\n");
        assert_eq!(redis_cli(addr, &["GET", "k"], None), "v\n");
        // -x: a binary value from stdin, with CRLF and NUL inside, and one of 300 KiB (sent
        // back from where it is stored).
        assert_eq!(
            redis_cli(addr, &["-x", "SET", "bin"], Some(b"a\r\nb\0c")),
            "OK\n"
        );
        let big: Vec<u8> = (0..300 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(redis_cli(addr, &["-x", "SET", "big"], Some(&big)), "OK\n");
        let got = redis_cli(addr, &["GET", "big"], None);
        assert_eq!(got.trim_end().as_bytes(), &big[..]);
        assert!(redis_cli(addr, &["STRLEN", "big"], None).contains("unknown command"));
        assert_eq!(redis_cli(addr, &["SET", "k", "w", "NX"], None), "\n");
        assert_eq!(
            redis_cli(addr, &["SET", "k", "w", "XX", "GET"], None),
            "v\n"
        );
        assert_eq!(
            redis_cli(addr, &["SET", "k2", "x", "PX", "5000", "NX"], None),
            "OK\n"
        );
        assert_eq!(
            redis_cli(addr, &["MGET", "k", "nope", "k2"], None),
            "w\n\nx\n"
        );
        assert_eq!(
            redis_cli(addr, &["EXISTS", "k", "k2", "nope", "k"], None),
            "3\n"
        );
        assert_eq!(redis_cli(addr, &["DBSIZE"], None), "4\n");
        let mut scanned: Vec<String> = redis_cli(addr, &["--scan", "--pattern", "k*"], None)
            .lines()
            .map(str::to_owned)
            .collect();
        scanned.sort();
        assert_eq!(scanned, ["k", "k2"]);
        assert_eq!(redis_cli(addr, &["DEL", "k", "bin", "nope"], None), "2\n");
        assert_eq!(redis_cli(addr, &["GET", "k"], None), "\n");
        let info = redis_cli(addr, &["INFO"], None);
        assert!(info.contains("redis_version:"), "{info}");
        assert!(info.contains("db0:keys=2,expires=1"), "{info}");
        assert!(
            info.contains(&format!("tcp_port:{}", addr.port())),
            "{info}"
        );
        assert!(
            redis_cli(addr, &["SELECT", "1"], None).starts_with("ERR DB index is out of range\n")
        );
        assert_eq!(node.stat("resp_keys"), Some(2));
        node.shutdown().unwrap();
    }
}

#[test]
fn pipelines_inline_commands_and_quit_answer_in_order() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = resp_node(dir.path(), backend, |_| {}) else {
            continue;
        };
        let mut conn = connect(redis_addr(&node));
        // A multibulk SET of 64 KiB split across writes, a pipeline of mixed commands, an
        // inline command as telnet sends it, an empty command, then QUIT.
        let value = vec![b'z'; 64 * 1024];
        let mut wire =
            format!("*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n${}\r\n", value.len()).into_bytes();
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
        for i in 0..100 {
            wire.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$1\r\n{}\r\n",
                    i % 10,
                    i % 10
                )
                .as_bytes(),
            );
            wire.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n$2\r\nk{}\r\n", i % 10).as_bytes());
        }
        wire.extend_from_slice(
            b"*0\r\nGET big1\r\nSET greeting \"hello world\"\r\nGET greeting\nQUIT\r\n",
        );
        for chunk in wire.chunks(7000) {
            conn.write_all(chunk).unwrap();
        }
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).unwrap();
        let mut want = b"+OK\r\n".to_vec();
        for i in 0..100 {
            want.extend_from_slice(format!("+OK\r\n$1\r\n{}\r\n", i % 10).as_bytes());
        }
        want.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        want.extend_from_slice(&value);
        want.extend_from_slice(b"\r\n+OK\r\n$11\r\nhello world\r\n+OK\r\n");
        assert!(
            reply == want,
            "{backend:?}: {} bytes, wanted {}",
            reply.len(),
            want.len()
        );
        node.shutdown().unwrap();
    }
}

#[test]
fn protocol_errors_close_only_that_connection() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = resp_node(dir.path(), backend, |c| {
            c.resp.max_value_bytes = ByteSize::kib(64);
        }) else {
            continue;
        };
        let addr = redis_addr(&node);
        let mut good = connect(addr);
        good.write_all(b"SET stays 1\r\n").unwrap();
        let mut ok = [0u8; 5];
        good.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        for (bad, want) in [
            (&b"*1\r\n$3\r\nGET\r\n*1\r\n+x\r\n"[..], &b"-ERR wrong number of arguments for 'get' command\r\n-ERR Protocol error: expected '$', got '+'\r\n"[..]),
            (b"*2\r\n$3\r\nGET\r\n$999999\r\n", b"-ERR Protocol error: bulk length 999999 exceeds the limit of 65536\r\n"),
            (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*1\r\n$4\r\nPINGxx", b"-ERR Protocol error: expected CRLF after bulk data\r\n"),
            (b"SET a \"b\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        ] {
            let mut conn = connect(addr);
            conn.write_all(bad).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(want));
        }
        good.write_all(b"GET stays\r\n").unwrap();
        let mut reply = [0u8; 7];
        good.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"$1\r\n1\r\n");
        assert!(node.stat("resp_errors").unwrap() >= 4);
        node.shutdown().unwrap();
    }
}

#[test]
fn the_memory_budget_holds_and_evictions_show_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let Some(node) = resp_node(dir.path(), IoBackend::Epoll, |c| {
        c.resp.memory_budget = ByteSize::mib(1);
    }) else {
        return;
    };
    let mut conn = connect(redis_addr(&node));
    let value = vec![7u8; 32 * 1024];
    let mut wire = Vec::new();
    for i in 0..100 {
        wire.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$6\r\nv{i:05}\r\n${}\r\n", value.len()).as_bytes(),
        );
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
    }
    // A value bigger than the whole budget is refused as redis refuses it past maxmemory.
    wire.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n${}\r\n", 2 << 20).as_bytes());
    wire.extend(std::iter::repeat_n(b'h', 2 << 20));
    wire.extend_from_slice(b"\r\nQUIT\r\n");
    conn.write_all(&wire).unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("+OK\r\n").count(), 101, "100 SETs and QUIT");
    assert!(text.contains("-OOM command not allowed"), "{text}");
    let used = node.stat("resp_used_bytes").unwrap();
    assert!(used <= 1 << 20 && used > 900 << 10, "{used}");
    let keys = node.stat("resp_keys").unwrap();
    assert!((28..32).contains(&keys), "{keys}");
    assert_eq!(node.stat("resp_evicted"), Some(100 - keys));
    let (status, metrics) = kvtier_testkit::http::get(node.metrics_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("kvtier_resp_evicted_total {}", 100 - keys)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("kvtier_resp_keys {keys}")),
        "{metrics}"
    );
    node.shutdown().unwrap();
}

#[test]
fn redis_benchmark_runs_against_the_node() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let Some(node) = resp_node(dir.path(), backend, |_| {}) else {
            continue;
        };
        let out = Process::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &redis_addr(&node).port().to_string(),
            ])
            .args([
                "-t", "set,get", "-n", "20000", "-c", "8", "-P", "16", "-d", "100", "-r", "1000",
                "--csv",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("redis-benchmark is not installed: run scripts/install-deps.sh");
        assert!(out.status.success());
        let csv = String::from_utf8_lossy(&out.stdout);
        assert!(csv.contains("\"SET\"") && csv.contains("\"GET\""), "{csv}");
        assert!(node.stat("resp_commands").unwrap() >= 40_000);
        assert_eq!(node.stat("resp_errors"), Some(0));
        let keys = node.stat("resp_keys").unwrap();
        assert!((900..=1000).contains(&keys), "{keys}");
        assert!(node.stat("resp_hits").unwrap() > 15_000);
        node.shutdown().unwrap();
    }
}

#[test]
fn redis_py_works_as_an_lmcache_style_backend() {
    if kvtier_testkit::python::skip_python_tests() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(node) = resp_node(dir.path(), IoBackend::Auto, |_| {}) else {
        return;
    };
    let script = r#"
import sys, time, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), client_name="kvtier-test")
assert r.ping()
assert r.client_getname() in ("kvtier-test", b"kvtier-test")
blob = bytes(range(256)) * 4096   # 1 MiB of KV bytes
for chunk in range(3):
    key = f"vllm@llama@1@0@{chunk:016x}"
    assert r.set(key + "kv_bytes", blob)
    assert r.set(key + "metadata", b'{"shape":[2,32,256,8,128]}', ex=60)
assert r.set("vllm@llama@1@0@0000000000000000metadata", b"x", nx=True) is None
assert r.get("vllm@llama@1@0@0000000000000001kv_bytes") == blob
assert r.mget(["vllm@llama@1@0@0000000000000002metadata", "missing"]) == [b'{"shape":[2,32,256,8,128]}', None]
assert r.exists("vllm@llama@1@0@0000000000000000kv_bytes", "missing") == 1
assert len(list(r.scan_iter(match="*kv_bytes", count=2))) == 3
assert r.info()["db0"]["keys"] == 6
assert r.config_get("maxmemory")["maxmemory"] == str(1 << 30)
assert r.set("short", b"1", px=100)
time.sleep(0.3)
assert r.get("short") is None
assert r.delete("vllm@llama@1@0@0000000000000000kv_bytes", "nope") == 1
p = r.pipeline(transaction=False)
for i in range(200):
    p.set(f"k{i}", str(i))
for i in range(200):
    p.get(f"k{i}")
res = p.execute()
assert res[200:] == [str(i).encode() for i in range(200)], res
print("ok")
"#;
    let out = Process::new(kvtier_testkit::python::python())
        .args(["-c", script, &redis_addr(&node).port().to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    // The one error: redis-py opens with HELLO 3, gets NOPROTO and goes on in RESP2.
    assert_eq!(node.stat("resp_errors"), Some(1));
    node.shutdown().unwrap();
}
