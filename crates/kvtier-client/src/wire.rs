//! What both clients send: encoding a request into a [`WriteBuf`] (block bytes borrowed, so a
//! request goes out in one vectored write), the HELLO request, and the check of its reply.

use kvtier_proto::{Hello, Limits, Request, WriteBuf};

use crate::reply::Expect;
use crate::{ClientConfig, ClientError, ServerInfo};

/// The protocol version this client speaks.
pub(crate) const PROTOCOL_VERSION: u16 = 1;

/// Encodes `request` with id `id` under `limits`.
///
/// # Errors
///
/// [`ClientError::Request`] when the request breaks the limits (nothing is encoded).
pub(crate) fn encode<'a>(
    request: &Request<'a>,
    id: u64,
    limits: &Limits,
) -> Result<WriteBuf<'a>, ClientError> {
    let mut out = WriteBuf::new();
    request
        .encode(id, limits, &mut out)
        .map_err(ClientError::Request)?;
    Ok(out)
}

/// The HELLO request of `config`.
pub(crate) fn hello(config: &ClientConfig) -> Request<'_> {
    Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        namespace: config.namespace(),
        token: config.token(),
    })
}

/// What a HELLO reply must be.
pub(crate) const HELLO_EXPECT: Expect = Expect {
    op: kvtier_proto::Opcode::Hello,
    count: 0,
};

/// Checks the server's HELLO answer: it must speak a version this client speaks.
pub(crate) fn check_hello(info: ServerInfo) -> Result<ServerInfo, ClientError> {
    if info.version == 0 || info.version > PROTOCOL_VERSION {
        return Err(ClientError::bad_reply(format!(
            "the server answered HELLO with protocol version {}; this client speaks {}",
            info.version, PROTOCOL_VERSION
        )));
    }
    Ok(info)
}
