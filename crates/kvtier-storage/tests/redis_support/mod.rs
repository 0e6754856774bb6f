//! A real `redis-server` for G4 tests and the G4 bench: started on a free 127.0.0.1 port with
//! no persistence (`--save '' --appendonly no`), in the foreground under a
//! [`ChildGuard`](kvtier_testkit::process::ChildGuard), so it is killed by PID when the test
//! ends, panics included. [`RedisServer::kill`] and [`RedisServer::restart`] simulate an
//! outage on the same port.
//!
//! `redis-server` comes from `scripts/install-deps.sh` (which `.ci/run` calls, and which the
//! first test to need it runs when it is missing). Where it still cannot be had the tests fail
//! with that hint, unless `KVTIER_SKIP_REDIS_TESTS=1` skips them.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvtier_testkit::net::free_port;
use kvtier_testkit::process::ChildGuard;

/// A redis-server child on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

/// Whether to skip (says why on stderr): `KVTIER_SKIP_REDIS_TESTS` set to anything but `0`.
pub fn skip_redis_tests() -> bool {
    let skip = std::env::var_os("KVTIER_SKIP_REDIS_TESTS").is_some_and(|v| v != "0");
    if skip {
        eprintln!("KVTIER_SKIP_REDIS_TESTS is set: skipping");
    }
    skip
}

fn find_on_path() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    })
}

/// `redis-server`, installed on first use by `scripts/install-deps.sh` when missing (so that
/// `cargo test --workspace` works on a fresh machine, as `scripts/python-env.sh` does for the
/// Python tests). Concurrent test binaries serialise the install with `flock`.
fn binary() -> PathBuf {
    if let Some(found) = find_on_path() {
        return found;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/install-deps.sh");
    let status = Command::new("flock")
        .args(["/tmp/kvtier-install-deps.lock", "bash", script])
        .status();
    if let Some(found) = find_on_path() {
        return found;
    }
    panic!(
        "redis-server not found on PATH and scripts/install-deps.sh did not install it \
         ({status:?}): install redis-server and redis-tools, or set \
         KVTIER_SKIP_REDIS_TESTS=1 to skip the Redis tests"
    )
}

fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server on a free port (retrying on a port taken meanwhile).
    pub fn start() -> Self {
        let mut dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir,
                child: None,
            };
            if server.spawn() {
                return server;
            }
            dir = server.dir;
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn spawn(&mut self) -> bool {
        let child = ChildGuard::spawn(
            Command::new(binary())
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server's URL for the `redis` crate.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL by PID) and waits until the port refuses connections.
    pub fn kill(&mut self) {
        drop(self.child.take());
        while ping(self.port) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same port (empty: nothing was persisted).
    ///
    /// # Panics
    ///
    /// If it does not answer within 10 s (another process took the port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill");
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// A plain `redis` crate connection, for tampering and for the bench's baseline.
    pub fn plain(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("plain redis connection")
    }
}
