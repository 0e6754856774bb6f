//! A circuit breaker: after repeated outage errors, G4 stops trying for a short back-off.
//!
//! ```text
//!   Closed --(threshold consecutive outage errors)--> Open(until)
//!   Open   --(now >= until: one caller let through)--> HalfOpen
//!   HalfOpen --success--> Closed        HalfOpen --outage error--> Open(now + backoff)
//! ```
//!
//! Only outage errors (timeouts, refused or dropped connections) count; an answer from the
//! server, even a refusal, proves it is up. While open, calls are rejected without touching the
//! network, so a dead server costs callers nothing but a counter bump.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// The breaker's state, behind one short-held mutex.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    backoff: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, backoff: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            backoff,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few integers updated in one step: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the server now.
    pub(crate) fn allow(&self) -> bool {
        let mut s = self.lock();
        match s.open_until {
            None => true,
            Some(until) if Instant::now() >= until && !s.probing => {
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Records that the server answered.
    pub(crate) fn success(&self) {
        let mut s = self.lock();
        *s = State::default();
    }

    /// Records an outage error; returns whether this opened the breaker (a trip).
    pub(crate) fn failure(&self) -> bool {
        let mut s = self.lock();
        s.consecutive = s.consecutive.saturating_add(1);
        if s.probing || (s.open_until.is_none() && s.consecutive >= self.threshold) {
            s.probing = false;
            s.open_until = Some(Instant::now() + self.backoff);
            return true;
        }
        false
    }

    /// Whether the breaker is open (rejecting calls) right now.
    pub(crate) fn is_open(&self) -> bool {
        let s = self.lock();
        s.open_until
            .is_some_and(|until| Instant::now() < until || s.probing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_threshold_rejects_then_probes_once() {
        let b = Breaker::new(2, Duration::from_millis(30));
        assert!(b.allow());
        assert!(!b.failure());
        assert!(b.allow());
        assert!(b.failure(), "second consecutive failure trips");
        assert!(!b.allow() && b.is_open());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one probe after the back-off");
        assert!(!b.allow(), "only one probe at a time");
        assert!(b.failure(), "a failed probe re-opens");
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert!(b.allow() && b.allow() && !b.is_open());
    }
}
