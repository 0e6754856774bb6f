//! `kvtier replay` end to end, through the built binary: JSON output on the embedded trace,
//! lenient and strict handling of a malformed line, and unknown policies.

use std::io::Write;
use std::process::{Command, Output};

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

fn rate_of(rows: &[serde_json::Value], policy: &str, capacity: u64) -> f64 {
    rows.iter()
        .find(|r| r["policy"] == policy && r["capacity"] == capacity)
        .unwrap_or_else(|| panic!("no {policy} row at {capacity}"))["hit_rate"]
        .as_f64()
        .expect("hit_rate is a number")
}

#[test]
fn json_on_the_embedded_trace_has_lru_and_belady_rows() {
    let out = kvtier(&["replay", "--format", "json", "--capacity", "1000,5000"]);
    let rows = json_rows(&out);
    for r in &rows {
        for field in ["policy", "capacity", "hit_rate", "requests_per_sec"] {
            assert!(r.get(field).is_some(), "row without {field}: {r}");
        }
        let p = r["policy"].as_str().unwrap();
        assert_eq!(p, p.to_ascii_lowercase());
    }
    for capacity in [1000, 5000] {
        let lru = rate_of(&rows, "lru", capacity);
        let belady = rate_of(&rows, "belady", capacity);
        assert!(
            lru > 0.0 && lru <= belady,
            "lru {lru} belady {belady} at {capacity}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r["policy"] == "infinite" && r["capacity"].is_null())
    );
    assert_eq!(rows[0]["requests"], 12_031);
}

#[test]
fn table_output_names_policies_and_capacities() {
    let out = kvtier(&[
        "replay",
        "--synthetic",
        "--synthetic-requests",
        "2000",
        "--capacity",
        "300",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "lru",
        "fifo",
        "belady",
        "infinite",
        "300 blocks",
        "hit rate",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

fn bad_trace() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{{\"timestamp\": 0, \"hash_ids\": [0, 1, 2]}}").unwrap();
    writeln!(f, "{{\"timestamp\": 1, \"hash_ids\": [0, 1, 3]}}").unwrap();
    writeln!(f, "{{\"timestamp\": 2, \"hash_ids\": [0, oops]}}").unwrap();
    writeln!(f, "{{\"timestamp\": 3, \"hash_ids\": [0, 1, 2]}}").unwrap();
    f
}

#[test]
fn malformed_line_is_reported_and_skipped() {
    let f = bad_trace();
    let path = f.path().to_str().unwrap();
    let out = kvtier(&["replay", path, "--format", "json", "--capacity", "8"]);
    let err = stderr(&out);
    assert!(err.contains("line 3"), "stderr: {err}");
    let rows = json_rows(&out);
    assert_eq!(rows[0]["requests"], 3);
    // [0,1,2], [0,1,3] (2 hits), [0,1,2] (3 hits) with room for everything.
    assert_eq!(rows[0]["hit_blocks"], 5);
}

#[test]
fn malformed_line_aborts_with_strict() {
    let f = bad_trace();
    let path = f.path().to_str().unwrap();
    let out = kvtier(&["replay", path, "--strict"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3"), "stderr: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_policy_is_a_clear_error() {
    let out = kvtier(&["replay", "--policy", "lru,nosuch"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown policy \"nosuch\""), "stderr: {err}");
    assert!(
        err.contains("belady"),
        "should list the known policies: {err}"
    );
}

#[test]
fn missing_trace_file_is_a_clear_error() {
    let out = kvtier(&["replay", "/nonexistent/trace.jsonl"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/trace.jsonl"));
}

#[test]
fn help_states_the_metric() {
    let out = kvtier(&["replay", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("leading run"), "{text}");
    assert!(text.contains("chained"), "{text}");
}
