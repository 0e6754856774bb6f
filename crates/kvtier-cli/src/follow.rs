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
//!
//! Each followed server's progress is on the router's `/metrics` as
//! `kvtier_router_kvtier_*{server="HOST:PORT"}` ([`FollowersCollector`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use kvtier_client::{AsyncClient, ClientConfig, SubscriptionEvent};
use kvtier_events::{EventMessage, InstanceId, WireFormat};
use kvtier_router::Router;
use parking_lot::RwLock;
use tokio::sync::mpsc;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one follower did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct FollowStats {
    /// Subscriptions that started (the first and every reconnection).
    subscribed: AtomicU64,
    /// Connections or streams that failed (each followed by a retry).
    failures: AtomicU64,
    /// Times the server was found restarted (a new instance).
    restarts: AtomicU64,
    /// Event messages handed to the router.
    events: AtomicU64,
    /// Dumps applied.
    dumps: AtomicU64,
    /// The last event id handed to the router (gauge).
    last_event_id: AtomicU64,
    /// 1 while subscribed (gauge).
    connected: AtomicU64,
}

impl FollowStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (metric suffix, help, value, is a counter).
    fn samples(&self) -> [(&'static str, &'static str, u64, bool); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "subscriptions",
                "SUBSCRIBEs that started (first and reconnections)",
                get(&self.subscribed),
                true,
            ),
            (
                "failures",
                "lost connections or streams (each retried)",
                get(&self.failures),
                true,
            ),
            (
                "restarts",
                "times the server was found restarted (a new instance)",
                get(&self.restarts),
                true,
            ),
            (
                "events",
                "event messages handed to the router",
                get(&self.events),
                true,
            ),
            (
                "dumps",
                "dumps applied (the start was past the server's replay buffer)",
                get(&self.dumps),
                true,
            ),
            (
                "last_event_id",
                "the last event id handed to the router",
                get(&self.last_event_id),
                false,
            ),
            (
                "connected",
                "1 while subscribed",
                get(&self.connected),
                false,
            ),
        ]
    }
}

/// Exports every follower's [`FollowStats`] as `kvtier_router_kvtier_<name>{server="<addr>"}`.
pub(crate) struct FollowersCollector {
    pub(crate) followers: Vec<(String, Arc<FollowStats>)>,
}

impl fmt::Debug for FollowersCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowersCollector")
            .field("followers", &self.followers.len())
            .finish()
    }
}

impl Collector for FollowersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some((_, first)) = self.followers.first() else {
            return Ok(());
        };
        for (i, (suffix, help, _, counter)) in first.samples().into_iter().enumerate() {
            let name = format!("kvtier_router_kvtier_{suffix}");
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = encoder.encode_descriptor(&name, help, None, kind)?;
            for (server, stats) in &self.followers {
                let (_, _, value, _) = stats.samples()[i];
                let labels = [("server", server.as_str())];
                let sample = family.encode_family(&labels)?;
                if counter {
                    ConstCounter::new(value).encode(sample)?;
                } else {
                    ConstGauge::new(value as i64).encode(sample)?;
                }
            }
        }
        Ok(())
    }
}

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
    stats: Arc<FollowStats>,
) {
    let mut position = Position::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        let stop = follow_once(&addr, &mut position, &events, &router, &stats).await;
        stats.connected.store(0, Ordering::Relaxed);
        match stop {
            Stop::Done => return,
            Stop::Restarted => {
                FollowStats::bump(&stats.restarts);
                eprintln!("kvtier router: {addr} restarted; following its new instance");
                backoff = Duration::from_millis(100);
            }
            Stop::Failed(why) => {
                FollowStats::bump(&stats.failures);
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
    stats: &FollowStats,
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
    FollowStats::bump(&stats.subscribed);
    stats.connected.store(1, Ordering::Relaxed);
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
                    FollowStats::bump(&stats.dumps);
                    stats.last_event_id.store(dump.event_id, Ordering::Relaxed);
                }
                Some(Err(e)) => return Stop::Failed(format!("undecodable dump: {e}")),
                None => {}
            },
            SubscriptionEvent::Event { .. } => match item.decode_message() {
                Some(Ok(message)) => {
                    position.last = message.event_id;
                    let id = message.event_id;
                    if events.send(Arc::new(message)).await.is_err() {
                        return Stop::Done;
                    }
                    FollowStats::bump(&stats.events);
                    stats.last_event_id.store(id, Ordering::Relaxed);
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
