//! The client side of vLLM's replay protocol: fetch buffered batches from a publisher's ROUTER.
//!
//! The server (`ZmqEventPublisher._service_replay` in vLLM's and SGLang's `kv_events.py`) reads
//! a request `[client_id, b"", start_seq]`, answers every buffered batch with `seq >= start` as
//! `[client_id, b"", seq (8-byte BE), payload]`, and ends with `seq = -1` (signed) and an empty
//! payload. A ROUTER adds `client_id` itself, so a DEALER client sends `[b"", start]` and
//! receives `[b"", seq, payload]` (a REQ socket would add and strip the empty delimiter, but
//! accepts only one reply per request, so it cannot read a multi-batch answer).
//!
//! ```text
//! DEALER ──[ "", BE64(start) ]──────────────────▶ ROUTER
//!        ◀──[ "", BE64(seq), payload ]  × n ───── (buffered seq >= start, ascending)
//!        ◀──[ "", BE64(-1), "" ] ──────────────── end
//! ```
//!
//! Each fetch uses a fresh DEALER in its own task, bounded by a deadline: the `zeromq` crate
//! panics (`todo!`) in `recv` when a DEALER's peer goes away, and a panic there must cost one
//! replay, not the source.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

/// What a fetch brought back.
#[derive(Debug, Default)]
pub(crate) struct ReplayOutcome {
    /// `(seq, payload)` in the order received.
    pub(crate) batches: Vec<(u64, Vec<u8>)>,
    /// Whether the end marker arrived (false: deadline, size cap, or a broken connection).
    pub(crate) complete: bool,
}

/// Asks the replay endpoint for every buffered batch with `seq >= start`.
///
/// Never fails: a connection that cannot be made, a malformed reply or a panic inside the
/// `zeromq` crate give an incomplete (possibly empty) outcome.
pub(crate) async fn fetch(
    endpoint: String,
    start: u64,
    deadline: Duration,
    max_batches: usize,
) -> ReplayOutcome {
    let deadline = Instant::now() + deadline;
    let task = tokio::spawn(fetch_inner(endpoint, start, deadline, max_batches));
    task.await.unwrap_or_default()
}

async fn fetch_inner(
    endpoint: String,
    start: u64,
    deadline: Instant,
    max_batches: usize,
) -> ReplayOutcome {
    let mut out = ReplayOutcome::default();
    let mut socket = DealerSocket::new();
    if !matches!(
        timeout_at(deadline, socket.connect(&endpoint)).await,
        Ok(Ok(()))
    ) {
        return out;
    }
    let mut request = ZmqMessage::from(Vec::new());
    request.push_back(start.to_be_bytes().to_vec().into());
    if !matches!(timeout_at(deadline, socket.send(request)).await, Ok(Ok(()))) {
        return out;
    }
    while out.batches.len() < max_batches {
        let Ok(Ok(reply)) = timeout_at(deadline, socket.recv()).await else {
            return out;
        };
        let mut frames: Vec<&[u8]> = reply.iter().map(|f| &f[..]).collect();
        // The empty delimiter the server sends for REQ clients.
        if frames.len() == 3 && frames[0].is_empty() {
            frames.remove(0);
        }
        let [seq, payload] = frames[..] else {
            return out;
        };
        let Ok(seq) = <[u8; 8]>::try_from(seq).map(i64::from_be_bytes) else {
            return out;
        };
        match u64::try_from(seq) {
            Ok(seq) => out.batches.push((seq, payload.to_vec())),
            Err(_) => {
                // -1 is the end marker; any other negative number is a broken reply.
                out.complete = seq == -1;
                return out;
            }
        }
    }
    out
}
