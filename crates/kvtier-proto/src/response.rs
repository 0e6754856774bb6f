//! Responses (server to client): [`Response`] and its payloads, encoding into a [`WriteBuf`]
//! and decoding from a received frame.
//!
//! Payload layouts (all little-endian; byte-level tables in `docs/protocol.md`):
//!
//! ```text
//! HELLO       version u16 | block_bytes u32 | max_frame_bytes u32 | max_blocks u32
//!             | instance u128 | server_len u16 | server (UTF-8)
//! PUT         count u32 | count x status u8
//! GET         count u32 | count x (tier u8 [0 = missing], len u32) | found blocks' bytes
//! MATCH       prefix_len u32 | prefix_len x tier set u8 (never 0)
//! EXISTS      count u32 | count x tier set u8 (0 = absent)
//! DELETE      count u32 | count x u8 (0 = was absent, 1 = deleted)
//! STATS       count u32 | count x (name_len u16 | name | value u64)
//! SUBSCRIBE   kind u8 | 0 Started: instance u128 | last_event_id u64
//!                     | 1 Event:   format u8 | encoded EventMessage
//!                     | 2 Dump:    format u8 | encoded Dump
//!                     | 3 Ended:   reason u8
//! UNSUBSCRIBE found u8 (0 | 1)
//! PING        the request's bytes
//! ERROR       code u16 | msg_len u16 | message (UTF-8)          (flag FATAL)
//! ```

use kvtier_events::{Dump, EventMessage, InstanceId, WireError, WireFormat};

use crate::cursor::{Cursor, check_count, put_bytes16};
use crate::frame;
use crate::header::flags;
use crate::request::{format_byte, format_from_byte};
use crate::types::GET_ENTRY_BYTES;
use crate::{
    BlockResult, ErrorCode, FrameHeader, GetBlocks, Limits, Opcode, ProtoError, PutStatus, TierId,
    TierSet, WriteBuf,
};

/// HELLO reply: what the server is and what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerInfo<'a> {
    /// The protocol version the server will speak on this connection (1).
    pub version: u16,
    /// The namespace's fixed block size in bytes; 0 when any size is accepted.
    pub block_bytes: u32,
    /// The server's [`Limits::max_frame_bytes`].
    pub max_frame_bytes: u32,
    /// The server's [`Limits::max_blocks_per_request`].
    pub max_blocks_per_request: u32,
    /// The server's event-stream instance id (what SUBSCRIBE messages carry).
    pub instance: InstanceId,
    /// Server name and version, e.g. `kvtier 0.1.0`.
    pub server: &'a str,
}

/// One counter of a STATS reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat<'a> {
    /// Counter name (Prometheus-style, e.g. `g2_blocks_used`).
    pub name: &'a str,
    /// Its value.
    pub value: u64,
}

/// Why a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// 0: the client sent UNSUBSCRIBE.
    Unsubscribed,
    /// 1: the server's event publisher shut down.
    PublisherShutdown,
    /// 2: the server is closing.
    ServerClosing,
}

impl EndReason {
    fn to_u8(self) -> u8 {
        match self {
            EndReason::Unsubscribed => 0,
            EndReason::PublisherShutdown => 1,
            EndReason::ServerClosing => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, ProtoError> {
        match v {
            0 => Ok(EndReason::Unsubscribed),
            1 => Ok(EndReason::PublisherShutdown),
            2 => Ok(EndReason::ServerClosing),
            v => Err(ProtoError::InvalidValue {
                what: "subscription end reason",
                value: u64::from(v),
            }),
        }
    }
}

/// One frame of a subscription's stream (all carry the SUBSCRIBE's request id).
///
/// Event and dump bodies are kvtier-events' own encodings ([`EventMessage::encode`],
/// [`Dump::encode`]), borrowed here; [`SubscribeEvent::decode_message`] and
/// [`SubscribeEvent::decode_dump`] turn them back into values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeEvent<'a> {
    /// The subscription is open; events after `last_event_id` follow.
    Started {
        /// The server's event instance.
        instance: InstanceId,
        /// The last id published before the subscription started.
        last_event_id: u64,
    },
    /// One event message.
    Event {
        /// Encoding of `body`.
        format: WireFormat,
        /// The encoded [`EventMessage`].
        body: &'a [u8],
    },
    /// The full state, sent when the requested replay start is no longer buffered; events
    /// after the dump's `event_id` follow.
    Dump {
        /// Encoding of `body`.
        format: WireFormat,
        /// The encoded [`Dump`].
        body: &'a [u8],
    },
    /// The stream ended; no more frames with this request id.
    Ended(EndReason),
}

impl SubscribeEvent<'_> {
    /// The event message of an `Event` frame (`None` for other kinds).
    ///
    /// # Errors
    ///
    /// [`WireError`] when the body is not a valid message.
    pub fn decode_message(&self) -> Option<Result<EventMessage, WireError>> {
        match self {
            SubscribeEvent::Event { format, body } => Some(EventMessage::decode(body, *format)),
            _ => None,
        }
    }

    /// The dump of a `Dump` frame (`None` for other kinds).
    ///
    /// # Errors
    ///
    /// [`WireError`] when the body is not a valid dump.
    pub fn decode_dump(&self) -> Option<Result<Dump, WireError>> {
        match self {
            SubscribeEvent::Dump { format, body } => Some(Dump::decode(body, *format)),
            _ => None,
        }
    }
}

/// The ERROR frame's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// What went wrong.
    pub code: ErrorCode,
    /// Whether the server closes the connection after this frame (flag `ERROR_FATAL`).
    pub fatal: bool,
    /// Human-readable detail (UTF-8, at most [`Limits::max_text_len`] bytes).
    pub message: &'a str,
}

/// A response frame's content.
///
/// # Examples
///
/// ```
/// use kvtier_proto::{decode_response, BlockResult, GetBlocks, Limits, Response, TierId, WriteBuf};
///
/// let block = vec![9u8; 1024];
/// let results = [BlockResult::Found { tier: TierId::G2, bytes: &block }, BlockResult::Missing];
/// let mut out = WriteBuf::new();
/// Response::Get(GetBlocks::new(&results)).encode(3, &Limits::default(), &mut out)?;
/// let bytes = out.to_vec();
/// let (header, response) = decode_response(&bytes, &Limits::default())?;
/// assert_eq!(header.request_id, 3);
/// let Response::Get(blocks) = response else { unreachable!() };
/// assert_eq!(blocks.iter().collect::<Vec<_>>(), results);
/// # Ok::<(), kvtier_proto::ProtoError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response<'a> {
    /// Reply to HELLO.
    Hello(ServerInfo<'a>),
    /// Per block of the PUT, in order.
    Put(Vec<PutStatus>),
    /// Per hash of the GET, in order.
    Get(GetBlocks<'a>),
    /// The tiers of each block of the longest cached prefix (its length is the match length).
    Match(Vec<TierSet>),
    /// Per hash of the EXISTS, the tiers holding it (empty = absent).
    Exists(Vec<TierSet>),
    /// Per hash of the DELETE, whether it was there.
    Delete(Vec<bool>),
    /// Server counters.
    Stats(Vec<Stat<'a>>),
    /// One frame of a subscription.
    Subscribe(SubscribeEvent<'a>),
    /// Reply to UNSUBSCRIBE: whether the subscription existed.
    Unsubscribe {
        /// Whether it existed.
        found: bool,
    },
    /// Reply to PING, with its bytes.
    Pong(&'a [u8]),
    /// An error for the request with this id (or for the connection, request id 0).
    Error(ErrorFrame<'a>),
}

impl<'a> Response<'a> {
    /// The response's opcode (its request's; [`Opcode::Error`] for errors).
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Hello(_) => Opcode::Hello,
            Response::Put(_) => Opcode::Put,
            Response::Get(_) => Opcode::Get,
            Response::Match(_) => Opcode::Match,
            Response::Exists(_) => Opcode::Exists,
            Response::Delete(_) => Opcode::Delete,
            Response::Stats(_) => Opcode::Stats,
            Response::Subscribe(_) => Opcode::Subscribe,
            Response::Unsubscribe { .. } => Opcode::Unsubscribe,
            Response::Pong(_) => Opcode::Ping,
            Response::Error(_) => Opcode::Error,
        }
    }

    /// Appends the response as one frame to `out`: metadata copied, block bytes (GET),
    /// event bodies and PING bytes borrowed.
    ///
    /// # Errors
    ///
    /// [`ProtoError::FrameTooLarge`], [`ProtoError::TooManyBlocks`],
    /// [`ProtoError::FieldTooLong`] when the response breaks `limits`; `out` is then
    /// unchanged.
    pub fn encode(
        &self,
        request_id: u64,
        limits: &Limits,
        out: &mut WriteBuf<'a>,
    ) -> Result<(), ProtoError> {
        let start = frame::begin(out);
        let data_len = match self.write_meta(out.meta_mut(), limits) {
            Ok(n) => n,
            Err(e) => {
                frame::abort(out, start);
                return Err(e);
            }
        };
        let fl = match self {
            Response::Error(e) if e.fatal => flags::ERROR_FATAL,
            _ => 0,
        };
        let header = FrameHeader::response(self.opcode(), fl, request_id);
        frame::finish(out, start, &header, data_len, limits)?;
        match self {
            Response::Get(blocks) => {
                for r in blocks.iter() {
                    if let BlockResult::Found { bytes, .. } = r {
                        out.push_borrowed(bytes);
                    }
                }
            }
            Response::Subscribe(
                SubscribeEvent::Event { body, .. } | SubscribeEvent::Dump { body, .. },
            ) => out.push_borrowed(body),
            Response::Pong(bytes) => out.push_borrowed(bytes),
            _ => {}
        }
        Ok(())
    }

    fn write_meta(&self, m: &mut Vec<u8>, limits: &Limits) -> Result<usize, ProtoError> {
        let max = limits.max_blocks_per_request;
        match self {
            Response::Hello(info) => {
                m.extend_from_slice(&info.version.to_le_bytes());
                m.extend_from_slice(&info.block_bytes.to_le_bytes());
                m.extend_from_slice(&info.max_frame_bytes.to_le_bytes());
                m.extend_from_slice(&info.max_blocks_per_request.to_le_bytes());
                m.extend_from_slice(&info.instance.0.to_le_bytes());
                put_bytes16(
                    m,
                    info.server.as_bytes(),
                    "server name",
                    limits.max_text_len,
                )?;
                Ok(0)
            }
            Response::Put(statuses) => {
                m.extend_from_slice(&check_count(statuses.len(), max)?.to_le_bytes());
                m.extend(statuses.iter().map(|s| s.to_u8()));
                Ok(0)
            }
            Response::Get(blocks) => {
                m.extend_from_slice(&check_count(blocks.len(), max)?.to_le_bytes());
                let mut total = 0usize;
                for r in blocks.iter() {
                    let (tier, len) = match r {
                        BlockResult::Missing => (0, 0),
                        BlockResult::Found { tier, bytes } => (tier.to_u8(), bytes.len()),
                    };
                    let len32 = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
                        len: len as u64,
                        max: limits.max_frame_bytes,
                    })?;
                    m.push(tier);
                    m.extend_from_slice(&len32.to_le_bytes());
                    total = total.saturating_add(len);
                }
                Ok(total)
            }
            Response::Match(tiers) => {
                if let Some(pos) = tiers.iter().position(|t| t.is_empty()) {
                    return Err(ProtoError::InvalidValue {
                        what: "empty tier set in a match prefix at index",
                        value: pos as u64,
                    });
                }
                m.extend_from_slice(&check_count(tiers.len(), max)?.to_le_bytes());
                m.extend(tiers.iter().map(|t| t.bits()));
                Ok(0)
            }
            Response::Exists(tiers) => {
                m.extend_from_slice(&check_count(tiers.len(), max)?.to_le_bytes());
                m.extend(tiers.iter().map(|t| t.bits()));
                Ok(0)
            }
            Response::Delete(found) => {
                m.extend_from_slice(&check_count(found.len(), max)?.to_le_bytes());
                m.extend(found.iter().map(|f| u8::from(*f)));
                Ok(0)
            }
            Response::Stats(stats) => {
                let count = check_count(stats.len(), limits.max_stats_entries)?;
                m.extend_from_slice(&count.to_le_bytes());
                for s in stats {
                    put_bytes16(m, s.name.as_bytes(), "stat name", limits.max_text_len)?;
                    m.extend_from_slice(&s.value.to_le_bytes());
                }
                Ok(0)
            }
            Response::Subscribe(ev) => match ev {
                SubscribeEvent::Started {
                    instance,
                    last_event_id,
                } => {
                    m.push(0);
                    m.extend_from_slice(&instance.0.to_le_bytes());
                    m.extend_from_slice(&last_event_id.to_le_bytes());
                    Ok(0)
                }
                SubscribeEvent::Event { format, body } => {
                    m.push(1);
                    m.push(format_byte(*format)?);
                    Ok(body.len())
                }
                SubscribeEvent::Dump { format, body } => {
                    m.push(2);
                    m.push(format_byte(*format)?);
                    Ok(body.len())
                }
                SubscribeEvent::Ended(reason) => {
                    m.push(3);
                    m.push(reason.to_u8());
                    Ok(0)
                }
            },
            Response::Unsubscribe { found } => {
                m.push(u8::from(*found));
                Ok(0)
            }
            Response::Pong(bytes) => Ok(bytes.len()),
            Response::Error(e) => {
                m.extend_from_slice(&e.code.to_u16().to_le_bytes());
                put_bytes16(
                    m,
                    e.message.as_bytes(),
                    "error message",
                    limits.max_text_len,
                )?;
                Ok(0)
            }
        }
    }

    /// Decodes a response payload whose header was already parsed.
    ///
    /// # Errors
    ///
    /// [`ProtoError::UnknownOpcode`] for a request header; any payload error.
    pub fn decode(
        header: &FrameHeader,
        payload: &'a [u8],
        limits: &Limits,
    ) -> Result<Response<'a>, ProtoError> {
        if !header.response {
            return Err(ProtoError::UnknownOpcode {
                opcode: header.opcode_byte(),
            });
        }
        let max = limits.max_blocks_per_request;
        let mut c = Cursor::new(payload);
        let response = match header.opcode {
            Opcode::Hello => Response::Hello(ServerInfo {
                version: c.u16("hello version")?,
                block_bytes: c.u32("block_bytes")?,
                max_frame_bytes: c.u32("max_frame_bytes")?,
                max_blocks_per_request: c.u32("max_blocks_per_request")?,
                instance: InstanceId(c.u128("instance id")?),
                server: c.str16("server name", limits.max_text_len)?,
            }),
            Opcode::Put => {
                let count = c.count("put status", 1, max)?;
                let bytes = c.take(count, "put statuses")?;
                let statuses = bytes
                    .iter()
                    .map(|b| {
                        PutStatus::from_u8(*b).ok_or(ProtoError::InvalidValue {
                            what: "put status",
                            value: u64::from(*b),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Response::Put(statuses)
            }
            Opcode::Get => {
                let count = c.count("get entry", GET_ENTRY_BYTES, max)?;
                let index = c.take(count * GET_ENTRY_BYTES, "get index")?;
                let data = c.rest();
                let mut declared = 0u64;
                for e in index.chunks_exact(GET_ENTRY_BYTES) {
                    let mut len = [0u8; 4];
                    len.copy_from_slice(e.get(1..).unwrap_or(&[0; 4]));
                    let len = u32::from_le_bytes(len);
                    let tier = e.first().copied().unwrap_or(0);
                    if tier != 0 && TierId::from_u8(tier).is_none() {
                        return Err(ProtoError::InvalidValue {
                            what: "get entry tier",
                            value: u64::from(tier),
                        });
                    }
                    if tier == 0 && len != 0 {
                        return Err(ProtoError::InvalidValue {
                            what: "length of a missing get entry",
                            value: u64::from(len),
                        });
                    }
                    declared += u64::from(len);
                }
                if declared != data.len() as u64 {
                    return Err(ProtoError::LengthMismatch {
                        what: "get block lengths against the data section",
                        declared,
                        actual: data.len() as u64,
                    });
                }
                Response::Get(GetBlocks::from_wire(index, data))
            }
            Opcode::Match | Opcode::Exists => {
                let count = c.count("tier set", 1, max)?;
                let bytes = c.take(count, "tier sets")?;
                let sets = bytes
                    .iter()
                    .map(|b| match TierSet::from_bits(*b) {
                        Some(s) if !(s.is_empty() && header.opcode == Opcode::Match) => Ok(s),
                        _ => Err(ProtoError::InvalidValue {
                            what: "tier set",
                            value: u64::from(*b),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if header.opcode == Opcode::Match {
                    Response::Match(sets)
                } else {
                    Response::Exists(sets)
                }
            }
            Opcode::Delete => {
                let count = c.count("delete result", 1, max)?;
                let bytes = c.take(count, "delete results")?;
                Response::Delete(
                    bytes
                        .iter()
                        .map(|b| bool_byte(*b, "delete result"))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            Opcode::Stats => {
                let count = c.count("stat", 2 + 8, limits.max_stats_entries)?;
                let mut stats = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = c.str16("stat name", limits.max_text_len)?;
                    let value = c.u64("stat value")?;
                    stats.push(Stat { name, value });
                }
                Response::Stats(stats)
            }
            Opcode::Subscribe => Response::Subscribe(match c.u8("subscribe kind")? {
                0 => SubscribeEvent::Started {
                    instance: InstanceId(c.u128("instance id")?),
                    last_event_id: c.u64("last event id")?,
                },
                1 => SubscribeEvent::Event {
                    format: format_from_byte(c.u8("event format")?)?,
                    body: c.rest(),
                },
                2 => SubscribeEvent::Dump {
                    format: format_from_byte(c.u8("dump format")?)?,
                    body: c.rest(),
                },
                3 => SubscribeEvent::Ended(EndReason::from_u8(c.u8("end reason")?)?),
                v => {
                    return Err(ProtoError::InvalidValue {
                        what: "subscribe kind",
                        value: u64::from(v),
                    });
                }
            }),
            Opcode::Unsubscribe => Response::Unsubscribe {
                found: bool_byte(c.u8("unsubscribe found")?, "unsubscribe found")?,
            },
            Opcode::Ping => Response::Pong(c.rest()),
            Opcode::Error => Response::Error(ErrorFrame {
                code: ErrorCode::from_u16(c.u16("error code")?),
                fatal: header.flags & flags::ERROR_FATAL != 0,
                message: c.str16("error message", limits.max_text_len)?,
            }),
        };
        c.finish()?;
        Ok(response)
    }
}

/// Appends an ERROR frame, cutting `message` (at a character boundary) to what the limits
/// allow, so that a long or generated message never makes the error itself unsendable.
///
/// # Errors
///
/// [`ProtoError::FrameTooLarge`] only when `limits.max_frame_bytes` is below 20 (no ERROR
/// frame fits).
///
/// # Examples
///
/// ```
/// use kvtier_proto::{decode_response, encode_error, ErrorCode, Limits, ProtoError, Response, WriteBuf};
///
/// let limits = Limits::default();
/// let err = ProtoError::UnsupportedVersion { version: 9 };
/// let mut out = WriteBuf::new();
/// encode_error(&mut out, 0, err.code(), true, &err.to_string(), &limits)?;
/// let bytes = out.to_vec();
/// let (_, Response::Error(frame)) = decode_response(&bytes, &limits)? else { unreachable!() };
/// assert_eq!(frame.code, ErrorCode::UnsupportedVersion);
/// assert!(frame.fatal);
/// # Ok::<(), ProtoError>(())
/// ```
pub fn encode_error(
    out: &mut WriteBuf<'_>,
    request_id: u64,
    code: ErrorCode,
    fatal: bool,
    message: &str,
    limits: &Limits,
) -> Result<(), ProtoError> {
    let room = (limits.max_frame_bytes as usize).saturating_sub(crate::HEADER_LEN + 4);
    let mut end = message
        .len()
        .min(limits.max_text_len)
        .min(usize::from(u16::MAX))
        .min(room);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let frame = Response::Error(ErrorFrame {
        code,
        fatal,
        message: message.get(..end).unwrap_or_default(),
    });
    // The message is copied into the metadata: the frame borrows nothing from `out`'s 'a.
    let start = frame::begin(out);
    let result = frame.write_meta(out.meta_mut(), limits);
    if let Err(e) = result {
        frame::abort(out, start);
        return Err(e);
    }
    let fl = if fatal { flags::ERROR_FATAL } else { 0 };
    frame::finish(
        out,
        start,
        &FrameHeader::response(Opcode::Error, fl, request_id),
        0,
        limits,
    )
}

fn bool_byte(b: u8, what: &'static str) -> Result<bool, ProtoError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ProtoError::InvalidValue {
            what,
            value: u64::from(v),
        }),
    }
}

/// Decodes one whole response frame (exactly `frame.len()` bytes).
///
/// # Errors
///
/// Any header or payload error; [`ProtoError::Truncated`] / [`ProtoError::TrailingBytes`]
/// when `frame` is not exactly the header's length.
pub fn decode_response<'a>(
    frame: &'a [u8],
    limits: &Limits,
) -> Result<(FrameHeader, Response<'a>), ProtoError> {
    let (header, payload) = frame::split_frame(frame, limits)?;
    Ok((header, Response::decode(&header, payload, limits)?))
}
