//! A stand-in for vLLM's ZeroMQ KV-event publisher, as a child process.
//!
//! [`VllmPublisher`] runs `crates/kvtier-router/tests/python/vllm_publisher.py` (pyzmq, and
//! msgspec with vLLM's struct definitions from `vllm_structs.py`, in the venv of
//! [`python`](crate::python)): it binds a PUB socket and a ROUTER replay socket on 127.0.0.1
//! and plays a fixed scenario, paced by control lines on its stdin and reporting progress on
//! its stdout:
//!
//! ```text
//! READY          printed once both sockets are bound (start() waits for it)
//! <- "go"        phase 1: seq 0, 1, 2; prints PHASE1_DONE
//! <- "continue"  phase 2: seq 3..=8 (4 skipped on PUB); prints PHASE2_DONE
//! <- "done"      exit (so do EOF and --timeout)
//! ```
//!
//! The script's docstring describes the scenario's events. What the scenario must produce is
//! for each test to say; this module only runs the process.
//!
//! [`VllmPublisherBuilder::start_scripted`] starts the same script in its scripted mode
//! instead, where the test publishes batches of its own: see [`crate::vllm_script`].

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::free_port;
use crate::process::{ChildGuard, Lines};
use crate::python::python;
use crate::vllm_script::ScriptedPublisher;
use crate::workspace_root;

/// The publisher script, relative to the workspace root.
pub const SCRIPT: &str = "crates/kvtier-router/tests/python/vllm_publisher.py";

/// How long [`VllmPublisherBuilder::start`] waits for `READY` from one attempt.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Attempts with fresh ports: a port picked free may be taken before python binds it.
const ATTEMPTS: usize = 5;

/// The running publisher script; closed (stdin EOF) and killed when dropped.
#[derive(Debug)]
pub struct VllmPublisher {
    lines: Lines,
    pub_port: u16,
    replay_port: u16,
    process: ChildGuard,
}

impl VllmPublisher {
    /// A builder with the script's defaults (free ports, topic `kv-events`, rank 0, 60 s).
    pub fn builder() -> VllmPublisherBuilder {
        VllmPublisherBuilder::default()
    }

    /// Sends a control line (`go`, `continue`, `done`).
    ///
    /// # Panics
    ///
    /// If the script exited.
    pub fn send(&mut self, line: &str) {
        self.process.send_line(line);
    }

    /// Waits for a stdout line equal to `want` (`PHASE1_DONE`, `PHASE2_DONE`); false if the
    /// script exited or `within` ran out.
    pub fn wait_line(&self, want: &str, within: Duration) -> bool {
        self.lines.wait_line(want, within)
    }

    /// Skips stdout lines until `find` maps one to `Some`, and returns that; `None` if the
    /// script exited or `within` ran out (see [`Lines::find_map`]).
    pub fn find_line<T>(&self, within: Duration, find: impl FnMut(&str) -> Option<T>) -> Option<T> {
        self.lines.find_map(within, find)
    }

    /// The PUB socket's and the replay socket's ports.
    pub fn ports(&self) -> (u16, u16) {
        (self.pub_port, self.replay_port)
    }

    /// The PUB socket's endpoint, `tcp://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.pub_port)
    }

    /// The replay (ROUTER) socket's endpoint, `tcp://127.0.0.1:PORT`.
    pub fn replay_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.replay_port)
    }
}

/// Options of a [`VllmPublisher`], each a flag of the script.
#[derive(Debug, Clone)]
pub struct VllmPublisherBuilder {
    ports: Option<(u16, u16)>,
    topic: String,
    dp_rank: i64,
    timeout: Duration,
    drop_from_buffer: bool,
    scripted: bool,
}

impl Default for VllmPublisherBuilder {
    fn default() -> Self {
        VllmPublisherBuilder {
            ports: None,
            topic: "kv-events".to_string(),
            dp_rank: 0,
            timeout: Duration::from_secs(60),
            drop_from_buffer: false,
            scripted: false,
        }
    }
}

impl VllmPublisherBuilder {
    /// Binds the PUB and replay sockets on these ports (a restarted engine). Default: free
    /// ports, fresh ones for each attempt.
    pub fn with_ports(mut self, ports: (u16, u16)) -> Self {
        self.ports = Some(ports);
        self
    }

    /// The topic frame of every PUB message (`--topic`). Default: `kv-events`.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The data-parallel rank stamped on every batch (`--dp-rank`). Default: 0.
    pub fn with_dp_rank(mut self, rank: i64) -> Self {
        self.dp_rank = rank;
        self
    }

    /// How long the script runs at most (`--timeout`). Default: 60 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Leaves the batch skipped on PUB out of the replay buffer too, so that its gap cannot
    /// be repaired (`--drop-from-buffer`). Default: off.
    pub fn with_drop_from_buffer(mut self) -> Self {
        self.drop_from_buffer = true;
        self
    }

    /// Starts the script in its scripted mode (`--scripted`) and waits until it printed
    /// `READY`: the test publishes its own batches ([`ScriptedPublisher::publish`]).
    ///
    /// # Panics
    ///
    /// If python cannot be set up or started, or no attempt became ready.
    pub fn start_scripted(mut self) -> ScriptedPublisher {
        self.scripted = true;
        ScriptedPublisher::new(self.start())
    }

    /// Starts the script and waits until it printed `READY`.
    ///
    /// # Panics
    ///
    /// If python cannot be set up or started, or no attempt became ready.
    pub fn start(self) -> VllmPublisher {
        let script = workspace_root().join(SCRIPT);
        for _ in 0..ATTEMPTS {
            let (pub_port, replay_port) = self.ports.unwrap_or_else(|| (free_port(), free_port()));
            let mut process = ChildGuard::spawn(&mut self.command(&script, pub_port, replay_port));
            let publisher = VllmPublisher {
                lines: process.stdout_lines(),
                pub_port,
                replay_port,
                process,
            };
            if publisher.wait_line("READY", READY_WAIT) {
                return publisher;
            }
        }
        panic!("the publisher never became ready");
    }

    fn command(&self, script: &Path, pub_port: u16, replay_port: u16) -> Command {
        let mut command = Command::new(python());
        command
            .arg(script)
            .args(["--pub-port", &pub_port.to_string()])
            .args(["--replay-port", &replay_port.to_string()])
            .args(["--topic", &self.topic])
            .args(["--dp-rank", &self.dp_rank.to_string()])
            .args(["--timeout", &self.timeout.as_secs_f64().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.drop_from_buffer {
            command.arg("--drop-from-buffer");
        }
        if self.scripted {
            command.arg("--scripted");
        }
        command
    }
}
