//! From a received frame to a typed reply: [`Frame`] (one whole frame, owned), [`Expect`]
//! (what the request it answers looked like) and the sealed [`ReplyValue`] trait that each
//! operation's output implements. Shared by the blocking and the async client, so both check
//! replies the same way.
//!
//! A reply is checked against its request: the opcode must be the request's (or ERROR, which
//! becomes [`ClientError::Server`]), and per-block counts must equal the request's (a MATCH
//! prefix may be shorter, never longer). A payload that does not decode is a
//! [`ClientError::BadReply`] for that request only: the frame was whole, so the stream is
//! still in step.

use bytes::Bytes;
use kvtier_core::SequenceHash;
use kvtier_proto::{BlockResult, FrameHeader, Limits, Opcode, PutStatus, Response, TierSet};

use crate::types::{GetBlock, ServerInfo, sub_bytes};
use crate::{ClientError, Ticket};

/// One whole received frame: its checked header and its payload.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) header: FrameHeader,
    pub(crate) payload: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Frame {
    /// The request id the frame answers.
    pub(crate) fn id(&self) -> u64 {
        self.header.request_id
    }

    /// Whether this is an ERROR frame with the FATAL flag.
    pub(crate) fn is_fatal_error(&self) -> bool {
        self.header.opcode == Opcode::Error
            && self.header.flags & kvtier_proto::flags::ERROR_FATAL != 0
    }

    /// Decodes the payload. An ERROR frame becomes [`ClientError::Server`].
    pub(crate) fn response(&self, limits: &Limits) -> Result<Response<'_>, ClientError> {
        let response = Response::decode(&self.header, &self.payload, limits).map_err(|e| {
            ClientError::bad_reply(format!("malformed {:?} reply: {e}", self.header.opcode))
        })?;
        match response {
            Response::Error(e) => Err(ClientError::Server {
                code: e.code,
                message: e.message.to_string(),
                fatal: e.fatal,
            }),
            other => Ok(other),
        }
    }

    /// The reason a fatal ERROR frame closes the connection with.
    pub(crate) fn fatal_reason(&self, limits: &Limits) -> String {
        match self.response(limits) {
            Err(e) => format!("the server sent a fatal error: {e}"),
            Ok(_) => "the server sent a fatal error".to_string(),
        }
    }
}

/// What a reply must look like: the request's opcode and its count (blocks, hashes, or PING
/// bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub(crate) op: Opcode,
    pub(crate) count: usize,
}

impl Expect {
    pub(crate) fn new(op: Opcode, count: usize) -> Self {
        Expect { op, count }
    }
}

mod sealed {
    use super::{ClientError, Expect, Response};
    use bytes::Bytes;

    /// The conversion behind [`super::ReplyValue`]; private, so the trait is sealed.
    pub trait Decode: Sized {
        /// Builds the value from a decoded, non-error reply of the expected opcode;
        /// `payload` is the frame's payload, which the reply borrows from.
        fn decode(
            response: Response<'_>,
            payload: &Bytes,
            expect: &Expect,
        ) -> Result<Self, ClientError>;
    }
}

/// The typed result of one kind of request, as [`Client::wait`](crate::Client::wait) returns
/// it for a [`Ticket`]. Implemented for the outputs of this crate's operations only (sealed).
pub trait ReplyValue: sealed::Decode {}

/// Decodes `frame` as the reply `expect` describes.
pub(crate) fn decode_reply<T: ReplyValue>(
    frame: &Frame,
    expect: &Expect,
    limits: &Limits,
) -> Result<T, ClientError> {
    let response = frame.response(limits)?;
    if response.opcode() != expect.op {
        return Err(ClientError::UnexpectedReply {
            expected: expect.op,
            got: response.opcode(),
        });
    }
    T::decode(response, &frame.payload, expect)
}

/// Decodes a ticket's reply frame.
pub(crate) fn redeem<T: ReplyValue>(
    frame: &Frame,
    ticket: &Ticket<T>,
    limits: &Limits,
) -> Result<T, ClientError> {
    decode_reply(frame, &ticket.expect, limits)
}

fn check_count(what: &str, got: usize, expect: &Expect) -> Result<(), ClientError> {
    if got == expect.count {
        Ok(())
    } else {
        Err(ClientError::bad_reply(format!(
            "{what} reply has {got} entries for a request of {}",
            expect.count
        )))
    }
}

fn wrong_kind() -> ClientError {
    // decode_reply checked the opcode; a Response of that opcode has one variant.
    ClientError::bad_reply("reply variant does not match its opcode")
}

impl sealed::Decode for ServerInfo {
    fn decode(response: Response<'_>, _: &Bytes, _: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Hello(info) => Ok(ServerInfo::from_wire(&info)),
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for ServerInfo {}

impl sealed::Decode for Vec<PutStatus> {
    fn decode(response: Response<'_>, _: &Bytes, expect: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Put(statuses) => {
                check_count("PUT", statuses.len(), expect)?;
                Ok(statuses)
            }
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Vec<PutStatus> {}

impl sealed::Decode for Vec<Option<GetBlock>> {
    fn decode(
        response: Response<'_>,
        payload: &Bytes,
        expect: &Expect,
    ) -> Result<Self, ClientError> {
        match response {
            Response::Get(blocks) => {
                check_count("GET", blocks.len(), expect)?;
                Ok(blocks
                    .iter()
                    .map(|r| match r {
                        BlockResult::Missing => None,
                        BlockResult::Found { tier, bytes } => {
                            Some(GetBlock::new(tier, sub_bytes(payload, bytes)))
                        }
                    })
                    .collect())
            }
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Vec<Option<GetBlock>> {}

/// MATCH (a prefix: at most the request's count) and EXISTS (exactly the count).
impl sealed::Decode for Vec<TierSet> {
    fn decode(response: Response<'_>, _: &Bytes, expect: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Match(tiers) if tiers.len() <= expect.count => Ok(tiers),
            Response::Match(tiers) => Err(ClientError::bad_reply(format!(
                "MATCH prefix of {} for a request of {} hashes",
                tiers.len(),
                expect.count
            ))),
            Response::Exists(tiers) => {
                check_count("EXISTS", tiers.len(), expect)?;
                Ok(tiers)
            }
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Vec<TierSet> {}

impl sealed::Decode for Vec<bool> {
    fn decode(response: Response<'_>, _: &Bytes, expect: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Delete(found) => {
                check_count("DELETE", found.len(), expect)?;
                Ok(found)
            }
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Vec<bool> {}

impl sealed::Decode for Vec<(String, u64)> {
    fn decode(response: Response<'_>, _: &Bytes, _: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Stats(stats) => Ok(stats
                .iter()
                .map(|s| (s.name.to_string(), s.value))
                .collect()),
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Vec<(String, u64)> {}

/// PING: the echoed bytes.
impl sealed::Decode for Bytes {
    fn decode(
        response: Response<'_>,
        payload: &Bytes,
        expect: &Expect,
    ) -> Result<Self, ClientError> {
        match response {
            Response::Pong(bytes) if bytes.len() == expect.count => Ok(sub_bytes(payload, bytes)),
            Response::Pong(bytes) => Err(ClientError::bad_reply(format!(
                "PING echoed {} bytes of {}",
                bytes.len(),
                expect.count
            ))),
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for Bytes {}

/// UNSUBSCRIBE: whether the subscription existed.
impl sealed::Decode for bool {
    fn decode(response: Response<'_>, _: &Bytes, _: &Expect) -> Result<Self, ClientError> {
        match response {
            Response::Unsubscribe { found } => Ok(found),
            _ => Err(wrong_kind()),
        }
    }
}
impl ReplyValue for bool {}

/// Splits `(hash, block)` pairs into the two slices [`kvtier_proto::PutBlocks`] takes (the
/// block bytes are borrowed, not copied).
pub(crate) fn split_blocks<'a>(
    blocks: &[(SequenceHash, &'a [u8])],
) -> (Vec<SequenceHash>, Vec<&'a [u8]>) {
    blocks.iter().map(|(h, b)| (*h, *b)).unzip()
}
