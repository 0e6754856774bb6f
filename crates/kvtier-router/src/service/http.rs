//! The HTTP face of the router: `POST /query`, `POST /load`, `GET /instances`,
//! `GET /metrics`, `GET /health`.
//!
//! Request and response bodies are JSON; 128-bit values (instance ids, sequence hashes) are
//! 32 hex digits, as in the event wire format (`docs/events.md`). A body that is not a valid
//! query gets `400` with `{"error": "..."}`; nothing a client sends can stop the service.
//!
//! # Limits
//!
//! The longest query accepted is [`MAX_QUERY_TOKENS`] tokens (a 1 M-token context) or
//! [`MAX_QUERY_BLOCKS`] hashes (that context in blocks of 4 tokens). Its JSON fits in
//! [`DEFAULT_MAX_BODY_BYTES`]; a larger body gets `413` (see `body.rs`), and the lists are
//! counted while they are parsed, so no body expands past these bounds in memory.
//!
//! Handlers never block an async worker: parsing, hashing and the index lookup of a query,
//! and the encoding of `/metrics` and `/instances`, run on the blocking pool. At most
//! `max_concurrent_queries` queries are worked on at once, and as many bodies over
//! [`SMALL_BODY`] are read at once (a small query never waits behind a slow large upload);
//! a request that waits past the body timeout for its turn gets `503`. `/health` takes no
//! lock and no permit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as HttpRouter;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kvtier_core::{HashScheme, Medium, SequenceHash};
use kvtier_events::InstanceId;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body::{bounded_list, content_length, read_limited};
use crate::{LoadTable, QueryScratch, RouteAnswer, Router};

/// Most tokens one query may carry (a longer request is refused with 400 while it is parsed).
pub const MAX_QUERY_TOKENS: usize = 1 << 20;

/// Default limit of a request body: a query of [`MAX_QUERY_TOKENS`] tokens of up to 10
/// digits, or of [`MAX_QUERY_BLOCKS`] hashes, with room for whitespace. Larger bodies get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// Bodies up to this size (and every `/load` body) are read without waiting for a
/// large-body permit.
pub const SMALL_BODY: usize = 64 << 10;

/// Most blocks one query may name: [`MAX_QUERY_TOKENS`] in blocks of 4 tokens (a longer
/// request is refused with 400 while it is parsed).
pub const MAX_QUERY_BLOCKS: usize = MAX_QUERY_TOKENS / 4;

/// The body of `POST /query`: either sequence hashes, or tokens with the block size and extra
/// keys the instances hash with.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Sequence hashes of the request's blocks, in order, as 32 hex digits each (at most
    /// [`MAX_QUERY_BLOCKS`]).
    #[serde(default, deserialize_with = "bounded_list::<_, _, MAX_QUERY_BLOCKS>")]
    pub hashes: Option<Vec<String>>,
    /// The request's tokens (only full blocks count; at most [`MAX_QUERY_TOKENS`]).
    #[serde(default, deserialize_with = "bounded_list::<_, _, MAX_QUERY_TOKENS>")]
    pub tokens: Option<Vec<u32>>,
    /// Tokens per block (required with `tokens`).
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Extra keys the instances hash with (model, LoRA, salt).
    #[serde(default)]
    pub extra: Option<ExtraKeysJson>,
}

/// Extra keys in a query.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExtraKeysJson {
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// LoRA adapter name.
    #[serde(default)]
    pub lora: Option<String>,
    /// Cache salt (UTF-8; vLLM's `cache_salt`, folded into the first block).
    #[serde(default)]
    pub salt: Option<String>,
    /// The request's multimodal items as vLLM sees them (at most [`MAX_QUERY_MM_ITEMS`]):
    /// each item's identifier is folded into the blocks its placeholder tokens overlap.
    #[serde(default, deserialize_with = "bounded_list::<_, _, MAX_QUERY_MM_ITEMS>")]
    pub mm: Option<Vec<MmItemJson>>,
}

/// Most multimodal items one query may carry.
pub const MAX_QUERY_MM_ITEMS: usize = 4096;

/// A multimodal item of a query: its identifier (vLLM's `mm_hash` or the request's UUID for
/// it) and the range of placeholder tokens it occupies.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MmItemJson {
    /// The item's identifier.
    pub identifier: String,
    /// Index of its first placeholder token.
    pub offset: usize,
    /// How many placeholder tokens it occupies (positive).
    pub length: usize,
}

/// One medium's overlap in a response.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediumJson {
    /// Leading blocks known to be held.
    pub matched: u32,
    /// Leading blocks possibly held (equals `matched` unless the instance announces only
    /// power-of-two positions).
    pub upper: u32,
}

/// One instance in a response.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceJson {
    /// The instance, as 32 hex digits.
    pub instance: InstanceId,
    /// Per medium name (`GPU`, `CPU`, `DISK`, `EXTERNAL`), only media with an overlap.
    pub media: std::collections::BTreeMap<String, MediumJson>,
    /// `all` or `power_of_two` (then the overlaps are bounds).
    pub policy: kvtier_events::EmitPolicy,
    /// The weighted overlap used to choose.
    pub score: f64,
    /// The instance's load.
    pub load: f64,
}

/// The body answering `POST /query`.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryResponse {
    /// Blocks in the request.
    pub blocks: usize,
    /// The chosen instance (`null` when none is known).
    pub best: Option<InstanceId>,
    /// Every instance holding at least the first block.
    pub instances: Vec<InstanceJson>,
}

impl From<RouteAnswer> for QueryResponse {
    fn from(a: RouteAnswer) -> Self {
        QueryResponse {
            blocks: a.blocks,
            best: a.best,
            instances: a
                .overlaps
                .into_iter()
                .map(|o| InstanceJson {
                    instance: o.instance,
                    media: Medium::ALL
                        .iter()
                        .filter(|m| o.media[m.index()].matched > 0)
                        .map(|m| {
                            let x = o.media[m.index()];
                            (
                                m.as_str().to_string(),
                                MediumJson {
                                    matched: x.matched,
                                    upper: x.upper,
                                },
                            )
                        })
                        .collect(),
                    policy: o.policy,
                    score: o.score,
                    load: o.load,
                })
                .collect(),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) router: Arc<RwLock<Router>>,
    pub(crate) metrics: Arc<prometheus_client::registry::Registry>,
    pub(crate) loads: Option<Arc<Loads>>,
    pub(crate) limits: BodyLimits,
    /// Queries being parsed, hashed and looked up.
    pub(crate) work: Arc<Semaphore>,
    /// Bodies over [`SMALL_BODY`] (or of unknown length) being read or worked on.
    pub(crate) large: Arc<Semaphore>,
}

/// Limits of request bodies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// Largest body, in bytes.
    pub(crate) max_body: usize,
    /// Time for a whole body to arrive, and most time a request waits for its turn.
    pub(crate) body_timeout: Duration,
}

/// The loads posted over `POST /load`, and which instances they name (so that the loads of
/// instances that retire are forgotten).
pub(crate) struct Loads {
    table: LoadTable,
    posted: Mutex<HashSet<InstanceId>>,
}

impl Loads {
    pub(crate) fn new(table: LoadTable) -> Self {
        Loads {
            table,
            posted: Mutex::new(HashSet::new()),
        }
    }

    fn set(&self, instance: InstanceId, load: f64) {
        self.posted.lock().insert(instance);
        self.table.set(instance, load);
    }

    fn remove(&self, instance: InstanceId) {
        self.posted.lock().remove(&instance);
        self.table.remove(instance);
    }

    /// Forgets the loads of instances the router no longer knows.
    pub(crate) fn forget_unknown(&self, router: &Router) {
        let mut posted = self.posted.lock();
        if posted.is_empty() {
            return;
        }
        let known: HashSet<InstanceId> = router.instances().iter().map(|i| i.instance).collect();
        posted.retain(|id| {
            let keep = known.contains(id);
            if !keep {
                self.table.remove(*id);
            }
            keep
        });
    }
}

/// The body of `POST /load`: one instance's current load (lower is less busy).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadUpdate {
    /// The instance, as 32 hex digits.
    pub instance: InstanceId,
    /// Its load, finite and not negative; `null` forgets it.
    pub load: Option<f64>,
}

async fn load(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let Some(loads) = state.loads.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this router reads loads from its own signal, not from POST /load",
        );
    };
    let bytes = match read_limited(&headers, body, SMALL_BODY, state.limits.body_timeout).await {
        Ok(b) => b,
        Err(e) => {
            let (status, msg) = e.status();
            return error(status, msg);
        }
    };
    let update: LoadUpdate = match serde_json::from_slice(&bytes) {
        Ok(u) => u,
        Err(e) => return bad_request(e.to_string()),
    };
    if let Some(l) = update.load
        && !(l.is_finite() && l >= 0.0)
    {
        return bad_request(format!("load {l} is not a finite, non-negative number"));
    }
    let router = state.router.clone();
    let known = tokio::task::spawn_blocking(move || {
        router
            .read()
            .instances()
            .iter()
            .any(|i| i.instance == update.instance)
    })
    .await
    .unwrap_or(false);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("instance {} is not known to this router", update.instance),
        );
    }
    match update.load {
        Some(l) => loads.set(update.instance, l),
        None => loads.remove(update.instance),
    }
    StatusCode::NO_CONTENT.into_response()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

fn bad_request(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many queries in progress; try again",
    )
}

/// A permit of `sem`, waiting at most `wait`.
async fn permit(sem: &Arc<Semaphore>, wait: Duration) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout(wait, sem.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// A sequence hash in the wire's hex form (the same parser as instance ids).
fn parse_hash(s: &str) -> Result<SequenceHash, String> {
    s.parse::<InstanceId>()
        .map(|v| SequenceHash::from_u128(v.0))
        .map_err(|_| format!("hash {s:?} is not 1 to 32 hex digits"))
}

/// Turns a query body into sequence hashes.
pub(crate) fn resolve(scheme: HashScheme, req: QueryRequest) -> Result<Vec<SequenceHash>, String> {
    match (req.hashes, req.tokens) {
        (Some(_), Some(_)) => Err("give either `hashes` or `tokens`, not both".into()),
        (None, None) => Err("give `hashes` or `tokens` (with `block_size`)".into()),
        (Some(hashes), None) => {
            if hashes.len() > MAX_QUERY_BLOCKS {
                return Err(format!("at most {MAX_QUERY_BLOCKS} blocks per query"));
            }
            hashes.iter().map(|h| parse_hash(h)).collect()
        }
        (None, Some(tokens)) => {
            let block_size = req.block_size.ok_or("`tokens` needs `block_size`")?;
            if block_size == 0 || tokens.len() / block_size > MAX_QUERY_BLOCKS {
                return Err(format!(
                    "block_size must be positive and the request at most {MAX_QUERY_BLOCKS} blocks"
                ));
            }
            let extra = req.extra.unwrap_or_default();
            let mm = extra.mm.unwrap_or_default();
            for item in &mm {
                let end = item.offset.checked_add(item.length);
                if item.length == 0 || end.is_none_or(|end| end > tokens.len()) {
                    return Err(format!(
                        "multimodal item {:?}: offset {} and length {} must lie within the {} tokens",
                        item.identifier,
                        item.offset,
                        item.length,
                        tokens.len()
                    ));
                }
            }
            super::vllm_keys::request_hashes(
                scheme,
                block_size,
                super::vllm_keys::Keys {
                    model: extra.model.as_deref(),
                    lora: extra.lora.as_deref(),
                    salt: extra.salt.as_deref(),
                    mm: &mm,
                },
                &tokens,
            )
        }
    }
}

async fn query(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let limits = state.limits;
    let declared = content_length(&headers);
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {} bytes", limits.max_body),
        );
    }
    // A large body holds a large-body permit from its first byte to its answer, so that the
    // memory of bodies in flight stays bounded; small ones never wait for one.
    let _large = if declared.is_none_or(|n| n > SMALL_BODY as u64) {
        match permit(&state.large, limits.body_timeout).await {
            Some(p) => Some(p),
            None => return busy(),
        }
    } else {
        None
    };
    let bytes = match read_limited(&headers, body, limits.max_body, limits.body_timeout).await {
        Ok(b) => b,
        Err(e) => {
            let (status, msg) = e.status();
            return error(status, msg);
        }
    };
    let Some(_work) = permit(&state.work, limits.body_timeout).await else {
        return busy();
    };
    let router = state.router.clone();
    match tokio::task::spawn_blocking(move || answer(&router, &bytes)).await {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(msg)) => bad_request(msg),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Parses, hashes and answers one query (on the blocking pool); the JSON answer.
fn answer(router: &RwLock<Router>, body: &[u8]) -> Result<Vec<u8>, String> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<QueryScratch> = std::cell::RefCell::new(QueryScratch::default());
    }
    let req: QueryRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    // Hash outside the lock: a long prompt must not hold up ingestion.
    let scheme = router.read().hash_scheme();
    let hashes = resolve(scheme, req)?;
    let answer = {
        let router = router.read();
        SCRATCH.with(|s| router.query(&hashes, &mut s.borrow_mut()))
    };
    serde_json::to_vec(&QueryResponse::from(answer)).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct InstanceListJson {
    instance: InstanceId,
    next_event_id: u64,
    blocks: std::collections::BTreeMap<&'static str, usize>,
    buffered: usize,
    sparse: bool,
}

async fn instances(State(state): State<AppState>) -> Response {
    let router = state.router.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let list: Vec<InstanceListJson> = router
            .read()
            .instances()
            .into_iter()
            .map(|i| InstanceListJson {
                instance: i.instance,
                next_event_id: i.next_event_id,
                blocks: Medium::ALL
                    .iter()
                    .map(|m| (m.as_str(), i.blocks[m.index()]))
                    .collect(),
                buffered: i.buffered,
                sparse: i.sparse,
            })
            .collect();
        serde_json::to_vec(&list)
    })
    .await;
    match listed {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let registry = state.metrics.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).map(|()| text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

pub(crate) fn app(state: AppState) -> HttpRouter {
    HttpRouter::new()
        .route("/query", post(query))
        .route("/load", post(load))
        .route("/instances", get(instances))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
}
