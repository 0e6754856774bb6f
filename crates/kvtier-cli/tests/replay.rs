//! `kvtier replay` end to end, through the built binary: JSON output on the embedded trace,
//! lenient and strict handling of a malformed line, unknown policies, and the bounds (a huge
//! capacity, an over-long line, an endless stdin, an absurd synthetic size).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `kvtier` with `feed` writing its stdin from another thread (write errors, such as the
/// broken pipe when kvtier stops reading, end the feed); fails the test after 120 s.
fn kvtier_fed(args: &[&str], feed: impl FnOnce(&mut dyn Write) + Send + 'static) -> Output {
    kvtier_fed_in(Command::new(env!("CARGO_BIN_EXE_kvtier")), args, feed)
}

fn kvtier_fed_in(
    mut cmd: Command,
    args: &[&str],
    feed: impl FnOnce(&mut dyn Write) + Send + 'static,
) -> Output {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kvtier");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || feed(&mut stdin));
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("kvtier (pid {id}) did not finish within 120 s"))
        .expect("wait for kvtier");
    feeder.join().expect("feeder thread");
    out
}

/// Writes `line` over and over, up to `max_bytes` (so that a kvtier without a limit still ends).
fn repeat(line: &'static [u8], max_bytes: usize) -> impl FnOnce(&mut dyn Write) + Send {
    move |w| {
        let chunk = line.repeat((64 << 10) / line.len().max(1) + 1);
        let mut sent = 0;
        while sent < max_bytes && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    }
}

#[test]
fn an_over_long_line_is_an_error_not_an_allocation() {
    // 4 KiB without a newline against a 1 KiB limit.
    let out = kvtier_fed(
        &["replay", "-", "--max-line-bytes", "1024"],
        repeat(b"1111", 4096),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 1 is longer than 1024 bytes") && err.contains("--max-line-bytes"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_default_line_limit_is_16_mib() {
    // 16 MiB + 1 byte without a newline: rejected by default, read with a higher limit.
    let over = (16 << 20) + 1;
    let out = kvtier_fed(&["replay", "-"], repeat(b"[", over));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("longer than 16777216 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_endless_stdin_is_cut_off_at_the_input_limit() {
    // Stops by itself after 64 MiB, so a kvtier without a limit would end (and fail here).
    let out = kvtier_fed(
        &[
            "replay",
            "-",
            "--max-trace-bytes",
            "1000000",
            "--policy",
            "lru",
        ],
        repeat(b"{\"hash_ids\": [1, 2, 3]}\n", 64 << 20),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("longer than 1000000 bytes") && err.contains("--max-trace-bytes"),
        "{err}"
    );
}

#[test]
fn the_default_limits_are_documented() {
    let out = kvtier(&["replay", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[default: 16777216]"), "{text}");
    assert!(text.contains("[default: 1073741824]"), "{text}");
    assert!(text.contains("--max-trace-bytes"), "{text}");
}

#[test]
fn an_absurd_synthetic_size_is_rejected() {
    let start = Instant::now();
    let out = kvtier(&[
        "replay",
        "--synthetic",
        "--synthetic-requests",
        "1000000000000000",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1..=1000000"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// Rows of a JSON replay of `text` (fed on stdin) with extra arguments.
fn replay_stdin(
    text: &'static str,
    args: &[&str],
    cmd: Command,
) -> (Vec<serde_json::Value>, String) {
    let mut all = vec!["replay", "-", "--format", "json"];
    all.extend_from_slice(args);
    let out = kvtier_fed_in(cmd, &all, move |w| {
        let _ = w.write_all(text.as_bytes());
    });
    let err = stderr(&out);
    (json_rows(&out), err)
}

#[test]
fn a_huge_capacity_replays_like_the_distinct_blocks() {
    const TEXT: &str = "{\"hash_ids\": [0, 1, 2]}\n{\"hash_ids\": [0, 1, 3]}\n\
                        {\"hash_ids\": [4]}\n{\"hash_ids\": [0, 1, 2, 5]}\n";
    // Six distinct blocks. A billion slots would need tens of gigabytes; under a 2 GiB address
    // space limit only the clamped replay can run.
    let cmd = if cfg!(unix) {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "ulimit -v 2097152 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_kvtier"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_kvtier"))
    };
    let (rows, err) = replay_stdin(
        TEXT,
        &[
            "--capacity",
            "1000000000,6",
            "--policy",
            "lru,freqlease,belady",
        ],
        cmd,
    );
    assert!(
        err.contains("capacity 1000000000 is at least the trace's 6 distinct blocks"),
        "{err}"
    );
    for policy in ["lru", "freqlease", "belady"] {
        let at = |c: u64| {
            rows.iter()
                .find(|r| r["policy"] == policy && r["capacity"] == c)
                .unwrap_or_else(|| panic!("no {policy} row at {c}"))["hit_blocks"]
                .clone()
        };
        assert_eq!(at(1_000_000_000), at(6), "{policy}");
        assert_eq!(at(6), 5, "{policy}: 2 + 3 hits with nothing evicted");
    }
}

#[test]
fn the_table_says_when_a_capacity_was_clamped() {
    let out = kvtier_fed(
        &["replay", "-", "--capacity", "50,2", "--policy", "lru"],
        |w| {
            let _ = w.write_all(b"{\"hash_ids\": [0, 1, 2]}\n{\"hash_ids\": [0, 1]}\n");
        },
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("note: capacity 50 is at least the trace's 3 distinct blocks"),
        "{text}"
    );
    assert!(!text.contains("capacity 2 is"), "{text}");
}
