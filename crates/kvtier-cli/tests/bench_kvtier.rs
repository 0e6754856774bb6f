//! `kvtier bench --addr`: the real binary against a real kvtier node (started in this process
//! on a free 127.0.0.1 port), for each operation mix; the report's counts must add up and no
//! request may fail or come back with another block's bytes.

use std::process::Command;

use kvtier_node::{ByteSize, Node, NodeConfig};

#[test]
fn bench_drives_a_kvtier_node_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_listen: None,
        metrics_listen: None,
        data_dir: dir.path().to_path_buf(),
        block_bytes: ByteSize::kib(64),
        host_bytes: ByteSize::mib(32),
        disk_bytes: ByteSize::mib(64),
        ..NodeConfig::default()
    })
    .unwrap();
    let addr = node.addr().to_string();
    // PUT first (fills the keyspace), then GETs must all hit, then MATCH.
    for (mix, field) in [
        ("1:0:0", "puts"),
        ("0:1:0", "gets"),
        ("0:0:1", "matches"),
        ("1:2:1", "gets"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kvtier"))
            .args([
                "bench",
                "--addr",
                &addr,
                "--block-bytes",
                "64KiB",
                "--connections",
                "2",
            ])
            .args(["--pipeline", "4", "--keyspace", "256", "--mix", mix])
            .args(["--duration", "0.5", "--warmup", "0.1", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["errors"], 0, "{mix}: {report}");
        assert!(
            report["ops_per_sec"].as_f64().unwrap() > 0.0,
            "{mix}: {report}"
        );
        assert!(
            report[field].as_u64().unwrap_or(0) > 0,
            "{mix}: no {field}: {report}"
        );
    }
    assert!(node.stat("blocks_stored").unwrap() > 0);
    assert!(node.stat("get_hits_g2").unwrap() > 0);
    assert!(node.stat("match_blocks").unwrap() > 0);
    node.shutdown().unwrap();
}
