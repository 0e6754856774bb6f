//! Bounded, lazily started worker threads: calls into a tier that must not block the caller
//! past a deadline, and asynchronous promotion queues.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunError {
    /// The queue was full (the workers are stuck): the job was not queued.
    Busy,
    /// The job did not finish before the deadline (it may still run later).
    Timeout,
    /// The job panicked, or the workers could not be started.
    Lost,
}

/// A fixed set of worker threads, started on first use, fed by a bounded queue.
pub(crate) struct Pool {
    name: String,
    workers: usize,
    depth: usize,
    queue: OnceLock<Option<SyncSender<Job>>>,
}

impl Pool {
    /// A pool of `workers` threads named after `name`, with room for `depth` queued jobs.
    pub(crate) fn new(name: String, workers: usize, depth: usize) -> Self {
        Self {
            name,
            workers: workers.max(1),
            depth: depth.max(1),
            queue: OnceLock::new(),
        }
    }

    fn sender(&self) -> Option<&SyncSender<Job>> {
        self.queue
            .get_or_init(|| {
                let (tx, rx) = sync_channel::<Job>(self.depth);
                let rx = Arc::new(Mutex::new(rx));
                let mut started = 0;
                for i in 0..self.workers {
                    let rx = Arc::clone(&rx);
                    let spawned = std::thread::Builder::new()
                        .name(format!("kvtier-{}-{i}", self.name))
                        .spawn(move || work(&rx));
                    started += usize::from(spawned.is_ok());
                }
                (started > 0).then_some(tx)
            })
            .as_ref()
    }

    /// Queues `job` without waiting.
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), RunError> {
        let tx = self.sender().ok_or(RunError::Lost)?;
        match tx.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RunError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(RunError::Lost),
        }
    }

    /// Runs `f` on a worker and waits for its result at most `timeout`.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, RunError> {
        let (rtx, rrx) = sync_channel(1);
        self.submit(move || {
            let _ = rtx.send(f());
        })?;
        match rrx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(RunError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(RunError::Lost),
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking tier must not take the worker down with it; the caller sees `Lost`.
            Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
            Err(_) => return,
        }
    }
}
