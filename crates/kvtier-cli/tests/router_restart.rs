//! `kvtier router --snapshot` restarts warm: an engine's batches published before the router
//! stopped, while it was down, and after it came back are all indexed, and none is discarded
//! as a duplicate or lost to a gap.
//!
//! The engine is the msgspec publisher in scripted mode (`kvtier_testkit::vllm_script`). The
//! router is stopped with SIGTERM (it writes `router.snap` and `router.snap.sources`, the
//! stream's position); the engine publishes two more batches into its replay buffer; the
//! restarted router resumes the stream after the last batch its snapshot holds: the first
//! live batch after the restart opens a gap that the replay buffer fills.
//!
//! Set `KVTIER_SKIP_PYTHON_TESTS=1` to skip it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kvtier_router::vllm_instance_id;
use kvtier_testkit::http;
use kvtier_testkit::python::skip_python_tests;
use kvtier_testkit::vllm::VllmPublisher;
use kvtier_testkit::vllm_script::{Batch, Event, Generation, Hash, ScriptedPublisher, Stored};
use serde_json::{Value, json};

mod common;
use common::{RouterProcess, WAIT};

const BLOCK_SIZE: usize = 4;
const MODEL: &str = "restart-model";
const ENGINE: &str = "engine";

/// Tokens of chain `seed`, `blocks` long.
fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BLOCK_SIZE) as u32)
        .map(|t| seed * 1000 + t)
        .collect()
}

/// Engine hashes of chain `seed`'s blocks.
fn hashes(seed: u32, blocks: usize) -> Vec<Hash> {
    (0..blocks)
        .map(|i| Hash::named(&format!("chain{seed}-block{i}")))
        .collect()
}

/// A batch storing chain `seed` (`blocks` blocks, from the root).
fn store(seed: u32, blocks: usize) -> Batch {
    let stored = Stored::new(hashes(seed, blocks), None, tokens(seed, blocks), BLOCK_SIZE);
    Batch::new(Generation::V4Map, vec![Event::Stored(stored)])
}

/// A batch removing the last block of chain `seed` (`blocks` long).
fn remove_last(seed: u32, blocks: usize) -> Batch {
    let last = hashes(seed, blocks).pop().expect("a block");
    Batch::new(Generation::V4Map, vec![Event::removed(vec![last], "GPU")])
}

/// The leading GPU blocks of `tokens` that `instance` holds (0 when it is not listed).
fn matched(addr: SocketAddr, tokens: &[u32], instance: &str) -> u64 {
    let body = json!({ "tokens": tokens, "block_size": BLOCK_SIZE, "extra": { "model": MODEL } });
    let (status, text) = http::post(addr, "/query", &body.to_string());
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
    answer["instances"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i["instance"] == instance))
        .and_then(|i| i["media"]["GPU"]["matched"].as_u64())
        .unwrap_or(0)
}

/// Waits (at most `within`) until `instance` holds `want` leading blocks of `tokens`.
fn reaches(addr: SocketAddr, tokens: &[u32], instance: &str, want: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matched(addr, tokens, instance) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The value of the sample named exactly `name`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Publishes chain `seed` (one block) until the router shows it: a batch sent before the
/// router's subscription is in place is lost on PUB (and repaired by the next one's gap).
/// Returns how many batches it took.
fn publish_until_seen(
    publisher: &mut ScriptedPublisher,
    addr: SocketAddr,
    instance: &str,
    first_seed: u32,
) -> u32 {
    for attempt in 0..10 {
        let seed = first_seed + attempt;
        publisher.publish(&store(seed, 1));
        if reaches(addr, &tokens(seed, 1), instance, 1, Duration::from_secs(3)) {
            // Every earlier attempt is indexed too (replayed through the gap).
            for earlier in first_seed..seed {
                assert_eq!(
                    matched(addr, &tokens(earlier, 1), instance),
                    1,
                    "chain {earlier}"
                );
            }
            return attempt + 1;
        }
    }
    panic!("the router never showed a batch published after it started");
}

#[test]
fn a_restarted_router_indexes_what_was_published_before_during_and_after_its_downtime() {
    if skip_python_tests() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let snapshot = dir.path().join("router.snap");
    let snapshot_arg = snapshot.to_str().expect("a UTF-8 path");
    let mut publisher = VllmPublisher::builder()
        .with_timeout(Duration::from_secs(120))
        .start_scripted();
    let instance = vllm_instance_id(ENGINE, 0).to_string();
    let spec = format!(
        "{ENGINE}={}@{}",
        publisher.endpoint(),
        publisher.replay_endpoint()
    );
    let block_size = BLOCK_SIZE.to_string();
    let args = [
        "--vllm",
        &spec,
        "--block-size",
        &block_size,
        "--model",
        MODEL,
        "--snapshot",
        snapshot_arg,
        "--snapshot-every-secs",
        "3600",
    ];

    // Before: chain 1 (4 blocks), and a one-block chain that shows the router is listening.
    let mut router = RouterProcess::start(&args, Stdio::inherit());
    let mut published = 1 + publish_until_seen(&mut publisher, router.addr, &instance, 100);
    publisher.publish(&store(1, 4));
    assert!(
        reaches(router.addr, &tokens(1, 4), &instance, 4, WAIT),
        "chain 1"
    );
    router.terminate();
    assert!(kvtier_router::SourceStates::path_for(&snapshot).is_file());

    // During the downtime: chain 2 (2 blocks), and chain 1 loses its last block.
    publisher.publish(&store(2, 2));
    publisher.publish(&remove_last(1, 4));
    published += 2;

    // After: the restarted router answers from its snapshot at once, then catches up.
    let mut router = RouterProcess::start(&args, Stdio::inherit());
    let addr = router.addr;
    assert_eq!(
        matched(addr, &tokens(1, 4), &instance),
        4,
        "from the snapshot"
    );
    published += publish_until_seen(&mut publisher, addr, &instance, 200);
    assert_eq!(
        matched(addr, &tokens(1, 4), &instance),
        3,
        "the removal during the downtime"
    );
    assert_eq!(
        matched(addr, &tokens(2, 2), &instance),
        2,
        "chain 2, stored during the downtime"
    );

    let (_, text) = http::get(addr, "/metrics");
    for (name, want) in [
        ("kvtier_router_duplicates_total", 0.0),
        ("kvtier_router_gaps_skipped_total", 0.0),
        (
            "kvtier_router_vllm_unrepairable_gaps_total{source=\"engine\"}",
            0.0,
        ),
    ] {
        assert_eq!(metric(&text, name), Some(want), "{name}: {text}");
    }
    // One message per batch, ids without holes across the restart.
    let (_, list) = http::get(addr, "/instances");
    let list: Value = serde_json::from_str(&list).expect("JSON instances");
    assert_eq!(list[0]["next_event_id"], u64::from(published) + 1, "{list}");
    router.terminate();
}
