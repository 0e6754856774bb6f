//! `kvtier router --kvtier ADDR`: the router follows a kvtier server's block events over the
//! network, through the binary protocol's SUBSCRIBE (the transport `docs/events.md` left
//! open), so it knows which server holds which prefix.
//!
//! One task per server: connect, SUBSCRIBE from the event after the last one applied, hand
//! each event message to the router's ingestion queue and apply a dump (sent by the server
//! when the start is no longer in its replay buffer) under the router's lock. On a lost
//! connection it reconnects with backoff (100 ms doubling to 5 s) and resumes where it was.
//! A server that restarted is a new instance: the old instance is dropped from the router and
//! the new one is followed from its first event.

use std::sync::Arc;
use std::time::Duration;

use kvtier_client::{AsyncClient, ClientConfig, SubscriptionEvent};
use kvtier_events::{EventMessage, InstanceId, WireFormat};
use kvtier_router::Router;
use parking_lot::RwLock;
use tokio::sync::mpsc;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a followed server's stream stands.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    /// The instance followed, once known.
    instance: Option<InstanceId>,
    /// The last event id handed to the router.
    last: u64,
}

/// Why one subscription stopped.
enum Stop {
    /// The router's queue is closed: the service is stopping.
    Done,
    /// The server restarted: subscribe again from its first event, at once.
    Restarted,
    /// The connection or the stream failed: reconnect after a pause.
    Failed(String),
}

/// Follows the server at `addr` until the router's queue closes.
pub(crate) async fn follow(
    addr: String,
    events: mpsc::Sender<Arc<EventMessage>>,
    router: Arc<RwLock<Router>>,
) {
    let mut position = Position::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(&addr, &mut position, &events, &router).await {
            Stop::Done => return,
            Stop::Restarted => {
                eprintln!("kvtier router: {addr} restarted; following its new instance");
                backoff = Duration::from_millis(100);
            }
            Stop::Failed(why) => {
                eprintln!(
                    "kvtier router: lost {addr} ({why}); retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn follow_once(
    addr: &str,
    position: &mut Position,
    events: &mpsc::Sender<Arc<EventMessage>>,
    router: &Arc<RwLock<Router>>,
) -> Stop {
    let client = match AsyncClient::connect(addr, ClientConfig::new()).await {
        Ok(c) => c,
        Err(e) => return Stop::Failed(e.to_string()),
    };
    let from = position.last + 1;
    let mut subscription = match client.subscribe(from, WireFormat::Msgpack).await {
        Ok(s) => s,
        Err(e) => return Stop::Failed(e.to_string()),
    };
    while let Some(item) = subscription.next().await {
        let item = match item {
            Ok(item) => item,
            Err(e) => return Stop::Failed(e.to_string()),
        };
        match item {
            SubscriptionEvent::Started { instance, .. } => {
                if let Some(old) = position.instance
                    && old != instance
                {
                    router.write().remove_instance(old);
                    *position = Position {
                        instance: Some(instance),
                        last: 0,
                    };
                    if from > 1 {
                        return Stop::Restarted;
                    }
                }
                position.instance = Some(instance);
            }
            SubscriptionEvent::Dump { .. } => match item.decode_dump() {
                Some(Ok(dump)) => {
                    position.last = dump.event_id;
                    router.write().apply_dump(&dump);
                }
                Some(Err(e)) => return Stop::Failed(format!("undecodable dump: {e}")),
                None => {}
            },
            SubscriptionEvent::Event { .. } => match item.decode_message() {
                Some(Ok(message)) => {
                    position.last = message.event_id;
                    if events.send(Arc::new(message)).await.is_err() {
                        return Stop::Done;
                    }
                }
                Some(Err(e)) => return Stop::Failed(format!("undecodable event: {e}")),
                None => {}
            },
            SubscriptionEvent::Ended(reason) => {
                return Stop::Failed(format!("the server ended the stream: {reason:?}"));
            }
            _ => {}
        }
    }
    Stop::Failed("connection closed".into())
}
