//! The slow lane: a few threads for the requests that wait on a disk (a GET whose blocks are
//! only on disk), so that neither an IO thread (where G2 GETs run inline) nor the request
//! workers stall behind a read.
//!
//! The queue is bounded; when it is full the job runs on the caller's thread instead, which
//! slows that caller down (backpressure) rather than growing a queue without limit.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool of threads running jobs in arrival order (per thread).
pub(crate) struct Lane {
    sender: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Lane {
    /// `threads` threads named `kvtier-slow-N` sharing a queue of `depth` jobs.
    pub(crate) fn new(threads: usize, depth: usize) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<Job>(depth.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&receiver);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("kvtier-slow-{i}"))
                    .spawn(move || run(&rx))?,
            );
        }
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(handles),
        })
    }

    /// Runs `job` on a lane thread, or here when the queue is full or the lane is stopped.
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let rejected = match self.sender.lock().as_ref() {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
            },
            None => Some(job),
        };
        if let Some(job) = rejected {
            job();
        }
    }

    /// Lets queued jobs finish, then joins the threads.
    pub(crate) fn stop(&self) {
        drop(self.sender.lock().take());
        for handle in self.threads.lock().drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = receiver.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_job_runs_even_when_the_queue_overflows() {
        let lane = Lane::new(2, 1);
        let lane = lane.unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let d = Arc::clone(&done);
            lane.submit(move || {
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        lane.stop();
        assert_eq!(done.load(Ordering::SeqCst), 100);
        let d = Arc::clone(&done);
        lane.submit(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            done.load(Ordering::SeqCst),
            101,
            "after stop, jobs run on the caller"
        );
    }
}
