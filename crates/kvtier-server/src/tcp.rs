//! Socket options the server sets on every accepted connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use socket2::SockRef;

/// Turns off Nagle's delay and, when `peer` is a loopback address and `congestion` names an
/// algorithm, sets the connection's TCP congestion control to it.
///
/// Loopback has no bottleneck to probe; a pacing algorithm (`bbr`) there only adds a timer per
/// burst of sends (see
/// [`ServerBuilder::with_loopback_congestion`](crate::ServerBuilder::with_loopback_congestion)).
pub(crate) fn tune_accepted(
    socket: &impl AsFd,
    peer: SocketAddr,
    congestion: Option<&str>,
) -> io::Result<()> {
    let socket = SockRef::from(socket);
    socket.set_tcp_nodelay(true)?;
    match congestion {
        Some(name) if peer.ip().is_loopback() => socket.set_tcp_congestion(name.as_bytes()),
        _ => Ok(()),
    }
}

/// Whether the kernel offers congestion control `name`: tried on a throwaway loopback
/// connection, so a configuration can be refused at start instead of being ignored on every
/// accepted socket.
///
/// # Errors
///
/// The kernel's refusal, with the algorithms it offers in the message.
///
/// # Examples
///
/// ```
/// assert!(kvtier_server::check_loopback_congestion("reno").is_ok());
/// assert!(kvtier_server::check_loopback_congestion("no_such_algorithm").is_err());
/// ```
pub fn check_loopback_congestion(name: &str) -> io::Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let probe = std::net::TcpStream::connect(listener.local_addr()?)?;
    let peer = probe.peer_addr()?;
    tune_accepted(&probe, peer, Some(name)).map_err(|e| {
        let offered =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                .unwrap_or_default();
        io::Error::new(
            e.kind(),
            format!(
                "the kernel does not offer congestion control {name:?} ({e}); it offers: {}",
                offered.trim()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn accepted() -> (TcpStream, SocketAddr, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, peer) = l.accept().unwrap();
        (server, peer, client)
    }

    fn congestion(s: &TcpStream) -> String {
        let name = SockRef::from(s).tcp_congestion().unwrap();
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn a_loopback_peer_gets_the_named_congestion_control() {
        for name in ["reno", "cubic"] {
            let (server, peer, _client) = accepted();
            tune_accepted(&server, peer, Some(name)).unwrap();
            assert_eq!(congestion(&server), name);
            assert!(SockRef::from(&server).tcp_nodelay().unwrap());
        }
    }

    #[test]
    fn none_or_a_remote_peer_keeps_the_system_default() {
        let (server, peer, _client) = accepted();
        let before = congestion(&server);
        tune_accepted(&server, peer, None).unwrap();
        assert_eq!(congestion(&server), before);
        let remote: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        tune_accepted(&server, remote, Some("reno")).unwrap();
        assert_eq!(congestion(&server), before);
    }

    #[test]
    fn an_unknown_algorithm_is_an_error() {
        let (server, peer, _client) = accepted();
        assert!(tune_accepted(&server, peer, Some("no-such-algorithm")).is_err());
    }
}
