//! `/metrics` (Prometheus text) and `/health` over a small HTTP/1.1 subset, served by the same
//! IO threads as the block protocols (a third listener).
//!
//! A request is its head (request line and headers, up to [`MAX_HEAD_BYTES`]); a request with
//! a body is refused with `400` and the connection closes (its body would be read as the next
//! request). `GET /metrics`, `GET /health` (and `HEAD` of either) are served; other paths get
//! `404`, other methods `405`. Connections stay open unless the client asks otherwise (or
//! speaks HTTP/1.0).

use kvtier_server::{Framer, FramingError, Response};

/// Largest request head accepted (the listener's frame limit).
pub(crate) const MAX_HEAD_BYTES: usize = 16 << 10;

/// Cuts HTTP request heads: a frame ends at the first blank line.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpFramer;

impl Framer for HttpFramer {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FramingError> {
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => Ok(Some(i + 4)),
            None if buf.len() > MAX_HEAD_BYTES => Err(FramingError::TooLarge {
                len: buf.len() as u64,
                max: MAX_HEAD_BYTES,
            }),
            None => Ok(None),
        }
    }
}

/// The reply to one request head, and whether the connection closes after it.
pub(crate) fn respond(
    head: &[u8],
    metrics: impl FnOnce() -> String,
    healthy: bool,
) -> (Response, bool) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, path, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut close = version != "HTTP/1.1";
    let mut has_body = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "connection" => close |= value.eq_ignore_ascii_case("close"),
            "content-length" => has_body |= value != "0",
            "transfer-encoding" => has_body = true,
            _ => {}
        }
    }
    if !version.starts_with("HTTP/1.") {
        return (reply(400, "text/plain", "bad request line\n", false), true);
    }
    if has_body {
        return (
            reply(
                400,
                "text/plain",
                "request bodies are not accepted\n",
                false,
            ),
            true,
        );
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (
            reply(405, "text/plain", "only GET and HEAD\n", false),
            close,
        );
    }
    let path = path.split('?').next().unwrap_or_default();
    let response = match path {
        "/metrics" => reply(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics(),
            head_only,
        ),
        "/health" if healthy => reply(200, "text/plain", "ok\n", head_only),
        "/health" => reply(503, "text/plain", "shutting down\n", head_only),
        _ => reply(
            404,
            "text/plain",
            "not found (try /metrics or /health)\n",
            head_only,
        ),
    };
    (response, close)
}

fn reply(status: u16, content_type: &str, body: &str, head_only: bool) -> Response {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    Response::from_vec(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response) -> String {
        // The response has one owned segment.
        format!("{r:?}")
    }

    #[test]
    fn framer_cuts_heads_and_refuses_endless_ones() {
        let f = HttpFramer;
        assert_eq!(f.frame_len(b"GET / HTTP/1.1\r\n").unwrap(), None);
        assert_eq!(f.frame_len(b"GET / HTTP/1.1\r\n\r\nGET").unwrap(), Some(18));
        assert!(f.frame_len(&vec![b'a'; MAX_HEAD_BYTES + 1]).is_err());
    }

    #[test]
    fn routes_statuses_and_connection_handling() {
        let m = || "kvtier_up 1\n".to_string();
        let (r, close) = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", m, true);
        assert!(!close);
        assert!(text(&r).contains("Owned"));
        assert_eq!(r.len(), "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: 12\r\n\r\nkvtier_up 1\n".len());
        let (_, close) = respond(b"GET /health HTTP/1.0\r\n\r\n", m, true);
        assert!(close, "HTTP/1.0 closes");
        let (_, close) = respond(
            b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
            m,
            true,
        );
        assert!(close);
        let (r, close) = respond(
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            m,
            true,
        );
        assert!(close, "a body would desynchronise the stream");
        assert!(!r.is_empty());
        let (r, _) = respond(b"GET /nope HTTP/1.1\r\n\r\n", m, true);
        assert!(!r.is_empty());
        let (_, close) = respond(b"\x00\x01garbage\r\n\r\n", m, true);
        assert!(close);
    }
}
