//! Local network fixtures.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before the caller binds it: a caller that hands it to a
/// child process retries with a new one when the child fails to bind (as
/// [`VllmPublisher`](crate::vllm::VllmPublisher) does).
///
/// # Panics
///
/// If no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
