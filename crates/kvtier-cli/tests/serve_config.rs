//! `kvtier serve --check-config`: defaults, the TOML file, `KVTIER_*` variables and flags, in
//! that order of precedence, and bad settings rejected with the key named.

use std::process::Command;

fn check(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvtier"));
    cmd.arg("serve").arg("--check-config").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kvtier serve");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn file_env_and_flags_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kvtier.toml");
    std::fs::write(
        &file,
        "block_bytes = \"64KiB\"\nhost_bytes = \"8MiB\"\n[resp]\nmemory_budget = \"32MiB\"\nshards = 8\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, text) = check(&["--config", file], &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("block_bytes: ByteSize(\n        65536"),
        "{text}"
    );
    assert!(text.contains("shards: 8"), "{text}");
    // The environment beats the file, a flag beats the environment.
    let (ok, text) = check(
        &["--config", file, "--resp-shards", "16"],
        &[
            ("KVTIER_RESP_SHARDS", "4"),
            ("KVTIER_RESP_MEMORY_BUDGET", "2MiB"),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("shards: 16"), "{text}");
    assert!(
        text.contains("memory_budget: ByteSize(\n            2097152"),
        "{text}"
    );
}

#[test]
fn bad_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[resp]\ncolour = 3\n").unwrap();
    let (ok, text) = check(&["--config", file.to_str().unwrap()], &[]);
    assert!(!ok && text.contains("colour"), "{text}");
    let (ok, text) = check(&["--resp-shards", "0"], &[]);
    assert!(!ok && text.contains("resp.shards"), "{text}");
    let (ok, text) = check(&["--block-bytes", "lots"], &[]);
    assert!(!ok && text.contains("lots"), "{text}");
    let (ok, text) = check(&["--loopback-congestion", "no_such_cc"], &[]);
    assert!(
        !ok && text.contains("loopback_congestion") && text.contains("does not offer"),
        "{text}"
    );
    let (ok, text) = check(&[], &[("KVTIER_LOOPBACK_CONGESTION", "reno")]);
    assert!(
        ok && text.contains("loopback_congestion: \"reno\""),
        "{text}"
    );
}
