//! kvtier-client: clients for kvtier's binary protocol (`docs/protocol.md`), blocking and
//! async (tokio), both pipelining.
//!
//! This crate owns the client side of a connection: connecting and the HELLO exchange
//! (namespace, auth token, the server's limits), request ids, writing requests with
//! vectored writes (block bytes go out from the caller's slices, never copied into a send
//! buffer), reading replies (a GET reply is read into one buffer and its blocks handed out
//! as [`bytes::Bytes`] windows on it), matching replies to requests by id when the server
//! answers out of order, and subscription streams. The bytes themselves are
//! [`kvtier_proto`]'s; this crate holds no codec of its own.
//!
//! | type | role |
//! |---|---|
//! | [`Client`] | blocking; `put`/`get`/... or `send_*` + [`Client::wait`] to pipeline; subscriptions |
//! | [`AsyncClient`] | tokio; clone it, call it from many tasks: their requests share one connection |
//! | [`ClientConfig`] | namespace, token, limits, timeouts |
//! | [`ClientError`] | what failed, and whether the connection survived it |
//! | [`ServerInfo`], [`GetBlock`], [`SubscriptionEvent`] | owned replies |
//! | [`Ticket`], [`ReplyValue`], [`SubscriptionId`], [`Events`], [`Subscription`] | pipelining and streams |
//!
//! Request and reply values that the protocol defines ([`kvtier_proto::PutStatus`],
//! [`kvtier_proto::TierSet`], [`kvtier_proto::TierId`], [`kvtier_proto::ErrorCode`],
//! [`kvtier_proto::EndReason`]) are used from `kvtier_proto` as they are.
//!
//! A request over the limits the server announced at HELLO is refused before it is sent
//! ([`ClientError::Request`]); the caller splits large batches. The `async` feature (on by
//! default) brings [`AsyncClient`] and tokio; without it the crate needs no runtime.
//!
//! # Example
//!
//! A blocking session, then an async one, against a small scripted server built from
//! `kvtier_proto` (hidden here; the integration tests use a fuller one).
//!
//! ```
//! # use std::io::Write;
//! # use std::net::{TcpListener, TcpStream};
//! # use kvtier_proto::*;
//! # fn find(stored: &[(kvtier_core::SequenceHash, Vec<u8>)], h: kvtier_core::SequenceHash) -> Option<&[u8]> {
//! #     stored.iter().find(|(k, _)| *k == h).map(|(_, b)| b.as_slice())
//! # }
//! # fn serve(mut sock: TcpStream) -> std::io::Result<()> {
//! #     let limits = Limits::default();
//! #     let mut reader = FrameReader::new(limits);
//! #     let mut stored: Vec<(kvtier_core::SequenceHash, Vec<u8>)> = Vec::new();
//! #     loop {
//! #         while let Some(frame) = reader.next_frame().map_err(std::io::Error::other)? {
//! #             let id = frame.header.request_id;
//! #             let request = frame.request(&limits).map_err(std::io::Error::other)?;
//! #             let mut out = WriteBuf::new();
//! #             let reply = match request {
//! #                 Request::Hello(_) => Response::Hello(ServerInfo {
//! #                     version: 1, block_bytes: 0, max_frame_bytes: limits.max_frame_bytes,
//! #                     max_blocks_per_request: limits.max_blocks_per_request,
//! #                     instance: kvtier_events::InstanceId(7), server: "scripted",
//! #                 }),
//! #                 Request::Put { blocks, .. } => {
//! #                     let n = blocks.len();
//! #                     stored.extend(blocks.iter().map(|(h, b)| (h, b.to_vec())));
//! #                     Response::Put(vec![PutStatus::Stored; n])
//! #                 }
//! #                 Request::Match(hashes) => Response::Match(
//! #                     hashes.iter().take_while(|h| find(&stored, *h).is_some()).map(|_| TierSet::EMPTY.with(TierId::G2)).collect()),
//! #                 Request::Get(hashes) => {
//! #                     let results: Vec<BlockResult> = hashes.iter().map(|h| match find(&stored, h) {
//! #                         Some(bytes) => BlockResult::Found { tier: TierId::G2, bytes },
//! #                         None => BlockResult::Missing,
//! #                     }).collect();
//! #                     Response::Get(GetBlocks::new(&results)).encode(id, &limits, &mut out).map_err(std::io::Error::other)?;
//! #                     sock.write_all(&out.to_vec())?;
//! #                     continue;
//! #                 }
//! #                 Request::Ping(bytes) => Response::Pong(bytes),
//! #                 _ => Response::Error(ErrorFrame { code: ErrorCode::Internal, fatal: false, message: "not scripted" }),
//! #             };
//! #             reply.encode(id, &limits, &mut out).map_err(std::io::Error::other)?;
//! #             sock.write_all(&out.to_vec())?;
//! #         }
//! #         if reader.read_from(&mut sock)? == 0 { return Ok(()); }
//! #     }
//! # }
//! # let listener = TcpListener::bind("127.0.0.1:0")?;
//! # let addr = listener.local_addr()?;
//! # std::thread::spawn(move || for sock in listener.incoming().flatten() {
//! #     std::thread::spawn(move || serve(sock));
//! # });
//! use kvtier_client::{Client, ClientConfig};
//! use kvtier_core::SequenceHash;
//! use kvtier_proto::{PutStatus, TierId};
//!
//! let config = ClientConfig::new().with_namespace("demo");
//! let mut client = Client::connect(addr, config.clone())?;
//! assert_eq!(client.server().server, "scripted");
//!
//! let a = SequenceHash::root(1);
//! let b = SequenceHash::child_of(a, 2);
//! let block = vec![42u8; 4096];
//! let statuses = client.put(&[(a, &block), (b, &block)], false)?;
//! assert_eq!(statuses, [PutStatus::Stored; 2]);
//!
//! // Pipelined: three requests on the wire before any reply is read; replies are matched
//! // to their tickets by request id, whatever order they come in.
//! let get = client.send_get(&[a, SequenceHash::root(9)])?;
//! let prefix = client.send_match(&[a, b, SequenceHash::root(9)])?;
//! let pong = client.send_ping(b"hello")?;
//! assert_eq!(client.wait(&prefix)?.len(), 2); // a and b are cached, root(9) is not
//! let blocks = client.wait(&get)?;
//! assert_eq!(blocks[0].as_ref().map(|b| (b.tier(), b.bytes())), Some((TierId::G2, &block[..])));
//! assert!(blocks[1].is_none()); // a miss, not an error
//! assert_eq!(&client.wait(&pong)?[..], b"hello");
//!
//! // The async client: clones share one connection; concurrent calls pipeline on it.
//! # #[cfg(feature = "async")] {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let client = kvtier_client::AsyncClient::connect(addr, config).await?;
//!     // (This scripted server keeps blocks per connection.)
//!     client.put(&[(a, &block), (b, &block)], false).await?;
//!     let other = client.clone();
//!     let (one, two) = ([a], [a, b]);
//!     let (found, prefix) = tokio::join!(other.get(&one), client.match_prefix(&two));
//!     assert_eq!(found?[0].as_ref().map(|b| b.bytes().len()), Some(4096));
//!     assert_eq!(prefix?.len(), 2);
//!     Ok::<_, kvtier_client::ClientError>(())
//! })?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

#[cfg(feature = "async")]
mod async_client;
mod blocking;
mod config;
mod error;
mod recv;
mod reply;
mod tcp;
mod types;
mod wire;

#[cfg(feature = "async")]
pub use async_client::{AsyncClient, Subscription};
pub use blocking::{Client, Events, SubscriptionId};
pub use config::ClientConfig;
pub use error::ClientError;
pub use reply::ReplyValue;
pub use tcp::tune_connection;
pub use types::{GetBlock, ServerInfo, SubscriptionEvent, Ticket};
