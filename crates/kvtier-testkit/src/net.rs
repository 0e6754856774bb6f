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

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range:
/// for a server that a test restarts on the same port while clients keep reconnecting (a
/// connect to a closed port of the ephemeral range may take that port as its own source).
///
/// # Panics
///
/// If no such port can be bound.
pub fn free_port_below_ephemeral() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let start = (std::process::id() as u16).wrapping_mul(7919) % span;
    (0..span)
        .map(|i| 10_000 + (start + i) % span)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// Whether something listens on `addr` now. A connect to a closed port of the ephemeral range
/// can reach itself (the kernel may pick that very port as the source): such a connection
/// does not count.
pub fn accepts(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
        .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}
