//! SUBSCRIBE: the node's G2 block-event stream, sent on a binary connection as SUBSCRIBE
//! frames until the client says UNSUBSCRIBE, the connection closes or the node stops.
//!
//! Each subscription is one thread (at most [`MAX_SUBSCRIPTIONS`] per node) holding a
//! [`ReplyStream`] and a cursor into the publisher's replay ring:
//!
//! ```text
//! Started{instance, last_event_id} ─► [replayed events | Dump] ─► Event, Event, ... ─► Ended
//! ```
//!
//! - `from_event_id = 0`: events published from now on. `n > 0`: the events from `n` on,
//!   replayed from the ring, or a Dump of the whole G2 set when `n` is older than the ring.
//! - A connection that reads slowly is not buffered for: the frame waits (the publisher's ring
//!   keeps the messages); a subscriber that falls behind the ring gets a Dump and continues.
//! - A subscription holds one in-flight request of its connection until it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kvtier_events::{RecvError, ReplaySource, Subscriber, WireFormat};
use kvtier_proto::{EndReason, ErrorCode, Response, Subscribe, SubscribeEvent};
use kvtier_server::{ConnId, Context, ReplyStream, StreamError};
use parking_lot::Mutex;

use crate::binary::Binary;
use crate::service::Session;

/// Most open subscriptions per node.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;

/// The open subscriptions: (connection, SUBSCRIBE request id) → stop flag.
#[derive(Default)]
pub(crate) struct Subscriptions {
    open: Mutex<HashMap<(ConnId, u64), Arc<AtomicBool>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl Subscriptions {
    /// Asks the subscription `id` of `conn` to end; whether it was open.
    pub(crate) fn unsubscribe(&self, conn: ConnId, id: u64) -> bool {
        match self.open.lock().get(&(conn, id)) {
            Some(flag) => {
                flag.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Ends every subscription and joins their threads (graceful shutdown).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for flag in self.open.lock().values() {
            flag.store(true, Ordering::Relaxed);
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// Opens a subscription for the SUBSCRIBE `id` on `ctx`'s connection.
pub(crate) fn subscribe(binary: &Arc<Binary>, ctx: Context<Session>, id: u64, request: Subscribe) {
    let subs = &binary.subscriptions;
    let key = (ctx.conn().id, id);
    let flag = Arc::new(AtomicBool::new(false));
    {
        let mut open = subs.open.lock();
        if subs.stopping.load(Ordering::Relaxed)
            || open.len() >= MAX_SUBSCRIPTIONS
            || open.contains_key(&key)
        {
            drop(open);
            ctx.reply(binary.error_frame(
                id,
                ErrorCode::SubscribeFailed,
                false,
                "too many subscriptions, a duplicate id, or shutting down",
            ));
            return;
        }
        open.insert(key, Arc::clone(&flag));
    }
    let stream = match ctx.into_stream() {
        Ok(stream) => stream,
        Err(refused) => {
            subs.open.lock().remove(&key);
            refused.into_context().reply(binary.error_frame(
                id,
                ErrorCode::SubscribeFailed,
                false,
                "this port cannot stream",
            ));
            return;
        }
    };
    let this = Arc::clone(binary);
    let spawned = std::thread::Builder::new()
        .name("kvtier-subscription".into())
        .spawn(move || {
            let reason = run(&this, &stream, id, request, &flag);
            this.subscriptions.open.lock().remove(&key);
            let end = reason.and_then(|r| {
                this.encode(id, &Response::Subscribe(SubscribeEvent::Ended(r)))
                    .ok()
            });
            stream.end(end);
        });
    match spawned {
        Ok(handle) => {
            let mut threads = subs.threads.lock();
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
        Err(_) => {
            subs.open.lock().remove(&key);
        }
    }
}

/// Streams until told to stop; returns the reason to send in `Ended` (none when the
/// connection is gone).
fn run(
    binary: &Binary,
    stream: &ReplyStream<Session>,
    id: u64,
    request: Subscribe,
    stop: &AtomicBool,
) -> Option<EndReason> {
    let publisher = binary.store.publisher();
    let format = request.format;
    let mut sub = publisher.subscribe();
    let now = sub.next_event_id().saturating_sub(1);
    let from = request.from_event_id;
    let start = if from == 0 || from > now {
        now
    } else {
        from - 1
    };
    let started = SubscribeEvent::Started {
        instance: publisher.instance(),
        last_event_id: start,
    };
    send(binary, stream, id, &Response::Subscribe(started), stop)?;
    if from != 0 && from <= now {
        match publisher.replay(from..=now) {
            Ok(messages) => {
                for m in messages {
                    let body = m.encode(format).ok()?;
                    send_event(binary, stream, id, format, &body, false, stop)?;
                }
            }
            Err(_) => send_dump(binary, stream, id, format, &mut sub, stop)?,
        }
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return Some(EndReason::Unsubscribed);
        }
        if stream.is_closed() {
            return None;
        }
        match sub.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => {
                let body = m.encode(format).ok()?;
                send_event(binary, stream, id, format, &body, false, stop)?;
            }
            Err(RecvError::Empty) => {}
            Err(RecvError::Lagged { .. }) => send_dump(binary, stream, id, format, &mut sub, stop)?,
            Err(_) => return Some(EndReason::PublisherShutdown),
        }
    }
}

/// A dump of the whole set; the subscriber then continues after the dump's id.
fn send_dump(
    binary: &Binary,
    stream: &ReplyStream<Session>,
    id: u64,
    format: WireFormat,
    sub: &mut Subscriber,
    stop: &AtomicBool,
) -> Option<()> {
    let publisher = binary.store.publisher();
    *sub = publisher.subscribe();
    let dump = publisher.dump().ok()?;
    let body = dump.encode(format).ok()?;
    send_event(binary, stream, id, format, &body, true, stop)
}

fn send_event(
    binary: &Binary,
    stream: &ReplyStream<Session>,
    id: u64,
    format: WireFormat,
    body: &[u8],
    dump: bool,
    stop: &AtomicBool,
) -> Option<()> {
    let event = if dump {
        SubscribeEvent::Dump { format, body }
    } else {
        SubscribeEvent::Event { format, body }
    };
    send(binary, stream, id, &Response::Subscribe(event), stop)
}

/// Sends one frame, waiting while the connection is congested; `None` once it is closed (or
/// the subscription was told to stop while waiting).
fn send(
    binary: &Binary,
    stream: &ReplyStream<Session>,
    id: u64,
    response: &Response<'_>,
    stop: &AtomicBool,
) -> Option<()> {
    let mut frame = binary.encode(id, response).ok()?;
    loop {
        match stream.try_send(frame) {
            Ok(()) => return Some(()),
            Err(StreamError::Congested { response, .. }) => {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                frame = response;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return None,
        }
    }
}
