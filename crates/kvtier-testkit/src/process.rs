//! Child processes that never outlive a test, and their output read line by line.
//!
//! [`ChildGuard`] owns a [`Child`] and kills and reaps it when dropped, whatever the test's
//! outcome (a panicking test included); before the kill it closes the child's stdin, so a
//! child that exits at EOF gets the chance to. [`Lines`] forwards a pipe's lines from a
//! thread to a channel, so that a test can wait for a line with a deadline instead of
//! blocking on the pipe.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Spawns `command` under a guard.
    ///
    /// # Panics
    ///
    /// If the process cannot be started.
    pub fn spawn(command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()));
        ChildGuard { child }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The lines of the child's stdout, from now on (see [`Lines`]).
    ///
    /// # Panics
    ///
    /// If stdout was not [`Stdio::piped`](std::process::Stdio::piped), or was taken already.
    pub fn stdout_lines(&mut self) -> Lines {
        Lines::new(self.child.stdout.take().expect("piped stdout"))
    }

    /// Writes `line` and a newline to the child's stdin, and flushes.
    ///
    /// # Panics
    ///
    /// If stdin was not [`Stdio::piped`](std::process::Stdio::piped), or the write fails
    /// (the child exited).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write {line:?} to the child's stdin: {e}"));
    }

    /// Reads the child's stderr to its end (the child's exit, normally) and returns it.
    ///
    /// # Panics
    ///
    /// If stderr was not [`Stdio::piped`](std::process::Stdio::piped), was taken already, or
    /// is not UTF-8.
    pub fn read_stderr(&mut self) -> String {
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        stderr
    }

    /// Waits up to `within` for the process to exit by itself; `None` if it is still running.
    ///
    /// # Panics
    ///
    /// If the process's status cannot be queried.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // EOF first: a child that exits on it may do so cleanly before the kill lands.
        self.child.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a child's output, read by a thread and handed over a channel.
///
/// The channel closes at the output's EOF, so a wait ends early when the child exits.
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// Starts forwarding the lines of `out` (a child's stdout or stderr, typically).
    pub fn new(out: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// Skips lines until `find` maps one to `Some`, and returns that; `None` if the output
    /// ended or `within` ran out first.
    pub fn find_map<T>(
        &self,
        within: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = find(&line) {
                        return Some(found);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits for a line equal to `want`; false if the output ended or `within` ran out.
    pub fn wait_line(&self, want: &str, within: Duration) -> bool {
        self.find_map(within, |line| (line == want).then_some(()))
            .is_some()
    }

    /// Keeps reading (and dropping) the remaining lines in the background, so that the child
    /// never blocks on a full pipe.
    pub fn drain(self) {
        std::thread::spawn(move || for _ in self.rx {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_find_and_end() {
        let lines = Lines::new(&b"one\nREADY\nport 7\n"[..]);
        assert!(lines.wait_line("READY", Duration::from_secs(5)));
        let port = lines.find_map(Duration::from_secs(5), |l| {
            l.strip_prefix("port ")?.parse().ok()
        });
        assert_eq!(port, Some(7u16));
        // The input ended: no wait runs to its deadline.
        assert!(!lines.wait_line("never", Duration::from_secs(60)));
    }
}
