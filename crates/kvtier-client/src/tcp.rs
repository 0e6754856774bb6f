//! Socket options of a client connection.

use std::io;
use std::os::fd::AsFd;

use socket2::SockRef;

/// Turns off Nagle's delay on a connected socket and, when its peer is a loopback address and
/// `congestion` names an algorithm, sets its TCP congestion control to it (see
/// [`ClientConfig::with_loopback_congestion`](crate::ClientConfig::with_loopback_congestion)).
/// Benchmarks and other clients of kvtier's ports use it to get the same transport as
/// [`Client`](crate::Client).
///
/// # Errors
///
/// The system's, for example when the kernel does not offer the algorithm.
///
/// # Examples
///
/// ```
/// use std::net::{TcpListener, TcpStream};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let stream = TcpStream::connect(listener.local_addr()?)?;
/// kvtier_client::tune_connection(&stream, Some("reno"))?;
/// assert!(stream.nodelay()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tune_connection(socket: &impl AsFd, congestion: Option<&str>) -> io::Result<()> {
    let socket = SockRef::from(socket);
    socket.set_tcp_nodelay(true)?;
    let loopback = socket
        .peer_addr()?
        .as_socket()
        .is_some_and(|a| a.ip().is_loopback());
    match congestion {
        Some(name) if loopback => socket.set_tcp_congestion(name.as_bytes()),
        _ => Ok(()),
    }
}

/// Socket options of a new connection: [`tune_connection`](crate::tune_connection) with the
/// configured congestion control; one the kernel refuses is skipped (it only costs speed).
pub(crate) fn tune(
    stream: &impl std::os::fd::AsFd,
    config: &crate::ClientConfig,
) -> std::io::Result<()> {
    match crate::tune_connection(stream, config.loopback_congestion()) {
        Err(_) if config.loopback_congestion().is_some() => crate::tune_connection(stream, None),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn congestion(s: &TcpStream) -> String {
        let name = SockRef::from(s).tcp_congestion().unwrap();
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn a_loopback_connection_gets_the_named_algorithm_or_keeps_the_default() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let system = congestion(&stream);
        tune_connection(&stream, None).unwrap();
        assert_eq!(congestion(&stream), system);
        for name in ["reno", "cubic"] {
            tune_connection(&stream, Some(name)).unwrap();
            assert_eq!(congestion(&stream), name);
        }
        assert!(tune_connection(&stream, Some("no-such-algorithm")).is_err());
    }
}
