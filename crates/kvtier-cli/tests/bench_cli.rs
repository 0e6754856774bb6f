//! `kvtier bench` end to end: the real binary against plain loopback TCP (`--raw-tcp`) and
//! against a real `redis-server` (started here on a free 127.0.0.1 port, killed by PID at the
//! end), checking its JSON report; and its refusals of bad arguments.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvtier_testkit::net::free_port;
use kvtier_testkit::process::ChildGuard;

fn kvtier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvtier"))
        .args(args)
        .output()
        .expect("run kvtier")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "kvtier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

const SHORT: [&str; 6] = ["--duration", "0.4", "--warmup", "0.1", "--format", "json"];

#[test]
fn raw_tcp_moves_the_blocks_it_reports() {
    for (mix, field) in [("0:1:0", "gets"), ("1:0:0", "puts"), ("0:0:1", "matches")] {
        let mut args = vec![
            "bench",
            "--raw-tcp",
            "--block-bytes",
            "64KiB",
            "--connections",
            "2",
        ];
        args.extend(["--pipeline", "4", "--mix", mix]);
        args.extend(SHORT);
        let r = json(&kvtier(&args));
        let ops = r["ops"].as_u64().unwrap();
        assert!(ops > 0, "{r}");
        assert_eq!(r[field].as_u64(), Some(ops), "{r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        let moved = r["gb_per_sec"].as_f64().unwrap() * 1e9 * r["seconds"].as_f64().unwrap();
        let expected = if mix == "0:0:1" {
            0.0
        } else {
            (ops * 65_536) as f64
        };
        assert!(
            (moved - expected).abs() <= 1.0 + expected * 1e-9,
            "{moved} vs {expected}"
        );
        let (p50, p99) = (r["p50_us"].as_f64().unwrap(), r["p99_us"].as_f64().unwrap());
        assert!(
            p50 > 0.0 && p50 <= p99 && p99 <= r["p999_us"].as_f64().unwrap(),
            "{r}"
        );
    }
}

/// `--loopback-congestion` gives every connection of the run (the bench's and the raw TCP
/// server's) that algorithm; the run works and reports as usual.
#[test]
fn a_loopback_congestion_control_can_be_chosen() {
    for cc in ["reno", "system"] {
        let mut args = vec!["bench", "--raw-tcp", "--block-bytes", "64KiB"];
        args.extend(["--loopback-congestion", cc, "--mix", "1:1:0"]);
        args.extend(SHORT);
        let r = json(&kvtier(&args));
        assert!(r["ops"].as_u64().unwrap() > 0, "{cc}: {r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{cc}: {r}");
    }
}

/// Finds a Debian-installed binary, installing the packages with the project's script once.
fn redis_binary(name: &str) -> Option<std::path::PathBuf> {
    if std::env::var_os("KVTIER_SKIP_REDIS_TESTS").is_some_and(|v| v != "0") {
        eprintln!("KVTIER_SKIP_REDIS_TESTS is set: skipping");
        return None;
    }
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    };
    if find().is_none() {
        let script = kvtier_testkit::workspace_root().join("scripts/install-deps.sh");
        let _ = Command::new("flock")
            .arg("/tmp/kvtier-install-deps.lock")
            .arg("bash")
            .arg(script)
            .status();
    }
    Some(find().unwrap_or_else(|| panic!("{name} missing after scripts/install-deps.sh")))
}

#[test]
fn against_a_real_redis_server_every_get_returns_its_block() {
    let Some(server) = redis_binary("redis-server") else {
        return;
    };
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("kvtier-bench-redis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _redis = ChildGuard::spawn(
        Command::new(server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kvtier_testkit::net::accepts(([127, 0, 0, 1], port).into()) {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut args = vec![
        "bench",
        "--target",
        &url,
        "--block-bytes",
        "16KiB",
        "--keyspace",
        "64",
    ];
    args.extend(["--connections", "3", "--pipeline", "8", "--mix", "1:3:0"]);
    args.extend(SHORT);
    let r = json(&kvtier(&args));
    assert!(
        r["gets"].as_u64().unwrap() > 0 && r["puts"].as_u64().unwrap() > 0,
        "{r}"
    );
    // The prefill stored every key, so no GET misses, and every block came back stamped.
    assert_eq!(r["misses"].as_u64(), Some(0), "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_and_unreachable_targets_are_clear_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["bench"], "--target"),
        (&["bench", "--raw-tcp", "--block-bytes", "65M"], "64 MiB"),
        (
            &["bench", "--raw-tcp", "--mix", "0:0:0"],
            "every weight is 0",
        ),
        (&["bench", "--raw-tcp", "--duration", "0"], "seconds"),
        (&["bench", "--target", "http://x"], "redis://"),
        (
            &["bench", "--raw-tcp", "--loopback-congestion", "no_such_cc"],
            "the kernel does not offer",
        ),
    ];
    for (args, want) in cases {
        let out = kvtier(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = kvtier(&["bench", "--target", &url, "--duration", "0.1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Redis server answers PING"));
    let out = kvtier(&["bench", "--target", &url, "--mix", "0:0:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("MATCH has no Redis command"));
}
