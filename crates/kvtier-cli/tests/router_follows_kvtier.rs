//! `kvtier router --kvtier ADDR` follows a real `kvtier serve` over the network: blocks PUT
//! through the client show up in the router's answers under the server's instance, and after
//! the server restarts (a new instance, nothing kept: no disk tier) the router drops the old
//! instance and follows the new one.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{RouterProcess, ServeProcess};
use kvtier_client::{Client, ClientConfig};
use kvtier_core::SequenceHash;

/// `kvtier serve` on `port`, host memory only; returns once it listens.
fn serve(port: u16, dir: &std::path::Path) -> ServeProcess {
    ServeProcess::start(&format!("127.0.0.1:{port}"), dir, "0", &[])
}

fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut h = SequenceHash::root(seed);
    let mut out = vec![h];
    for i in 1..n {
        h = SequenceHash::child_of(h, seed * 1000 + i as u64);
        out.push(h);
    }
    out
}

fn put(addr: SocketAddr, hashes: &[SequenceHash]) {
    let mut client = Client::connect(addr, ClientConfig::new()).unwrap();
    let block = vec![7u8; 4096];
    let blocks: Vec<(SequenceHash, &[u8])> = hashes.iter().map(|h| (*h, &block[..])).collect();
    client.put(&blocks, false).unwrap();
}

/// The router's answer for `hashes`: (instance, blocks matched) of every instance.
fn query(router: SocketAddr, hashes: &[SequenceHash]) -> Vec<(String, u64)> {
    let body = serde_json::json!({
        "hashes": hashes.iter().map(|h| format!("{:032x}", h.as_u128())).collect::<Vec<_>>(),
    });
    let (status, text) = kvtier_testkit::http::post(router, "/query", &body.to_string());
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    answer["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let matched = i["media"]
                .as_object()
                .unwrap()
                .values()
                .map(|m| m["matched"].as_u64().unwrap())
                .max()
                .unwrap_or(0);
            (i["instance"].as_str().unwrap().to_string(), matched)
        })
        .collect()
}

/// The value of `metric{server="<server>"}` on the router's `/metrics`, if exported.
fn follower_metric(router: SocketAddr, metric: &str, server: SocketAddr) -> Option<f64> {
    let (status, text) = kvtier_testkit::http::get(router, "/metrics");
    assert_eq!(status, 200, "{text}");
    let prefix = format!("{metric}{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_router_follows_a_kvtier_server_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = kvtier_testkit::net::free_port_below_ephemeral();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = serve(port, dir.path());
    let router = RouterProcess::start(&["--kvtier", &addr.to_string()], Stdio::inherit());

    let first = chain(1, 6);
    put(addr, &first[..4]);
    let mut instance = String::new();
    wait_for("the first 4 blocks", || {
        let found = query(router.addr, &first);
        if let [(id, 4)] = found.as_slice() {
            instance = id.clone();
            true
        } else {
            false
        }
    });

    // The follower's progress is on /metrics.
    let metric = |name: &str| follower_metric(router.addr, name, addr);
    assert_eq!(metric("kvtier_router_kvtier_connected"), Some(1.0));
    assert_eq!(
        metric("kvtier_router_kvtier_subscriptions_total"),
        Some(1.0)
    );
    assert!(metric("kvtier_router_kvtier_events_total").is_some_and(|n| n >= 1.0));
    assert!(metric("kvtier_router_kvtier_last_event_id").is_some_and(|n| n >= 1.0));
    assert_eq!(metric("kvtier_router_kvtier_restarts_total"), Some(0.0));

    // The server restarts with nothing kept: a new instance; the old one is forgotten.
    drop(server);
    let _server = serve(port, dir.path());
    let second = chain(2, 3);
    put(addr, &second);
    wait_for(
        "the new instance's blocks",
        || matches!(query(router.addr, &second).as_slice(), [(id, 3)] if *id != instance),
    );
    wait_for("the old instance to be dropped", || {
        query(router.addr, &first).is_empty()
    });
    // One restart seen after at least one lost connection; subscribed again.
    assert_eq!(metric("kvtier_router_kvtier_restarts_total"), Some(1.0));
    assert!(metric("kvtier_router_kvtier_failures_total").is_some_and(|n| n >= 1.0));
    assert!(metric("kvtier_router_kvtier_subscriptions_total").is_some_and(|n| n >= 2.0));
    assert_eq!(metric("kvtier_router_kvtier_connected"), Some(1.0));
}
