//! kvtier-proto: the bytes kvtier's server and clients exchange. A pure codec: no sockets, no
//! runtime; the server's IO layer and the clients call it on their buffers.
//!
//! It owns two protocols:
//!
//! - **The binary protocol** (`docs/protocol.md`): little-endian, length-prefixed, versioned
//!   frames with a request id, many in flight per connection, answered in any order. A frame
//!   is a 16-byte [`FrameHeader`] and a payload; [`Request`] and [`Response`] are the
//!   operations (HELLO, PUT, GET, MATCH, EXISTS, DELETE, STATS, SUBSCRIBE, UNSUBSCRIBE, PING,
//!   and the ERROR frame with its [`ErrorCode`]). Block bytes are never copied: encoders
//!   write headers and indexes into a [`WriteBuf`] and borrow the blocks, ready for
//!   `writev`; decoders return views ([`PutBlocks`], [`GetBlocks`], [`HashList`]) that borrow
//!   from the received frame. Decoding never panics and checks every count against [`Limits`]
//!   and against the bytes present before allocating.
//! - **RESP2** ([`resp`]): the Redis-compatible port's command parser (multibulk and inline,
//!   incremental, limited), reply encoder (bulk payloads borrowed) and SCAN's glob matcher.
//!
//! | type | role |
//! |---|---|
//! | [`FrameHeader`], [`Opcode`], [`frame_len`] | the fixed 16-byte header |
//! | [`Request`], [`Response`] | message content; `encode` into a [`WriteBuf`], `decode` from a payload |
//! | [`decode_request`], [`decode_response`] | one whole frame at once |
//! | [`FrameReader`] | whole frames out of a growing receive buffer |
//! | [`ProtoError`], [`ErrorCode`], [`encode_error`], [`peek_request_id`] | what is wrong, its stable wire code, and the ERROR frame that reports it |
//!
//! Sequence hashes travel as their full 128 bits ([`kvtier_core::SequenceHash::as_u128`]),
//! so position and lineage survive the trip; event bodies are kvtier-events' own encodings.
//!
//! # Example
//!
//! A client puts two blocks; the server decodes the frame without copying them and answers.
//!
//! ```
//! use kvtier_core::SequenceHash;
//! use kvtier_proto::{
//!     FrameReader, Limits, PutBlocks, PutStatus, Request, Response, WriteBuf,
//! };
//!
//! let limits = Limits::default();
//! let hashes = [SequenceHash::root(1), SequenceHash::child_of(SequenceHash::root(1), 2)];
//! let (a, b) = (vec![1u8; 4096], vec![2u8; 4096]);
//! let blocks = [a.as_slice(), b.as_slice()];
//!
//! // Client: metadata in one buffer, the two blocks borrowed (3 iovecs for writev).
//! let mut out = WriteBuf::new();
//! let put = Request::Put { durable: false, blocks: PutBlocks::new(&hashes, &blocks)? };
//! put.encode(42, &limits, &mut out)?;
//! assert_eq!(out.segment_count(), 3);
//! let wire = out.to_vec();
//!
//! // Server: frames out of the receive buffer; the blocks borrow from it.
//! let mut reader = FrameReader::new(limits);
//! reader.extend_from_slice(&wire);
//! let frame = reader.next_frame()?.expect("whole frame");
//! let Request::Put { blocks, .. } = frame.request(&limits)? else { panic!("not a put") };
//! let received: Vec<_> = blocks.iter().collect();
//! assert_eq!(received[1], (hashes[1], b.as_slice()));
//!
//! // Server answers with the request id; the client decodes the reply.
//! let mut reply = WriteBuf::new();
//! Response::Put(vec![PutStatus::Stored; 2]).encode(frame.header.request_id, &limits, &mut reply)?;
//! let bytes = reply.to_vec();
//! let (header, response) = kvtier_proto::decode_response(&bytes, &limits)?;
//! assert_eq!(header.request_id, 42);
//! assert_eq!(response, Response::Put(vec![PutStatus::Stored; 2]));
//! # Ok::<(), kvtier_proto::ProtoError>(())
//! ```

mod cursor;
mod error;
mod frame;
mod header;
mod limits;
mod reader;
mod request;
pub mod resp;
mod response;
mod segments;
mod types;

pub use error::{ErrorCode, ProtoError};
pub use frame::split_frame;
pub use header::{FrameHeader, HEADER_LEN, Opcode, VERSION, flags, frame_len, peek_request_id};
pub use limits::Limits;
pub use reader::{FrameReader, RawFrame};
pub use request::{Hello, Request, Subscribe, decode_request};
pub use response::{
    EndReason, ErrorFrame, Response, ServerInfo, Stat, SubscribeEvent, decode_response,
    encode_error,
};
pub use segments::WriteBuf;
pub use types::{
    BlockResult, GET_ENTRY_BYTES, GetBlocks, HASH_BYTES, HashIter, HashList, PUT_ENTRY_BYTES,
    PutBlocks, PutStatus, TierId, TierSet,
};
