//! Requests (client to server): [`Request`] and its payloads, encoding into a [`WriteBuf`] and
//! decoding from a received frame.
//!
//! Payload layouts (all little-endian; byte-level tables in `docs/protocol.md`):
//!
//! ```text
//! HELLO       version u16 | ns_len u16 | namespace | [token_len u16 | token]   (flag HAS_TOKEN)
//! PUT         count u32 | count x (hash u128, len u32) | block bytes, in order  (flag DURABLE)
//! GET, MATCH, EXISTS, DELETE
//!             count u32 | count x hash u128
//! STATS       (empty)
//! SUBSCRIBE   from_event_id u64 | format u8
//! UNSUBSCRIBE subscription u64          (the SUBSCRIBE's request id)
//! PING        opaque bytes, echoed
//! ```

use kvtier_events::WireFormat;

use crate::cursor::{Cursor, check_count, put_bytes16};
use crate::frame;
use crate::header::flags;
use crate::types::{HASH_BYTES, PUT_ENTRY_BYTES};
use crate::{FrameHeader, HashList, Limits, Opcode, ProtoError, PutBlocks, WriteBuf};

/// HELLO: opens a session in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Highest protocol version the client speaks (1).
    pub version: u16,
    /// The tenant namespace (UTF-8, at most [`Limits::max_namespace_len`] bytes); blocks of
    /// one namespace are invisible to the others.
    pub namespace: &'a str,
    /// The auth token, when the client has one (flag `HELLO_HAS_TOKEN`).
    pub token: Option<&'a [u8]>,
}

/// SUBSCRIBE: follow the server's block-event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// First event id wanted: `0` for only what is published from now on; `n` to replay from
    /// id `n` (the server sends a dump first when `n` is older than its replay buffer).
    pub from_event_id: u64,
    /// Encoding of the event messages and dumps (kvtier-events' JSON or msgpack).
    pub format: WireFormat,
}

/// A request frame's content.
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
/// use kvtier_proto::{decode_request, HashList, Limits, Request, WriteBuf};
///
/// let hashes = [SequenceHash::root(1), SequenceHash::root(2)];
/// let mut out = WriteBuf::new();
/// Request::Match(HashList::new(&hashes)).encode(7, &Limits::default(), &mut out)?;
/// let bytes = out.to_vec();
/// let (header, request) = decode_request(&bytes, &Limits::default())?;
/// assert_eq!(header.request_id, 7);
/// assert_eq!(request, Request::Match(HashList::new(&hashes)));
/// # Ok::<(), kvtier_proto::ProtoError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// Open a session.
    Hello(Hello<'a>),
    /// Store blocks; `durable` asks for an acknowledgement only once they are on disk.
    Put {
        /// Flag `PUT_DURABLE`.
        durable: bool,
        /// The blocks.
        blocks: PutBlocks<'a>,
    },
    /// Fetch blocks.
    Get(HashList<'a>),
    /// Longest cached prefix of the list, with each block's tiers.
    Match(HashList<'a>),
    /// Which tiers hold each hash (does not touch recency).
    Exists(HashList<'a>),
    /// Remove blocks from every tier.
    Delete(HashList<'a>),
    /// Server counters.
    Stats,
    /// Follow the event stream; replies are SUBSCRIBE responses with this request's id until
    /// an `Ended` one.
    Subscribe(Subscribe),
    /// Stop the subscription opened by the SUBSCRIBE with request id `subscription`.
    Unsubscribe {
        /// The SUBSCRIBE's request id.
        subscription: u64,
    },
    /// Liveness check; the server echoes the bytes.
    Ping(&'a [u8]),
}

pub(crate) fn format_byte(format: WireFormat) -> Result<u8, ProtoError> {
    match format {
        WireFormat::Msgpack => Ok(0),
        WireFormat::Json => Ok(1),
        _ => Err(ProtoError::InvalidValue {
            what: "event format",
            value: u64::MAX,
        }),
    }
}

pub(crate) fn format_from_byte(b: u8) -> Result<WireFormat, ProtoError> {
    match b {
        0 => Ok(WireFormat::Msgpack),
        1 => Ok(WireFormat::Json),
        v => Err(ProtoError::InvalidValue {
            what: "event format",
            value: u64::from(v),
        }),
    }
}

impl<'a> Request<'a> {
    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::Hello,
            Request::Put { .. } => Opcode::Put,
            Request::Get(_) => Opcode::Get,
            Request::Match(_) => Opcode::Match,
            Request::Exists(_) => Opcode::Exists,
            Request::Delete(_) => Opcode::Delete,
            Request::Stats => Opcode::Stats,
            Request::Subscribe(_) => Opcode::Subscribe,
            Request::Unsubscribe { .. } => Opcode::Unsubscribe,
            Request::Ping(_) => Opcode::Ping,
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Request::Hello(h) if h.token.is_some() => flags::HELLO_HAS_TOKEN,
            Request::Put { durable: true, .. } => flags::PUT_DURABLE,
            _ => 0,
        }
    }

    /// Appends the request as one frame to `out`: metadata copied, block bytes borrowed.
    ///
    /// # Errors
    ///
    /// [`ProtoError::FrameTooLarge`], [`ProtoError::TooManyBlocks`],
    /// [`ProtoError::FieldTooLong`] when the request breaks `limits` (the receiver would
    /// refuse it); `out` is then unchanged.
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
        let header = FrameHeader::request(self.opcode(), self.flags(), request_id);
        frame::finish(out, start, &header, data_len, limits)?;
        match self {
            Request::Put { blocks, .. } => {
                for (_, bytes) in blocks.iter() {
                    out.push_borrowed(bytes);
                }
            }
            Request::Ping(bytes) => out.push_borrowed(bytes),
            _ => {}
        }
        Ok(())
    }

    /// Writes the metadata; returns the length of the borrowed data that follows it.
    fn write_meta(&self, m: &mut Vec<u8>, limits: &Limits) -> Result<usize, ProtoError> {
        match self {
            Request::Hello(h) => {
                m.extend_from_slice(&h.version.to_le_bytes());
                put_bytes16(
                    m,
                    h.namespace.as_bytes(),
                    "namespace",
                    limits.max_namespace_len,
                )?;
                if let Some(token) = h.token {
                    put_bytes16(m, token, "auth token", limits.max_token_len)?;
                }
                Ok(0)
            }
            Request::Put { blocks, .. } => {
                let count = check_count(blocks.len(), limits.max_blocks_per_request)?;
                m.extend_from_slice(&count.to_le_bytes());
                m.reserve(blocks.len() * PUT_ENTRY_BYTES);
                let mut total = 0usize;
                for (hash, bytes) in blocks.iter() {
                    let len =
                        u32::try_from(bytes.len()).map_err(|_| ProtoError::FrameTooLarge {
                            len: bytes.len() as u64,
                            max: limits.max_frame_bytes,
                        })?;
                    m.extend_from_slice(&hash.as_u128().to_le_bytes());
                    m.extend_from_slice(&len.to_le_bytes());
                    total = total.saturating_add(bytes.len());
                }
                Ok(total)
            }
            Request::Get(h) | Request::Match(h) | Request::Exists(h) | Request::Delete(h) => {
                let count = check_count(h.len(), limits.max_blocks_per_request)?;
                m.extend_from_slice(&count.to_le_bytes());
                h.write(m);
                Ok(0)
            }
            Request::Stats => Ok(0),
            Request::Subscribe(s) => {
                m.extend_from_slice(&s.from_event_id.to_le_bytes());
                m.push(format_byte(s.format)?);
                Ok(0)
            }
            Request::Unsubscribe { subscription } => {
                m.extend_from_slice(&subscription.to_le_bytes());
                Ok(0)
            }
            Request::Ping(bytes) => Ok(bytes.len()),
        }
    }

    /// Decodes a request payload whose header was already parsed (by a
    /// [`crate::FrameReader`] or [`FrameHeader::parse`]).
    ///
    /// # Errors
    ///
    /// [`ProtoError::UnknownOpcode`] for a response header; any payload error (truncated,
    /// counts that overrun, trailing bytes, limits, invalid values).
    pub fn decode(
        header: &FrameHeader,
        payload: &'a [u8],
        limits: &Limits,
    ) -> Result<Request<'a>, ProtoError> {
        if header.response {
            return Err(ProtoError::UnknownOpcode {
                opcode: header.opcode_byte(),
            });
        }
        let mut c = Cursor::new(payload);
        let request = match header.opcode {
            Opcode::Hello => {
                let version = c.u16("hello version")?;
                let ns = c.str16("namespace", limits.max_namespace_len)?;
                let token = if header.flags & flags::HELLO_HAS_TOKEN != 0 {
                    Some(c.bytes16("auth token", limits.max_token_len)?)
                } else {
                    None
                };
                Request::Hello(Hello {
                    version,
                    namespace: ns,
                    token,
                })
            }
            Opcode::Put => {
                let count = c.count("put block", PUT_ENTRY_BYTES, limits.max_blocks_per_request)?;
                let index = c.take(count * PUT_ENTRY_BYTES, "put index")?;
                let data = c.rest();
                let declared: u64 = index
                    .chunks_exact(PUT_ENTRY_BYTES)
                    .map(|e| {
                        let mut len = [0u8; 4];
                        len.copy_from_slice(e.get(HASH_BYTES..).unwrap_or(&[0; 4]));
                        u64::from(u32::from_le_bytes(len))
                    })
                    .sum();
                if declared != data.len() as u64 {
                    return Err(ProtoError::LengthMismatch {
                        what: "put block lengths against the data section",
                        declared,
                        actual: data.len() as u64,
                    });
                }
                Request::Put {
                    durable: header.flags & flags::PUT_DURABLE != 0,
                    blocks: PutBlocks::from_wire(index, data),
                }
            }
            Opcode::Get | Opcode::Match | Opcode::Exists | Opcode::Delete => {
                let count = c.count("hash", HASH_BYTES, limits.max_blocks_per_request)?;
                let list = HashList::from_wire(c.take(count * HASH_BYTES, "hash list")?);
                match header.opcode {
                    Opcode::Get => Request::Get(list),
                    Opcode::Match => Request::Match(list),
                    Opcode::Exists => Request::Exists(list),
                    _ => Request::Delete(list),
                }
            }
            Opcode::Stats => Request::Stats,
            Opcode::Subscribe => Request::Subscribe(Subscribe {
                from_event_id: c.u64("subscribe from_event_id")?,
                format: format_from_byte(c.u8("subscribe format")?)?,
            }),
            Opcode::Unsubscribe => Request::Unsubscribe {
                subscription: c.u64("unsubscribe id")?,
            },
            Opcode::Ping => Request::Ping(c.rest()),
            Opcode::Error => {
                return Err(ProtoError::UnknownOpcode {
                    opcode: header.opcode_byte(),
                });
            }
        };
        c.finish()?;
        Ok(request)
    }
}

/// Decodes one whole request frame (exactly `frame.len()` bytes).
///
/// # Errors
///
/// Any header or payload error; [`ProtoError::Truncated`] / [`ProtoError::TrailingBytes`]
/// when `frame` is not exactly the header's length.
pub fn decode_request<'a>(
    frame: &'a [u8],
    limits: &Limits,
) -> Result<(FrameHeader, Request<'a>), ProtoError> {
    let (header, payload) = frame::split_frame(frame, limits)?;
    Ok((header, Request::decode(&header, payload, limits)?))
}
