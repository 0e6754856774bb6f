//! Fixtures shared by the CLI's test files: `kvtier router` and `kvtier serve` as processes.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the fixtures"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kvtier_testkit::process::ChildGuard;

/// How long the router may take to start, answer or stop.
pub const WAIT: Duration = Duration::from_secs(30);
/// What the router prints once it listens, before its address.
pub const LISTENING: &str = "kvtier router listening on http://";

/// A running `kvtier router`.
pub struct RouterProcess {
    /// The child process (killed when dropped).
    pub process: ChildGuard,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl RouterProcess {
    /// Starts `kvtier router --listen 127.0.0.1:0 ARGS` and waits for its listening line.
    pub fn start(args: &[&str], stderr: Stdio) -> Self {
        let mut process = ChildGuard::spawn(
            Command::new(env!("CARGO_BIN_EXE_kvtier"))
                .args(["router", "--listen", "127.0.0.1:0"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr),
        );
        let lines = process.stdout_lines();
        let addr = lines
            .find_map(WAIT, |line| {
                let addr = line.strip_prefix(LISTENING)?.trim();
                Some(
                    addr.parse::<SocketAddr>()
                        .unwrap_or_else(|e| panic!("listening line {line:?}: {e}")),
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "kvtier router {args:?} printed no listening line; exit: {:?}",
                    process.wait_exit(Duration::from_secs(5))
                )
            });
        // Keep draining stdout so that the router never blocks on a full pipe.
        lines.drain();
        RouterProcess { process, addr }
    }

    /// Sends SIGTERM and waits for the process to exit with success. The signal may go out
    /// right after the listening line: the router installs its handlers before printing it
    /// (a regression: it once printed first and a prompt SIGTERM lost the final snapshot).
    pub fn terminate(&mut self) {
        let pid = self.process.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
        let status = self
            .process
            .wait_exit(WAIT)
            .expect("the router exits after SIGTERM");
        assert!(
            status.success(),
            "the router exits cleanly on SIGTERM: {status}"
        );
    }
}

/// A running `kvtier serve` (killed when dropped, so a failing test leaves no server behind).
pub struct ServeProcess {
    /// The child process (`kill` it for a crash, SIGTERM it for a graceful stop).
    pub child: Child,
    /// Where its binary protocol listens.
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// Starts `kvtier serve` on `listen` over `dir`: 4 KiB blocks, 1 MiB of host memory,
    /// `disk` of disk, no RESP or metrics port, then `extra` flags. Returns once it listens.
    pub fn start(listen: &str, dir: &Path, disk: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvtier"))
            .args(["serve", "--listen", listen])
            .args(["--redis-listen", "off", "--metrics-listen", "off"])
            .args(["--block-bytes", "4KiB", "--host-bytes", "1MiB"])
            .args(["--disk-bytes", disk])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("KVTIER_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvtier serve");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = Vec::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("kvtier serve exited before listening: {seen:?}");
            };
            if let Some(rest) = line.strip_prefix("kvtier serve: binary ") {
                break rest
                    .split(' ')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("listening line {line:?}"));
            }
            seen.push(line);
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
