//! The router service under abusive clients: `/health` and small queries are answered while
//! other clients hold a thousand idle connections, trickle headers, send half a body, send a
//! 64 MB body, or run many large queries at once; bodies over the limit get 413 (declared or
//! chunked), slow bodies 408, connections over the limit 503; `/load` takes only known
//! instances and forgets retired ones; stopping is prompt while a client holds a half-sent
//! request, and the final snapshot is written.
//!
//! Timing assertions are loose upper bounds (seconds), never tight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, Medium};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{LoadSignal, LoadTable, QueryResponse, Router, RouterService};
use kvtier_testkit::http;

const BLOCK: usize = 4;
/// The loose bound on an answer while the service is under load.
const PROMPT: Duration = Duration::from_secs(5);

/// A router where instance 1 holds the first 3 blocks of `prompt()` on GPU.
fn router_with_one_instance(load: Option<LoadTable>) -> Router {
    let mut b = Router::builder();
    if let Some(t) = load {
        b = b.with_load_signal(Arc::new(t));
    }
    let mut router = b.build();
    let hashes = hasher().sequence_hashes(&prompt());
    router.apply(EventMessage {
        instance: InstanceId(1),
        event_id: 1,
        payload: Payload::Batch(EventBatch {
            medium: Medium::Gpu,
            kind: EventKind::Create,
            hashes: hashes[..3].to_vec(),
            policy: EmitPolicy::All,
        }),
    });
    router
}

fn hasher() -> BlockHasher {
    BlockHasher::new(BLOCK, HashScheme::default(), ExtraKeys::new()).unwrap()
}

fn prompt() -> Vec<u32> {
    (0..(5 * BLOCK) as u32).collect()
}

fn small_query() -> String {
    serde_json::json!({"tokens": prompt(), "block_size": BLOCK}).to_string()
}

/// Asserts that `/health` and a small query are answered, each within [`PROMPT`].
fn assert_responsive(addr: SocketAddr) {
    let start = Instant::now();
    assert_eq!(http::get(addr, "/health"), (200, "ok\n".to_string()));
    let (status, body) = http::post(addr, "/query", &small_query());
    assert_eq!(status, 200, "{body}");
    let r: QueryResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.best, Some(InstanceId(1)));
    assert_eq!(r.instances[0].media["GPU"].matched, 3);
    assert!(
        start.elapsed() < PROMPT,
        "health and a small query took {:?}",
        start.elapsed()
    );
}

/// Connects and writes `bytes` (a partial request, usually).
fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// The status code of the response on `s`, reading at most `within`; `None` when the
/// connection closed or nothing came.
fn status_of(s: &mut TcpStream, within: Duration) -> Option<u16> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1)?.parse().ok()
}

/// Whether the server closed `s` (EOF) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn post_head(len: usize) -> String {
    format!(
        "POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[test]
fn health_and_small_queries_are_answered_under_abuse() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(None))
                .with_max_connections(1200)
                .with_header_timeout(Duration::from_secs(60))
                .with_body_timeout(Duration::from_secs(60))
                .with_max_concurrent_queries(4)
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    assert_responsive(addr);

    // A thousand idle connections.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A slowloris: headers trickled a byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Half a body, then silence.
    let mut half = open(
        addr,
        format!("{}{{\"tokens\": [1, 2", post_head(1000)).as_bytes(),
    );
    // A 64 MB body, sent in full (or until the server stops reading).
    let big = std::thread::spawn(move || {
        let mut s = open(addr, post_head(64 << 20).as_bytes());
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        status_of(&mut s, Duration::from_secs(30))
    });
    // Many concurrent large queries (256 Ki tokens each).
    let large_body = Arc::new(
        serde_json::json!({"tokens": (0..(1u32 << 18)).collect::<Vec<u32>>(), "block_size": 16})
            .to_string(),
    );
    let large: Vec<_> = (0..8)
        .map(|_| {
            let body = large_body.clone();
            std::thread::spawn(move || {
                (0..2)
                    .map(|_| http::post(addr, "/query", &body).0)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();

    for _ in 0..5 {
        assert_responsive(addr);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Refused unread: the answer is 413, unless the client's unsent bytes made the close a
    // reset that overtook it (the declared-size case below checks the status itself).
    let big = big.join().unwrap();
    assert!(matches!(big, Some(413) | None), "the 64 MB body: {big:?}");
    for t in large {
        for status in t.join().unwrap() {
            assert!(status == 200 || status == 503, "a large query: {status}");
        }
    }
    assert_responsive(addr);
    // The half-sent request is still open (its body timeout is long), and did not stall anyone.
    half.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    assert!(
        matches!(half.read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the half-sent request is waiting"
    );
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    drop(idle);

    // A declared 64 MB body is refused before it is sent.
    let mut s = open(addr, post_head(64 << 20).as_bytes());
    assert_eq!(status_of(&mut s, PROMPT), Some(413));

    let start = Instant::now();
    rt.block_on(service.stop()).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn connection_limit_holds_and_idle_connections_time_out() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(None))
                .with_max_connections(8)
                .with_header_timeout(Duration::from_secs(1))
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the server accept all eight before the ninth arrives.
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = open(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&mut ninth, PROMPT), Some(503), "over the limit");
    // The idle ones are closed by the header timeout, which frees their slots.
    for s in &mut idle {
        assert!(closed_within(s, PROMPT), "an idle connection is closed");
    }
    assert_responsive(addr);
    // A kept-alive connection is closed once idle for the header timeout.
    let mut kept = open(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&mut kept, PROMPT), Some(200));
    assert!(
        closed_within(&mut kept, PROMPT),
        "an idle keep-alive connection is closed"
    );
    // A slowloris is closed too, headers unfinished.
    let mut slow = open(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n");
    assert!(closed_within(&mut slow, PROMPT), "slow headers time out");
    rt.block_on(service.stop()).unwrap();
}

#[test]
fn bodies_over_the_limit_get_413_and_slow_bodies_408() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(None))
                .with_max_body_bytes(64 << 10)
                .with_body_timeout(Duration::from_millis(500))
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();

    // Chunked, no length declared: refused once the bytes pass the limit.
    let mut s = open(
        addr,
        b"POST /query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    // 64 KiB, then one byte more: everything sent is read by the time the limit is passed,
    // so the close after the answer is clean.
    let chunk = vec![b' '; 16 << 10];
    for _ in 0..4 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"1\r\n \r\n").unwrap();
    assert_eq!(
        status_of(&mut s, PROMPT),
        Some(413),
        "chunked over the limit"
    );

    // Declared over the limit.
    let mut s = open(addr, post_head((64 << 10) + 1).as_bytes());
    assert_eq!(status_of(&mut s, PROMPT), Some(413));

    // Half a body, then nothing: 408 after the body timeout.
    let mut s = open(addr, format!("{}{{\"tok", post_head(100)).as_bytes());
    assert_eq!(status_of(&mut s, PROMPT), Some(408));

    // Too many tokens for one query: refused while parsing, within the body limit.
    let service2 = rt
        .block_on(RouterService::builder(router_with_one_instance(None)).start())
        .unwrap();
    let many = format!(
        "{{\"block_size\": 16, \"tokens\": [{}0]}}",
        "0,".repeat(kvtier_router::MAX_QUERY_TOKENS)
    );
    assert!(many.len() < kvtier_router::DEFAULT_MAX_BODY_BYTES);
    let (status, body) = http::post(service2.local_addr(), "/query", &many);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than"), "{body}");
    assert_responsive(addr);
    rt.block_on(service.stop()).unwrap();
    rt.block_on(service2.stop()).unwrap();
}

#[test]
fn load_takes_only_known_instances_and_forgets_retired_ones() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let loads = LoadTable::default();
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(Some(loads.clone())))
                .with_load_table(loads.clone())
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    let set = |id: u128, load: &str| {
        http::post(
            addr,
            "/load",
            &format!(r#"{{"instance": "{id:032x}", "load": {load}}}"#),
        )
    };
    let (status, body) = set(2, "1.0");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not known"), "{body}");
    assert_eq!(loads.load(InstanceId(2)), 0.0);
    assert_eq!(set(1, "3.0").0, 204);
    assert_eq!(loads.load(InstanceId(1)), 3.0);
    // Instance 1 shuts down: its load goes with it.
    rt.block_on(service.events().send(Arc::new(EventMessage {
        instance: InstanceId(1),
        event_id: 2,
        payload: Payload::Shutdown,
    })))
    .unwrap();
    let start = Instant::now();
    while loads.load(InstanceId(1)) != 0.0 {
        assert!(
            start.elapsed() < PROMPT,
            "the retired instance's load is kept"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(set(1, "3.0").0, 404, "a retired instance is not known");
    rt.block_on(service.stop()).unwrap();
}

#[test]
fn stop_is_prompt_with_half_sent_requests_and_writes_the_snapshot() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("router.snap");
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(None))
                .with_snapshot(snap.clone(), Duration::from_secs(3600))
                .with_body_timeout(Duration::from_secs(600))
                .with_header_timeout(Duration::from_secs(600))
                .with_shutdown_grace(Duration::from_millis(500))
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    let mut half = open(
        addr,
        format!("{}{{\"tokens\": [", post_head(1000)).as_bytes(),
    );
    let _headers = open(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    rt.block_on(service.stop()).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        start.elapsed()
    );
    assert!(
        closed_within(&mut half, PROMPT),
        "the half-sent request is closed"
    );
    let restored = Router::load_snapshot(Router::builder(), &snap).unwrap();
    assert_eq!(restored.stats().blocks, 3);
    // The sources' file goes with the snapshot (no managed source: empty).
    let states =
        kvtier_router::SourceStates::load(&kvtier_router::SourceStates::path_for(&snap)).unwrap();
    assert!(states.is_empty());
}

#[test]
fn managed_sources_have_their_counters_in_metrics() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let service = rt
        .block_on(RouterService::builder(router_with_one_instance(None)).start())
        .unwrap();
    let port = kvtier_testkit::net::free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    {
        let _guard = rt.enter();
        for name in ["engine-a", "engine-b"] {
            service
                .add_vllm(name, kvtier_router::VllmSource::builder(name, &endpoint))
                .unwrap();
        }
        assert!(matches!(
            service.add_vllm(
                "engine-a",
                kvtier_router::VllmSource::builder("x", &endpoint)
            ),
            Err(kvtier_router::AddSourceError::Duplicate { .. })
        ));
    }
    let (status, text) = http::get(service.local_addr(), "/metrics");
    assert_eq!(status, 200);
    for name in ["engine-a", "engine-b"] {
        for counter in [
            "batches",
            "gaps_detected",
            "unrepairable_gaps",
            "unplaceable_blocks",
        ] {
            let sample = format!("kvtier_router_vllm_{counter}_total{{source=\"{name}\"}} 0");
            assert!(text.contains(&sample), "{sample} in {text}");
        }
    }
    assert!(text.contains("kvtier_router_creates_total 3"), "{text}");
    rt.block_on(service.stop()).unwrap();
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let service = rt
        .block_on(
            RouterService::builder(router_with_one_instance(None))
                .with_body_timeout(Duration::from_millis(500))
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    // Thousands of pipelined requests whose answers (a few KiB each) are never read: more
    // than the socket buffers hold.
    const REQUESTS: usize = 5000;
    let mut s = TcpStream::connect(addr).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..REQUESTS {
            if writer.write_all(request).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_responsive(addr);
    // The server gave up on the connection: reading it now ends (EOF or reset) before all
    // the answers.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                carry.extend_from_slice(&buf[..n]);
                answers += carry.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
                let keep = carry.len().saturating_sub(11);
                carry.drain(..keep);
            }
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    assert!(ended, "the connection is closed, not left waiting");
    assert!(answers < REQUESTS, "{answers} answers");
    sender.join().unwrap();
    rt.block_on(service.stop()).unwrap();
}
