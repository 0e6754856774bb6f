//! [`NodeService`]: the node's [`Service`] on the IO runtime. It tells the listeners apart
//! (binary protocol, RESP, HTTP) and hands each frame to that protocol's handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvtier_server::{
    ConnInfo, Context, FramingError, InPlace, ReplyBuf, Request, Response, Service,
};

use crate::binary::{Binary, BinarySession};
use crate::resp::{RespService, RespSession};
use crate::{http, metrics};

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Binary,
    Resp,
    Http,
}

/// Per-connection state, by protocol.
#[derive(Debug)]
pub(crate) enum Session {
    Binary(BinarySession),
    Resp(RespSession),
    Http,
}

/// The node's service.
pub(crate) struct NodeService {
    pub(crate) protocols: Vec<Protocol>,
    pub(crate) binary: Arc<Binary>,
    pub(crate) resp: RespService,
    pub(crate) healthy: AtomicBool,
    pub(crate) drain_timeout: Duration,
}

impl NodeService {
    fn protocol(&self, conn: &ConnInfo) -> Protocol {
        self.protocols
            .get(conn.listener)
            .copied()
            .unwrap_or(Protocol::Binary)
    }

    /// Every counter of the node, by name.
    pub(crate) fn stats(&self) -> Vec<(String, u64)> {
        let mut stats = self.binary.stats();
        stats.extend(self.resp.stats().named());
        stats
    }
}

impl Service for NodeService {
    type Session = Session;

    fn open(&self, conn: &ConnInfo) -> Session {
        match self.protocol(conn) {
            Protocol::Binary => Session::Binary(BinarySession::new(self.binary.token.is_some())),
            Protocol::Resp => Session::Resp(self.resp.open_session(conn)),
            Protocol::Http => Session::Http,
        }
    }

    fn handle(&self, ctx: Context<Session>, request: Request) {
        match self.protocol(ctx.conn()) {
            Protocol::Binary => self.binary.handle(ctx, request.frame()),
            Protocol::Resp => {
                let Session::Resp(session) = &**ctx.session() else {
                    return;
                };
                let outcome = self.resp.handle_frame(session, request.frame());
                if outcome.close {
                    ctx.reply_and_close(outcome.response);
                } else {
                    ctx.reply(outcome.response);
                }
            }
            Protocol::Http => {
                let healthy = self.healthy.load(Ordering::Relaxed);
                let (reply, close) =
                    http::respond(request.frame(), || metrics::render(&self.stats()), healthy);
                if close {
                    ctx.reply_and_close(reply);
                } else {
                    ctx.reply(reply);
                }
            }
        }
    }

    fn run_inline(&self, conn: &ConnInfo, frame: &[u8]) -> bool {
        match self.protocol(conn) {
            Protocol::Binary => Binary::run_inline(frame),
            // Host memory only, and replies must keep command order.
            Protocol::Resp => true,
            Protocol::Http => false,
        }
    }

    fn serve_in_place(
        &self,
        conn: &ConnInfo,
        session: &Session,
        frame: &[u8],
        out: &mut ReplyBuf<'_>,
    ) -> InPlace {
        match (self.protocol(conn), session) {
            (Protocol::Resp, Session::Resp(session)) => {
                self.resp.serve_in_place(session, frame, out)
            }
            _ => InPlace::Declined,
        }
    }

    fn malformed(&self, conn: &ConnInfo, error: &FramingError) -> Option<Response> {
        match self.protocol(conn) {
            Protocol::Binary => Some(self.binary.malformed(error)),
            Protocol::Resp => Some(self.resp.malformed(error)),
            Protocol::Http => Some(Response::from_vec(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
                    .to_vec(),
            )),
        }
    }

    fn drain(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        self.binary.subscriptions.stop();
        self.binary.lane.stop();
        if !self.binary.store.drain(self.drain_timeout) {
            tracing::warn!("shutdown: some blocks were not copied to disk before the deadline");
        }
    }
}
