//! The owned values the clients hand back: [`ServerInfo`] (the HELLO reply), [`GetBlock`] (one
//! block of a GET), [`SubscriptionEvent`] (one frame of a subscription), and the
//! [`Ticket`] of a pipelined request.
//!
//! Block and event bytes are [`Bytes`] slices of the received frame: a GET reply is read into
//! one buffer and each block is a reference-counted window on it, never a copy.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use kvtier_events::{Dump, EventMessage, InstanceId, WireError, WireFormat};
use kvtier_proto::{EndReason, Limits, Opcode, SubscribeEvent, TierId};

use crate::reply::{Expect, ReplyValue};

/// What the server said about itself at HELLO (the owned form of
/// [`kvtier_proto::ServerInfo`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// The protocol version spoken on this connection (1).
    pub version: u16,
    /// The namespace's fixed block size in bytes; 0 when any size is accepted.
    pub block_bytes: u32,
    /// The server's frame limit.
    pub max_frame_bytes: u32,
    /// The server's per-request block/hash limit.
    pub max_blocks_per_request: u32,
    /// The server's event-stream instance id (the one subscription events carry).
    pub instance: InstanceId,
    /// Server name and version, e.g. `kvtier 0.1.0`.
    pub server: String,
}

impl ServerInfo {
    pub(crate) fn from_wire(info: &kvtier_proto::ServerInfo<'_>) -> Self {
        ServerInfo {
            version: info.version,
            block_bytes: info.block_bytes,
            max_frame_bytes: info.max_frame_bytes,
            max_blocks_per_request: info.max_blocks_per_request,
            instance: info.instance,
            server: info.server.to_string(),
        }
    }

    /// The limits requests are encoded under: `ours`, lowered to the server's frame and
    /// block limits (a request the server would refuse is refused before sending).
    pub fn send_limits(&self, ours: &Limits) -> Limits {
        Limits {
            max_frame_bytes: ours.max_frame_bytes.min(self.max_frame_bytes),
            max_blocks_per_request: ours.max_blocks_per_request.min(self.max_blocks_per_request),
            ..*ours
        }
    }
}

/// One block of a GET reply: its bytes and the tier they were read from.
#[derive(Clone, PartialEq, Eq)]
pub struct GetBlock {
    tier: TierId,
    bytes: Bytes,
}

impl GetBlock {
    pub(crate) fn new(tier: TierId, bytes: Bytes) -> Self {
        GetBlock { tier, bytes }
    }

    /// The tier the server read the block from.
    pub fn tier(&self) -> TierId {
        self.tier
    }

    /// The block's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The block's bytes as a [`Bytes`] handle (a window on the received frame; no copy).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl fmt::Debug for GetBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetBlock")
            .field("tier", &self.tier)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// One frame of a subscription's stream, owned (the owned form of
/// [`kvtier_proto::SubscribeEvent`]).
///
/// A stream is `Started`, then any number of `Event` and `Dump`, then `Ended`; after `Ended`
/// nothing more comes. Bodies are kvtier-events' encodings: [`decode_message`] and
/// [`decode_dump`] turn them into values.
///
/// [`decode_message`]: SubscriptionEvent::decode_message
/// [`decode_dump`]: SubscriptionEvent::decode_dump
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// The subscription is open; events after `last_event_id` follow.
    Started {
        /// The server's event instance.
        instance: InstanceId,
        /// The last event id published before the subscription started.
        last_event_id: u64,
    },
    /// One event message, encoded.
    Event {
        /// Encoding of `body`.
        format: WireFormat,
        /// An encoded [`EventMessage`].
        body: Bytes,
    },
    /// The full state (sent when the requested replay start is no longer buffered), encoded.
    Dump {
        /// Encoding of `body`.
        format: WireFormat,
        /// An encoded [`Dump`].
        body: Bytes,
    },
    /// The stream ended, and why.
    Ended(EndReason),
}

impl SubscriptionEvent {
    pub(crate) fn from_wire(event: &SubscribeEvent<'_>, payload: &Bytes) -> Self {
        match *event {
            SubscribeEvent::Started {
                instance,
                last_event_id,
            } => SubscriptionEvent::Started {
                instance,
                last_event_id,
            },
            SubscribeEvent::Event { format, body } => SubscriptionEvent::Event {
                format,
                body: sub_bytes(payload, body),
            },
            SubscribeEvent::Dump { format, body } => SubscriptionEvent::Dump {
                format,
                body: sub_bytes(payload, body),
            },
            SubscribeEvent::Ended(reason) => SubscriptionEvent::Ended(reason),
        }
    }

    /// Whether this is the stream's last frame.
    pub fn is_end(&self) -> bool {
        matches!(self, SubscriptionEvent::Ended(_))
    }

    /// The event message of an `Event` (`None` for other kinds).
    ///
    /// # Errors
    ///
    /// [`WireError`] when the body is not a valid message.
    pub fn decode_message(&self) -> Option<Result<EventMessage, WireError>> {
        match self {
            SubscriptionEvent::Event { format, body } => Some(EventMessage::decode(body, *format)),
            _ => None,
        }
    }

    /// The dump of a `Dump` (`None` for other kinds).
    ///
    /// # Errors
    ///
    /// [`WireError`] when the body is not a valid dump.
    pub fn decode_dump(&self) -> Option<Result<Dump, WireError>> {
        match self {
            SubscriptionEvent::Dump { format, body } => Some(Dump::decode(body, *format)),
            _ => None,
        }
    }
}

/// `sub` (borrowed from `frame` by a decoder) as a window on `frame`, without copying. Falls
/// back to a copy if `sub` is not inside `frame` (it always is; the fallback keeps this
/// panic-free whatever a decoder returns).
pub(crate) fn sub_bytes(frame: &Bytes, sub: &[u8]) -> Bytes {
    let base = frame.as_ptr() as usize;
    let start = (sub.as_ptr() as usize).wrapping_sub(base);
    match start.checked_add(sub.len()) {
        Some(end) if start <= frame.len() && end <= frame.len() => frame.slice(start..end),
        _ => Bytes::copy_from_slice(sub),
    }
}

/// A pipelined request that was sent and not yet answered; redeem it with
/// [`Client::wait`](crate::Client::wait) for its typed reply `T`.
///
/// A ticket belongs to the client that issued it. Dropping one without waiting leaves its
/// reply buffered when it comes; [`Client::discard`](crate::Client::discard) says the reply
/// is not wanted.
#[must_use = "a ticket's reply stays buffered until it is waited for or discarded"]
pub struct Ticket<T> {
    pub(crate) id: u64,
    pub(crate) expect: Expect,
    _reply: PhantomData<fn() -> T>,
}

impl<T: ReplyValue> Ticket<T> {
    pub(crate) fn new(id: u64, expect: Expect) -> Self {
        Ticket {
            id,
            expect,
            _reply: PhantomData,
        }
    }

    /// The request id the request was sent with (its reply carries it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The request's operation.
    pub fn opcode(&self) -> Opcode {
        self.expect.op
    }
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("op", &self.expect.op)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_bytes_shares_the_frame_and_copies_a_foreign_slice() {
        let frame = Bytes::from(vec![1u8, 2, 3, 4, 5]);
        let window = sub_bytes(&frame, &frame[1..4]);
        assert_eq!(&window[..], &[2, 3, 4]);
        assert_eq!(window.as_ptr(), frame[1..].as_ptr());
        let foreign = [9u8, 9];
        assert_eq!(&sub_bytes(&frame, &foreign)[..], &[9, 9]);
        assert!(sub_bytes(&frame, &[]).is_empty());
    }
}
