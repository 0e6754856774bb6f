//! The HTTP face of the router: `POST /query`, `POST /load`, `GET /instances`,
//! `GET /metrics`, `GET /health`.
//!
//! Request and response bodies are JSON; 128-bit values (instance ids, sequence hashes) are
//! 32 hex digits, as in the event wire format (`docs/events.md`). A body that is not a valid
//! query gets `400` with `{"error": "..."}`; nothing a client sends can stop the service.

use std::sync::Arc;

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, Medium, SequenceHash};
use kvtier_events::InstanceId;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::{QueryScratch, RouteAnswer, Router};

/// Most blocks one query may name (a longer request is refused with 400).
pub const MAX_QUERY_BLOCKS: usize = 1 << 20;

/// The body of `POST /query`: either sequence hashes, or tokens with the block size and extra
/// keys the instances hash with.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Sequence hashes of the request's blocks, in order, as 32 hex digits each.
    #[serde(default)]
    pub hashes: Option<Vec<String>>,
    /// The request's tokens (only full blocks count).
    #[serde(default)]
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
    /// Cache salt (UTF-8).
    #[serde(default)]
    pub salt: Option<String>,
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
    pub(crate) loads: Option<crate::LoadTable>,
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

async fn load(
    State(state): State<AppState>,
    body: Result<axum::Json<LoadUpdate>, JsonRejection>,
) -> Response {
    let Some(table) = &state.loads else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "this router reads loads from its own signal, not from POST /load"
            })),
        )
            .into_response();
    };
    let axum::Json(update) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    match update.load {
        Some(l) if l.is_finite() && l >= 0.0 => table.set(update.instance, l),
        Some(l) => return bad_request(format!("load {l} is not a finite, non-negative number")),
        None => table.remove(update.instance),
    }
    StatusCode::NO_CONTENT.into_response()
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
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
            let mut extra = ExtraKeys::new();
            if let Some(e) = req.extra {
                if let Some(m) = e.model {
                    extra = extra.with_model(m);
                }
                if let Some(l) = e.lora {
                    extra = extra.with_lora(l);
                }
                if let Some(s) = e.salt {
                    extra = extra.with_salt(s.into_bytes());
                }
            }
            BlockHasher::new(block_size, scheme, extra)
                .map(|h| h.sequence_hashes(&tokens))
                .map_err(|e| e.to_string())
        }
    }
}

async fn query(
    State(state): State<AppState>,
    body: Result<axum::Json<QueryRequest>, JsonRejection>,
) -> Response {
    let axum::Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    thread_local! {
        static SCRATCH: std::cell::RefCell<QueryScratch> = std::cell::RefCell::new(QueryScratch::default());
    }
    // Hash outside the lock: a long prompt must not hold up ingestion.
    let scheme = state.router.read().hash_scheme();
    let hashes = match resolve(scheme, req) {
        Ok(h) => h,
        Err(e) => return bad_request(e),
    };
    let router = state.router.read();
    let answer = SCRATCH.with(|s| router.query(&hashes, &mut s.borrow_mut()));
    drop(router);
    axum::Json(QueryResponse::from(answer)).into_response()
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
    let list: Vec<InstanceListJson> = state
        .router
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
    axum::Json(list).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.metrics) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
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
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}
