//! `kvtier replay --g3-capacity`: the tiered replay through the built binary (JSON rows and
//! their invariants, the table, policy selection, bad values) and the default output left as is.

use std::process::{Command, Output};

fn kvtier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvtier"))
        .args(args)
        .output()
        .expect("run kvtier")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_rows(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "kvtier failed: {}", stderr(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    v.as_array().expect("a JSON array").clone()
}

fn u(r: &serde_json::Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {r}"))
}

#[test]
fn json_rows_per_policy_keep_the_tier_invariants() {
    let out = kvtier(&[
        "replay",
        "--format",
        "json",
        "--capacity",
        "500",
        "--g3-capacity",
        "5000",
        "--block-bytes",
        "1000",
    ]);
    let rows = json_rows(&out);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["write_policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["write_through", "write_through_selective:2", "write_back"]
    );
    for r in &rows {
        assert_eq!(u(r, "requests"), 12_031);
        assert_eq!((u(r, "g2_capacity"), u(r, "g3_capacity")), (500, 5000));
        assert!(u(r, "g2_hit_blocks") <= u(r, "combined_hit_blocks"), "{r}");
        assert!(
            u(r, "combined_hit_blocks") <= u(r, "infinite_hit_blocks"),
            "{r}"
        );
        assert_eq!(u(r, "g3_bytes_written"), 1000 * u(r, "g3_blocks_written"));
        // G2 is the same manager seeing the same requests under every write policy.
        assert_eq!(u(r, "g2_hit_blocks"), u(&rows[0], "g2_hit_blocks"));
        assert_eq!(u(r, "g2_evictions"), u(&rows[0], "g2_evictions"));
    }
    assert!(u(&rows[0], "g3_blocks_written") <= u(&rows[0], "g2_registrations"));
    assert!(u(&rows[2], "g3_blocks_written") <= u(&rows[2], "g2_evictions"));
}

#[test]
fn table_names_each_policy_and_the_columns() {
    let out = kvtier(&[
        "replay",
        "--capacity",
        "300",
        "--g3-capacity",
        "1000",
        "--write-policy",
        "write_through_selective:3,write-back",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "G2 alone",
        "G2+G3",
        "infinite",
        "bytes/hit gained",
        "write_through_selective:3",
        "write_back",
        "64.00 MiB",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("write_through "),
        "only the policies asked for:\n{text}"
    );
}

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let out = kvtier(&[
        "replay",
        "--g3-capacity",
        "10",
        "--write-policy",
        "write_sometimes",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown write policy"),
        "{}",
        stderr(&out)
    );

    let out = kvtier(&["replay", "--g3-capacity", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--g3-capacity"), "{}", stderr(&out));

    // Tier flags without --g3-capacity, or with eviction-policy flags: usage errors.
    for args in [
        &["replay", "--write-policy", "write_back"][..],
        &["replay", "--g3-capacity", "10", "--policy", "lru"][..],
    ] {
        assert_eq!(kvtier(args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn without_g3_capacity_the_output_is_the_plain_replay() {
    let out = kvtier(&[
        "replay",
        "--capacity",
        "200",
        "--policy",
        "lru",
        "--format",
        "json",
    ]);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["policy"], "lru");
    assert!(rows[0].get("write_policy").is_none());
}

#[test]
fn huge_capacities_cost_what_the_trace_costs() {
    // A billion-block G2 and G3 would need ~100 GB if allocated up front; it must run as a
    // trace-sized G2 (nothing evicted) and reach the infinite-cache rate under write_through.
    let out = kvtier(&[
        "replay",
        "--format",
        "json",
        "--capacity",
        "1000000000",
        "--g3-capacity",
        "1000000000",
        "--write-policy",
        "write_through",
    ]);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(u(r, "g2_capacity"), 1_000_000_000);
    assert_eq!(u(r, "g2_evictions"), 0);
    assert_eq!(u(r, "g2_hit_blocks"), u(r, "infinite_hit_blocks"));
}
