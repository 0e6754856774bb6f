//! Waiting on a running vLLM source's counters (test files that need the `zmq` feature
//! include this with `#[path]`).

use std::time::{Duration, Instant};

use kvtier_router::{VllmSourceHandle, VllmStats};

/// How long a source may take to reach what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until `done` holds for the source's counters; panics with `what` after [`WAIT`].
pub async fn wait_stats(handle: &VllmSourceHandle, what: &str, done: impl Fn(&VllmStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(&handle.stats()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
