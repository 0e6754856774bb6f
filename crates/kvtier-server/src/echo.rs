//! [`Echo`], the reference [`Service`]: every frame goes back unchanged, its request buffer
//! sent as a guarded segment (no copy). The seam's in-memory implementation, for tests,
//! benchmarks (the runtime's own ceiling) and as the smallest example of a service.

use crate::service::{ConnInfo, Context, Request, Response, Service};

/// Replies to every frame with the frame itself.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use kvtier_server::{BinaryFramer, Echo, ServerBuilder};
///
/// let server = ServerBuilder::new(Echo)
///     .listen("127.0.0.1:0".parse()?, BinaryFramer::new())
///     .start()?;
/// let mut frame = vec![0u8; 24];
/// frame[..4].copy_from_slice(&24u32.to_le_bytes());
/// frame[4] = 1; // version
/// let mut stream = std::net::TcpStream::connect(server.local_addrs()[0])?;
/// stream.write_all(&frame)?;
/// let mut back = vec![0u8; 24];
/// stream.read_exact(&mut back)?;
/// assert_eq!(back, frame);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    type Session = ();

    fn open(&self, _conn: &ConnInfo) {}

    fn handle(&self, ctx: Context<()>, request: Request) {
        ctx.reply(Response::new().guarded(request.into_frame()));
    }
}
