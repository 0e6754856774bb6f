//! Single-flight: concurrent misses on one block share one fetch from the slower tiers.

use std::collections::HashMap;
use std::sync::Arc;

use kvtier_core::SequenceHash;
use parking_lot::{Condvar, Mutex};

/// A fetched block: its bytes and the tier they came from.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) tier: usize,
}

#[derive(Default)]
struct Flight {
    done: Mutex<Option<Option<Fetched>>>,
    cv: Condvar,
}

/// The fetches in progress, by block.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<u128, Arc<Flight>>>,
}

/// What [`Flights::join`] made of the caller.
pub(crate) enum Role<'a> {
    /// The caller fetches and must [`Leader::finish`].
    Leader(Leader<'a>),
    /// Another caller fetched: its result.
    Follower(Option<Fetched>),
}

/// The fetching caller's duty: publish the result (`None` if dropped without one).
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: u128,
    flight: Arc<Flight>,
    finished: bool,
}

impl Flights {
    /// Joins the fetch of `hash`, or starts it.
    pub(crate) fn join(&self, hash: SequenceHash) -> Role<'_> {
        let key = hash.as_u128();
        let (flight, leader) = {
            let mut map = self.map.lock();
            match map.get(&key) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight::default());
                    map.insert(key, Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if leader {
            return Role::Leader(Leader {
                flights: self,
                key,
                flight,
                finished: false,
            });
        }
        let mut done = flight.done.lock();
        while done.is_none() {
            flight.cv.wait(&mut done);
        }
        Role::Follower(done.clone().flatten())
    }
}

impl Leader<'_> {
    /// Publishes the result to every follower.
    pub(crate) fn finish(mut self, result: Option<Fetched>) {
        self.publish(result);
    }

    fn publish(&mut self, result: Option<Fetched>) {
        self.finished = true;
        self.flights.map.lock().remove(&self.key);
        *self.flight.done.lock() = Some(result);
        self.flight.cv.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(None);
        }
    }
}
