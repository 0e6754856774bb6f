//! `kvtier router` end to end, through the built binary.
//!
//! A stand-in for vLLM's ZeroMQ KV-event publisher
//! (`crates/kvtier-router/tests/python/vllm_publisher.py`, pyzmq + msgspec with vLLM's struct definitions, in the venv that
//! `scripts/python-env.sh` creates) plays its fixed scenario to a real `kvtier router
//! --vllm ...` process: phase 1 stores chain A (4 blocks) and chain B (2 blocks, under a LoRA);
//! phase 2 removes, skips one sequence number on the live socket (repaired from the replay
//! buffer), clears everything and stores one fresh root block (the second block of chain E).
//! The test queries `POST /query` by tokens over plain HTTP/1.1 (std only) until the engine's
//! instance shows what each phase leaves behind, checks `/metrics` and `/instances`, stops the
//! router with SIGTERM, and restarts a router without sources from the snapshot it wrote.
//!
//! Also: malformed `--vllm` specs and nonsense numbers are refused with a non-zero status and
//! a helpful message; SIGTERM ends the router within seconds while a client holds a half-sent
//! request, and the final snapshot is written; a damaged snapshot is reported and the router
//! starts empty; each engine's stream counters are in `/metrics` under its name.
//!
//! Set `KVTIER_SKIP_PYTHON_TESTS=1` to skip the test that needs Python.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvtier_router::vllm_instance_id;
use kvtier_testkit::http;
use kvtier_testkit::process::ChildGuard;
use kvtier_testkit::python::skip_python_tests;
use kvtier_testkit::vllm::VllmPublisher;
use serde_json::{Value, json};

mod common;
use common::{RouterProcess, WAIT};

/// Tokens per block, in the script and in the router's `--block-size`.
const BLOCK_SIZE: usize = 4;
const MODEL: &str = "test-model";
const LORA: &str = "sql-adapter";
const ENGINE: &str = "engine";
/// The data-parallel rank the publisher stamps on its batches.
const DP_RANK: i64 = 3;

/// The script's `tokens(seed, blocks)`.
fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BLOCK_SIZE) as u32)
        .map(|t| seed * 1000 + t)
        .collect()
}

/// The router's `--vllm` spec for `publisher`.
fn vllm_spec(publisher: &VllmPublisher) -> String {
    format!(
        "{ENGINE}={}@{}",
        publisher.endpoint(),
        publisher.replay_endpoint()
    )
}

/// `POST /query` by tokens, with the model's extra keys (and a LoRA).
fn query(addr: SocketAddr, tokens: &[u32], lora: Option<&str>) -> Value {
    let mut extra = json!({ "model": MODEL });
    if let Some(lora) = lora {
        extra["lora"] = json!(lora);
    }
    let body = json!({ "tokens": tokens, "block_size": BLOCK_SIZE, "extra": extra });
    let (status, text) = http::post(addr, "/query", &body.to_string());
    assert_eq!(status, 200, "POST /query {body}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("query answer {text:?}: {e}"))
}

/// The leading blocks `instance` holds on GPU per a query answer (`None`: not listed).
fn gpu_matched(answer: &Value, instance: &str) -> Option<u64> {
    let entry = answer["instances"]
        .as_array()?
        .iter()
        .find(|i| i["instance"] == instance)?;
    entry["media"]["GPU"]["matched"].as_u64()
}

/// Asserts that exactly `instance` holds `matched` leading blocks of `blocks` on GPU, and is
/// the best choice.
fn assert_only_holder(answer: &Value, instance: &str, blocks: usize, matched: u64) {
    assert_eq!(answer["blocks"], blocks, "{answer}");
    assert_eq!(answer["best"], instance, "{answer}");
    let instances = answer["instances"].as_array().expect("an instance list");
    assert_eq!(instances.len(), 1, "{answer}");
    let gpu = &instances[0]["media"]["GPU"];
    assert_eq!(gpu["matched"], matched, "{answer}");
    assert_eq!(gpu["upper"], matched, "{answer}");
}

/// Asserts that no instance holds the request's first block. (`best` still names an
/// instance whenever one is known: the least loaded one.)
fn assert_no_holder(answer: &Value) {
    assert_eq!(answer["instances"], json!([]), "{answer}");
}

/// The value of a sample named exactly `name` in Prometheus/OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn metrics(addr: SocketAddr) -> String {
    let (status, text) = http::get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// Asserts that each `(name, value)` sample of `text` has exactly that value.
fn assert_metrics(text: &str, expected: &[(&str, f64)]) {
    for &(name, value) in expected {
        assert_eq!(metric(text, name), Some(value), "{name}: {text}");
    }
}

/// Polls `check` (which returns what it saw when not yet satisfied) until it passes.
fn wait_until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until `instance` holds exactly `want` leading GPU blocks of `tokens`.
fn wait_matched(
    addr: SocketAddr,
    what: &str,
    tokens: &[u32],
    lora: Option<&str>,
    instance: &str,
    want: u64,
) {
    wait_until(what, || {
        let answer = query(addr, tokens, lora);
        if gpu_matched(&answer, instance) == Some(want) {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    });
}

#[test]
fn router_ingests_a_vllm_stream_and_restarts_from_its_snapshot() {
    if skip_python_tests() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let snapshot = dir.path().join("router.snap");
    let snapshot_arg = snapshot.to_str().expect("a UTF-8 temporary path");
    let instance = vllm_instance_id(ENGINE, DP_RANK).to_string();

    let mut publisher = VllmPublisher::builder()
        .with_dp_rank(DP_RANK)
        .with_timeout(Duration::from_secs(120))
        .start();
    let spec = vllm_spec(&publisher);
    let mut router = RouterProcess::start(
        &[
            "--vllm",
            &spec,
            "--block-size",
            &BLOCK_SIZE.to_string(),
            "--model",
            MODEL,
            "--snapshot",
            snapshot_arg,
            // Only the snapshot written at exit counts here.
            "--snapshot-every-secs",
            "3600",
            // Maps allocated up front: the same answers as growing ones.
            "--expected-blocks-per-engine",
            "4096",
        ],
        Stdio::inherit(),
    );
    let addr = router.addr;
    assert_eq!(http::get(addr, "/health"), (200, "ok\n".to_string()));
    assert!(!snapshot.exists(), "no snapshot before the first stop");

    // The slow-joiner window: let the source connect and subscribe (a batch lost anyway is
    // fetched by the source's late-join replay).
    std::thread::sleep(Duration::from_millis(500));

    // Phase 1 (seq 0..=2): chain A, 4 blocks; chain B, 2 blocks under the LoRA.
    publisher.send("go");
    assert!(
        publisher.wait_line("PHASE1_DONE", WAIT),
        "phase 1 published"
    );
    let a = tokens(1, 4);
    let b = tokens(2, 2);
    wait_matched(addr, "chain A from phase 1", &a, None, &instance, 4);
    wait_matched(addr, "chain B from phase 1", &b, Some(LORA), &instance, 2);
    assert_only_holder(&query(addr, &a, None), &instance, 4, 4);
    // A longer request shares A's 4 blocks.
    let a_longer = [a.clone(), tokens(9, 2)].concat();
    assert_only_holder(&query(addr, &a_longer, None), &instance, 6, 4);
    assert_only_holder(&query(addr, &b, Some(LORA)), &instance, 2, 2);
    // Without the LoRA, B's tokens hash differently.
    assert_no_holder(&query(addr, &b, None));
    let text = metrics(addr);
    assert_metrics(
        &text,
        &[
            ("kvtier_router_messages_total", 3.0),
            ("kvtier_router_creates_total", 6.0),
            ("kvtier_router_instances", 1.0),
        ],
    );

    // Phase 2 (seq 3..=8, seq 4 only in the replay buffer): removals, a clear, and one
    // fresh root block — the second block of chain E (its first is stored under a0, which
    // the clear removed but the router still recognises). Seq 8 is the last message: once E's
    // block shows, everything before it was applied.
    publisher.send("continue");
    assert!(
        publisher.wait_line("PHASE2_DONE", WAIT),
        "phase 2 published"
    );
    let e = tokens(5, 2);
    let e1 = &e[BLOCK_SIZE..];
    wait_matched(addr, "chain E's root from phase 2", e1, None, &instance, 1);
    assert_only_holder(&query(addr, e1, None), &instance, 1, 1);
    // E's first block names a0 as its parent. The clear made the router forget that the
    // engine holds a0, but it still recognises the hash, and a stored block means the engine
    // holds its whole prefix: a0 is held again and e0 is placed under it.
    assert_no_holder(&query(addr, &e, None));
    assert_only_holder(&query(addr, &a, None), &instance, 4, 1);
    let a0_e0 = [&a[..BLOCK_SIZE], &e[..BLOCK_SIZE]].concat();
    assert_only_holder(&query(addr, &a0_e0, None), &instance, 2, 2);
    // Nothing else survived AllBlocksCleared.
    assert_no_holder(&query(addr, &b, Some(LORA)));
    // C branched off A after a1: only the re-established a0 is left of it.
    let c = [tokens(1, 2), tokens(3, 3)].concat();
    assert_only_holder(&query(addr, &c, None), &instance, 5, 1);
    // Tokens no engine ever saw.
    let unknown = tokens(77, 3);
    let answer = query(addr, &unknown, None);
    assert_eq!(answer["blocks"], 3, "{answer}");
    assert_no_holder(&answer);
    assert_eq!(
        answer["best"],
        instance.as_str(),
        "the only known instance: {answer}"
    );

    let text = metrics(addr);
    assert!(
        metric(&text, "kvtier_router_messages_total").is_some_and(|m| m > 0.0),
        "{text}"
    );
    // The source sends one message per run of same-kind events of a batch (seq 5's unknown
    // removal and its store under an unknown parent send nothing; seq 8's three creates are
    // one run), the skipped seq 4 included: 3 (phase 1) + 6 (seq 3, 4, 5, 6, 7, 8) = 9.
    // Creates: 3 + 1 + 2 (phase 1) + 2 (seq 4) + 1 (seq 5, placeable only after seq 4)
    // + 3 (seq 8: a0 re-established, e0 under it, e1) = 12; without the repair there would
    // be 9. What is held at the end: a0, e0, e1.
    assert_metrics(
        &text,
        &[
            ("kvtier_router_messages_total", 9.0),
            ("kvtier_router_creates_total", 12.0),
            ("kvtier_router_removes_total", 4.0),
            ("kvtier_router_instances", 1.0),
            ("kvtier_router_blocks", 3.0),
        ],
    );
    assert!(
        metric(&text, "kvtier_router_queries_total").is_some_and(|q| q > 0.0),
        "{text}"
    );
    // The engine's own stream counters, labelled with its name: the skipped seq 4 is one
    // gap, repaired by a replay.
    let source = |counter: &str| {
        metric(
            &text,
            &format!("kvtier_router_vllm_{counter}_total{{source=\"{ENGINE}\"}}"),
        )
    };
    assert!(source("batches").is_some_and(|b| b > 0.0), "{text}");
    assert_eq!(source("gaps_detected"), Some(1.0), "{text}");
    assert!(
        source("replays_requested").is_some_and(|r| r >= 1.0),
        "{text}"
    );
    assert_eq!(source("unrepairable_gaps"), Some(0.0), "{text}");
    let (status, list) = http::get(addr, "/instances");
    assert_eq!(status, 200, "{list}");
    let list: Value = serde_json::from_str(&list).expect("JSON instances");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["instance"], instance.as_str(), "{list}");
    assert_eq!(list[0]["blocks"]["GPU"], 3, "{list}");
    assert_eq!(list[0]["next_event_id"], 10, "{list}");

    // SIGTERM: a clean exit that writes the snapshot.
    router.terminate();
    publisher.send("done");
    assert!(snapshot.is_file(), "the snapshot is written at exit");
    assert!(
        std::fs::metadata(&snapshot)
            .expect("snapshot metadata")
            .len()
            > 0,
        "the snapshot is not empty"
    );

    // A router without sources answers from the snapshot as soon as it listens.
    let mut restored = RouterProcess::start(&["--snapshot", snapshot_arg], Stdio::piped());
    let addr = restored.addr;
    assert_only_holder(&query(addr, e1, None), &instance, 1, 1);
    assert_only_holder(&query(addr, &a0_e0, None), &instance, 2, 2);
    assert_only_holder(&query(addr, &a, None), &instance, 4, 1);
    let text = metrics(addr);
    assert_metrics(
        &text,
        &[
            ("kvtier_router_instances", 1.0),
            ("kvtier_router_blocks", 3.0),
        ],
    );
    restored.terminate();
    let stderr = restored.process.read_stderr();
    assert!(
        stderr.contains("loaded snapshot") && stderr.contains("1 instances, 3 blocks"),
        "{stderr}"
    );
}

/// Runs `kvtier ARGS` that must fail; returns its stderr.
fn failing_run(args: &[&str]) -> String {
    let mut process = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_kvtier"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let status = process
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("kvtier {args:?} is still running"));
    let stderr = process.read_stderr();
    assert!(!status.success(), "kvtier {args:?} must fail: {status}");
    assert_eq!(
        status.code(),
        Some(1),
        "kvtier {args:?}: {status}; {stderr}"
    );
    stderr
}

#[test]
fn malformed_vllm_specs_are_refused() {
    let stderr = failing_run(&["router", "--listen", "127.0.0.1:0", "--vllm", "bogus"]);
    assert!(stderr.contains("NAME=ENDPOINT"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");

    let stderr = failing_run(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--vllm",
        "=tcp://127.0.0.1:1",
    ]);
    assert!(stderr.contains("name is empty"), "{stderr}");

    let stderr = failing_run(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--vllm",
        "e=udp://127.0.0.1:1",
    ]);
    assert!(stderr.contains("invalid endpoint"), "{stderr}");
}

/// Runs `kvtier ARGS` that clap must refuse (status 2); returns its stderr.
fn refused_args(args: &[&str]) -> String {
    let mut process = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_kvtier"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let status = process
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("kvtier {args:?} is still running"));
    let stderr = process.read_stderr();
    assert_eq!(
        status.code(),
        Some(2),
        "kvtier {args:?}: {status}; {stderr}"
    );
    stderr
}

#[test]
fn nonsense_numbers_are_refused() {
    for (flag, value) in [
        ("--snapshot-every-secs", "0"),
        ("--snapshot-every-secs", "-5"),
        ("--snapshot-every-secs", "99999999999"),
        ("--expiry-secs", "-1"),
        ("--expiry-secs", "999999999999"),
        ("--block-size", "0"),
        ("--block-size", "1000000"),
        ("--load-weight", "-1"),
        ("--load-weight", "NaN"),
        ("--load-weight", "inf"),
        ("--max-connections", "0"),
        ("--max-body-bytes", "1"),
        ("--expected-blocks-per-engine", "-1"),
        ("--expected-blocks-per-engine", "999999999999"),
    ] {
        let arg = format!("{flag}={value}");
        let stderr = refused_args(&["router", "--listen", "127.0.0.1:0", &arg]);
        assert!(
            stderr.contains("invalid value") && stderr.contains(flag),
            "{arg}: {stderr}"
        );
    }
    let stderr = failing_run(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--vllm",
        "e=tcp://127.0.0.1:1",
        "--vllm",
        "e=tcp://127.0.0.1:2",
    ]);
    assert!(stderr.contains("called \"e\" already"), "{stderr}");
}

#[test]
fn sigterm_with_a_half_sent_request_exits_promptly_and_writes_the_snapshot() {
    use std::io::Write;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let snapshot = dir.path().join("router.snap");
    let snapshot_arg = snapshot.to_str().expect("a UTF-8 temporary path");
    let mut router = RouterProcess::start(
        &["--snapshot", snapshot_arg, "--snapshot-every-secs", "3600"],
        Stdio::inherit(),
    );
    let mut half = std::net::TcpStream::connect(router.addr).expect("connect");
    half.write_all(
        b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"tokens\": [1,",
    )
    .expect("send half a request");
    let _headers_only = {
        let mut s = std::net::TcpStream::connect(router.addr).expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .expect("send half the headers");
        s
    };
    assert_eq!(http::get(router.addr, "/health").0, 200);
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    router.terminate();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?} with a half-sent request",
        start.elapsed()
    );
    let restored =
        kvtier_router::Router::load_snapshot(kvtier_router::Router::builder(), &snapshot)
            .expect("the final snapshot loads");
    assert_eq!(restored.stats().instances, 0);
    assert!(
        kvtier_router::SourceStates::path_for(&snapshot).is_file(),
        "the sources' states are written beside the snapshot"
    );
}

#[test]
fn a_damaged_snapshot_is_reported_and_the_router_starts_empty() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let snapshot = dir.path().join("router.snap");
    std::fs::write(&snapshot, b"not a snapshot at all").expect("write");
    std::fs::write(
        kvtier_router::SourceStates::path_for(&snapshot),
        b"not a state file",
    )
    .expect("write");
    let snapshot_arg = snapshot.to_str().expect("a UTF-8 temporary path");
    let mut router = RouterProcess::start(&["--snapshot", snapshot_arg], Stdio::piped());
    assert_eq!(http::get(router.addr, "/health").0, 200);
    assert_metrics(&metrics(router.addr), &[("kvtier_router_instances", 0.0)]);
    router.terminate();
    let stderr = router.process.read_stderr();
    assert!(
        stderr.contains("router.snap is damaged or unreadable")
            && stderr.contains("starting empty"),
        "{stderr}"
    );
    assert!(
        stderr.contains("router.snap.sources is damaged"),
        "{stderr}"
    );
    // The router wrote a good snapshot over the damaged one at exit.
    kvtier_router::Router::load_snapshot(kvtier_router::Router::builder(), &snapshot)
        .expect("the new snapshot loads");
}
