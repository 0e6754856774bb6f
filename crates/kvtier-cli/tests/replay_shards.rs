//! `kvtier replay --shards`: the shard count of every manager row (JSON and table), the
//! default configuration when the flag is absent, one row per requested count, and a clear
//! error for a count the block manager does not accept.

use std::process::{Command, Output};

use kvtier_core::MAX_SHARDS;

fn kvtier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvtier"))
        .args(args)
        .output()
        .expect("run kvtier")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_rows(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "kvtier failed: {}", stderr(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    v.as_array().expect("a JSON array").clone()
}

/// A small synthetic replay with extra arguments.
fn replay(extra: &[&str]) -> Output {
    let mut args = vec![
        "replay",
        "--synthetic",
        "--synthetic-requests",
        "600",
        "--capacity",
        "300",
    ];
    args.extend_from_slice(extra);
    kvtier(&args)
}

#[test]
fn every_requested_shard_count_gets_its_own_rows() {
    let out = replay(&[
        "--format",
        "json",
        "--policy",
        "lru,belady",
        "--shards",
        "1,4",
    ]);
    let rows = json_rows(&out);
    let lru: Vec<&serde_json::Value> = rows.iter().filter(|r| r["policy"] == "lru").collect();
    let shards: Vec<u64> = lru.iter().map(|r| r["shards"].as_u64().unwrap()).collect();
    assert_eq!(shards, [1, 4], "{rows:?}");
    for r in &lru {
        assert_eq!(r["capacity"], 300);
        assert_eq!(r["requests"], 600);
    }
    // Belady is not a manager: no shard count, and one row whatever --shards says.
    let belady: Vec<&serde_json::Value> = rows.iter().filter(|r| r["policy"] == "belady").collect();
    assert_eq!(belady.len(), 1);
    assert!(belady[0]["shards"].is_null());
}

#[test]
fn rows_report_the_count_the_manager_was_built_with() {
    // lineage needs a global view, which the manager's one eviction order gives it at any
    // shard count: the count asked for is the one built.
    let out = replay(&["--format", "json", "--policy", "lineage", "--shards", "8"]);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["shards"], 8);
    // Counts round up to a power of two.
    let out = replay(&["--format", "json", "--policy", "fifo", "--shards", "3"]);
    assert_eq!(json_rows(&out)[0]["shards"], 4);
}

#[test]
fn without_the_flag_rows_use_the_default_shard_count() {
    let out = replay(&["--format", "json", "--policy", "lru"]);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 1);
    let built = rows[0]["shards"]
        .as_u64()
        .expect("a manager row has a shard count");
    assert!((1..=MAX_SHARDS as u64).contains(&built), "{built}");
    // Same figure as asking for that count explicitly.
    let explicit = replay(&[
        "--format",
        "json",
        "--policy",
        "lru",
        "--shards",
        &built.to_string(),
    ]);
    assert_eq!(json_rows(&explicit)[0]["shards"], built);
}

#[test]
fn the_table_has_a_shards_column() {
    let out = replay(&["--policy", "lru,fifo,belady", "--shards", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("shards: --shards 2"), "{text}");
    let header = text
        .lines()
        .find(|l| l.starts_with("policy"))
        .expect("a header line");
    assert!(header.contains("shards"), "{header}");
    for policy in ["lru", "fifo"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(policy))
            .unwrap_or_else(|| panic!("no {policy} line in\n{text}"));
        assert_eq!(line.split_whitespace().nth(1), Some("2"), "{line}");
    }
    let belady = text.lines().find(|l| l.starts_with("belady")).unwrap();
    assert_eq!(belady.split_whitespace().nth(1), Some("-"), "{belady}");
}

#[test]
fn a_shard_count_outside_the_builders_range_is_a_clear_error() {
    let max = MAX_SHARDS.to_string();
    let above = (MAX_SHARDS + 1).to_string();
    for bad in ["0", above.as_str(), "two", "-1"] {
        let out = replay(&[&format!("--shards={bad}")]);
        assert!(!out.status.success(), "--shards {bad} accepted");
        let err = stderr(&out);
        assert!(err.contains("--shards"), "--shards {bad}: {err}");
        assert!(err.contains(&format!("1..={max}")), "--shards {bad}: {err}");
        assert!(out.stdout.is_empty(), "--shards {bad}: no rows printed");
    }
    // The largest accepted count works.
    let out = replay(&["--format", "json", "--policy", "fifo", "--shards", &max]);
    let rows = json_rows(&out);
    assert!(rows[0]["shards"].as_u64().unwrap() >= 1);
}
