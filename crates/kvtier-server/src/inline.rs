//! The short way back for requests run on the IO thread
//! ([`Service::run_inline`](crate::Service::run_inline)): a completion made while the IO
//! thread is still inside `handle` for that very request is handed straight back to the
//! connection, instead of a trip through the inbox, an eventfd wake-up and another loop turn.
//!
//! # Invariants
//!
//! - The slot is armed only by the IO thread, for one `(connection, seq)`, around one inline
//!   `handle` call, and disarmed right after it ([`take`]).
//! - [`offer`] keeps a completion only on the thread that armed the slot and only for the
//!   request it was armed for; every other completion (a context moved to another thread, or
//!   replied to later) goes through the inbox as before. So each request still completes
//!   exactly once.

use std::cell::RefCell;

use crate::service::{ConnId, Response};

/// A completion taken on the short way: the response, whether to close, the request's bytes.
pub(crate) type Done = (Option<Response>, bool, usize);

#[derive(Default)]
struct Slot {
    armed: Option<(ConnId, u64)>,
    done: Option<Done>,
}

thread_local! {
    static SLOT: RefCell<Slot> = RefCell::new(Slot::default());
}

/// Arms the slot for request `seq` of `conn` (the IO thread, before an inline `handle`).
pub(crate) fn arm(conn: ConnId, seq: u64) {
    SLOT.with(|s| {
        let mut s = s.borrow_mut();
        s.armed = Some((conn, seq));
        s.done = None;
    });
}

/// Disarms the slot and returns the completion it caught, if the request completed inside
/// `handle`.
pub(crate) fn take() -> Option<Done> {
    SLOT.with(|s| {
        let mut s = s.borrow_mut();
        s.armed = None;
        s.done.take()
    })
}

/// Keeps the completion of request `seq` of `conn` if the slot on this thread is armed for
/// it; otherwise hands it back for the inbox.
pub(crate) fn offer(conn: ConnId, seq: u64, done: Done) -> Result<(), Done> {
    SLOT.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return Err(done);
        };
        if s.armed != Some((conn, seq)) || s.done.is_some() {
            return Err(done);
        }
        s.armed = None;
        s.done = Some(done);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_armed_request_on_this_thread_is_caught() {
        let (conn, other) = (ConnId(1), ConnId(2));
        assert!(offer(conn, 0, (None, false, 1)).is_err(), "not armed");
        arm(conn, 5);
        assert!(offer(other, 5, (None, false, 1)).is_err());
        assert!(offer(conn, 4, (None, false, 1)).is_err());
        let elsewhere = std::thread::spawn(move || offer(conn, 5, (None, false, 1)).is_err());
        assert!(
            elsewhere.join().unwrap(),
            "another thread's completion goes by the inbox"
        );
        assert!(offer(conn, 5, (None, true, 7)).is_ok());
        assert!(offer(conn, 5, (None, true, 7)).is_err(), "caught once");
        let (response, close, bytes) = take().unwrap();
        assert!(response.is_none() && close && bytes == 7);
        assert!(take().is_none());
    }
}
