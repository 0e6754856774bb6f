//! A minimal HTTP/1.1 client over a std [`TcpStream`], so that tests need no client library.
//!
//! One request per connection (`Connection: close`): the response is read to EOF, so neither
//! keep-alive nor `Content-Length` matters, and a chunked body is de-chunked. Enough for the
//! router's JSON and text endpoints; not a general client (no redirects, no TLS, UTF-8 only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a response may take to arrive in full.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `method path` with `body` (as `application/json`) and returns the status code and
/// the body (de-chunked).
///
/// # Panics
///
/// If the connection, the write or the read fails, or the response is not HTTP/1.x in UTF-8.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // One write: the server sees the whole request at once.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

/// `GET path`: [`request`] with an empty body.
///
/// # Panics
///
/// As [`request`].
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, "")
}

/// `POST path` with a JSON `body`: [`request`].
///
/// # Panics
///
/// As [`request`].
pub fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, body)
}

/// The data of a chunked body (chunk extensions ignored, trailers dropped).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").expect("a chunk size line");
        let len = len.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(len, 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunk_joins_chunks_and_ignores_extensions() {
        assert_eq!(
            dechunk("3\r\nab\n\r\nA;x=1\r\n0123456789\r\n0\r\n\r\n"),
            "ab\n0123456789"
        );
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
