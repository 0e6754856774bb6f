//! Fixtures shared by the `kvtier router` test files: the running binary.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the fixtures"
)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
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
