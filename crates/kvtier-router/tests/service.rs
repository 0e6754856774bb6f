//! The router service over HTTP: a block manager's events flow in through a subscriber,
//! `POST /query` answers by tokens and by hashes, bad bodies get 400, `/metrics` and
//! `/instances` report, and stopping writes a snapshot that a new service starts from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme};
use kvtier_events::{EventEmitter, InstanceId, Publisher};
use kvtier_router::{QueryResponse, Router, RouterService};
use kvtier_testkit::http;

fn wait_for(mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "condition not reached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serves_queries_metrics_and_snapshots() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("router.snap");

    // One worker: a manager whose events go to a publisher.
    let publisher = Publisher::new(InstanceId(0xABC));
    let emitter = EventEmitter::builder(publisher.clone())
        .for_tier::<G1>()
        .build()
        .unwrap();
    let manager = BlockManager::<G1>::builder()
        .with_block_count(64)
        .with_block_size(4)
        .with_observer(Arc::new(emitter.clone()))
        .build()
        .unwrap();
    let hasher =
        BlockHasher::new(4, HashScheme::default(), ExtraKeys::new().with_model("m")).unwrap();
    let tokens: Vec<u32> = (0..22).collect();
    let hashes = hasher.sequence_hashes(&tokens);
    assert_eq!(hashes.len(), 5);

    let service = rt
        .block_on(
            RouterService::builder(Router::builder().build())
                .with_snapshot(snap.clone(), Duration::from_secs(3600))
                .start(),
        )
        .unwrap();
    service.attach_subscriber(publisher.subscribe()).unwrap();
    service
        .router()
        .write()
        .attach_source(InstanceId(0xABC), Arc::new(publisher.clone()));
    let addr = service.local_addr();

    let blocks = manager.allocate_blocks(3).unwrap();
    let staged: Vec<_> = blocks
        .into_iter()
        .zip(&hashes)
        .map(|(b, &h)| b.stage(h, 4).unwrap())
        .collect();
    let _held = manager
        .register_blocks(staged)
        .map_err(|e| e.to_string())
        .unwrap();
    emitter.flush();

    let by_tokens =
        serde_json::json!({"tokens": tokens, "block_size": 4, "extra": {"model": "m"}}).to_string();
    wait_for(|| {
        let (status, body) = http::post(addr, "/query", &by_tokens);
        assert_eq!(status, 200, "{body}");
        let r: QueryResponse = serde_json::from_str(&body).unwrap();
        !r.instances.is_empty()
    });
    let (_, body) = http::post(addr, "/query", &by_tokens);
    let r: QueryResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.blocks, 5);
    assert_eq!(r.best, Some(InstanceId(0xABC)));
    assert_eq!(r.instances[0].media["GPU"].matched, 3);
    assert_eq!(r.instances[0].media["GPU"].upper, 3);

    // The same request by hashes; another model's hashes match nothing.
    let hex: Vec<String> = hashes
        .iter()
        .map(|h| format!("{:032x}", h.as_u128()))
        .collect();
    let (status, body) = http::post(
        addr,
        "/query",
        &serde_json::json!({"hashes": hex}).to_string(),
    );
    assert_eq!(status, 200);
    let r: QueryResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.instances[0].media["GPU"].matched, 3);
    let other = serde_json::json!({"tokens": (0..22).collect::<Vec<u32>>(), "block_size": 4, "extra": {"model": "other"}}).to_string();
    let r: QueryResponse = serde_json::from_str(&http::post(addr, "/query", &other).1).unwrap();
    assert!(r.instances.is_empty());

    // Bad bodies are refused with a reason.
    for bad in [
        "not json",
        "{}",
        r#"{"tokens": [1,2], "block_size": 0}"#,
        r#"{"tokens": [1,2]}"#,
        r#"{"hashes": ["xyz"]}"#,
        r#"{"hashes": [], "tokens": []}"#,
        r#"{"hashes": [], "bogus": 1}"#,
    ] {
        let (status, body) = http::post(addr, "/query", bad);
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(body.contains("error") || !body.is_empty(), "{body}");
    }

    let (status, metrics) = http::get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("kvtier_router_creates_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("kvtier_router_instances 1"), "{metrics}");
    let (status, instances) = http::get(addr, "/instances");
    assert_eq!(status, 200);
    assert!(
        instances.contains("00000000000000000000000000000abc"),
        "{instances}"
    );
    assert_eq!(http::get(addr, "/health").0, 200);

    rt.block_on(service.stop()).unwrap();
    // A new service starts from the snapshot and answers at once.
    let restored = Router::load_snapshot(Router::builder(), &snap).unwrap();
    let service = rt
        .block_on(RouterService::builder(restored).start())
        .unwrap();
    let r: QueryResponse =
        serde_json::from_str(&http::post(service.local_addr(), "/query", &by_tokens).1).unwrap();
    assert_eq!(r.instances[0].media["GPU"].matched, 3);
    rt.block_on(service.stop()).unwrap();
}

/// `POST /load` feeds the router's load table: with equal overlaps the less loaded instance
/// wins; bad loads get 400; a service without a table answers 404.
#[test]
fn loads_posted_over_http_break_ties() {
    use kvtier_core::{Medium, SequenceHash};
    use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, Payload};
    use kvtier_router::LoadTable;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let loads = LoadTable::default();
    let mut router = Router::builder()
        .with_load_signal(Arc::new(loads.clone()))
        .build();
    let chain = [
        SequenceHash::root(1),
        SequenceHash::child_of(SequenceHash::root(1), 2),
    ];
    for id in [1u128, 2] {
        router.apply(EventMessage {
            instance: InstanceId(id),
            event_id: 1,
            payload: Payload::Batch(EventBatch {
                medium: Medium::Gpu,
                kind: EventKind::Create,
                hashes: chain.to_vec(),
                policy: EmitPolicy::All,
            }),
        });
    }
    let service = rt
        .block_on(
            RouterService::builder(router)
                .with_load_table(loads)
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    let hex: Vec<String> = chain
        .iter()
        .map(|h| format!("{:032x}", h.as_u128()))
        .collect();
    let query = serde_json::json!({ "hashes": hex }).to_string();
    let best = || -> Option<InstanceId> {
        serde_json::from_str::<QueryResponse>(&http::post(addr, "/query", &query).1)
            .unwrap()
            .best
    };
    assert_eq!(best(), Some(InstanceId(1)), "equal: the lower id");
    let set = |id: u128, load: &str| {
        http::post(
            addr,
            "/load",
            &format!(r#"{{"instance": "{id:032x}", "load": {load}}}"#),
        )
        .0
    };
    assert_eq!(set(1, "5.0"), 204);
    assert_eq!(best(), Some(InstanceId(2)));
    assert_eq!(set(1, "null"), 204);
    assert_eq!(best(), Some(InstanceId(1)));
    assert_eq!(set(1, "-1"), 400);
    assert_eq!(http::post(addr, "/load", "{}").0, 400);
    rt.block_on(service.stop()).unwrap();

    let bare = rt
        .block_on(RouterService::builder(Router::builder().build()).start())
        .unwrap();
    let (status, _) = http::post(
        bare.local_addr(),
        "/load",
        r#"{"instance": "1", "load": 1.0}"#,
    );
    assert_eq!(status, 404);
    rt.block_on(bare.stop()).unwrap();
}

/// `extra.mm` items are checked against the tokens before anything is hashed; a salted query
/// does not match unsalted blocks.
#[test]
fn multimodal_items_must_lie_within_the_tokens_and_salt_changes_hashes() {
    use kvtier_core::Medium;
    use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, Payload};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens: Vec<u32> = (0..8).collect();
    let hashes = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())
        .unwrap()
        .sequence_hashes(&tokens);
    let mut router = Router::builder().build();
    router.apply(EventMessage {
        instance: InstanceId(7),
        event_id: 1,
        payload: Payload::Batch(EventBatch {
            medium: Medium::Gpu,
            kind: EventKind::Create,
            hashes: hashes.clone(),
            policy: EmitPolicy::All,
        }),
    });
    let service = rt.block_on(RouterService::builder(router).start()).unwrap();
    let addr = service.local_addr();
    for (offset, length) in [(6usize, 5usize), (0, 0), (usize::MAX, 2)] {
        let body = serde_json::json!({"tokens": tokens, "block_size": 4,
            "extra": {"mm": [{"identifier": "img", "offset": offset, "length": length}]}});
        let (status, text) = http::post(addr, "/query", &body.to_string());
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("must lie within"), "{text}");
    }
    let plain = serde_json::json!({"tokens": tokens, "block_size": 4}).to_string();
    let r: QueryResponse = serde_json::from_str(&http::post(addr, "/query", &plain).1).unwrap();
    assert_eq!(r.instances[0].media["GPU"].matched, 2);
    let salted =
        serde_json::json!({"tokens": tokens, "block_size": 4, "extra": {"salt": "s"}}).to_string();
    let (status, text) = http::post(addr, "/query", &salted);
    assert_eq!(status, 200, "{text}");
    let r: QueryResponse = serde_json::from_str(&text).unwrap();
    assert!(r.instances.is_empty(), "{text}");
    rt.block_on(service.stop()).unwrap();
}

/// A snapshot that cannot be written is counted in `/metrics` (the service goes on), and the
/// final one's error is returned by `stop`.
#[test]
fn failed_snapshots_are_counted_and_the_final_one_reported() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("missing-dir").join("router.snap");
    let service = rt
        .block_on(
            RouterService::builder(Router::builder().build())
                .with_snapshot(snap, Duration::from_millis(50))
                .start(),
        )
        .unwrap();
    let addr = service.local_addr();
    wait_for(|| {
        let (_, text) = http::get(addr, "/metrics");
        text.lines()
            .any(|l| l.starts_with("kvtier_router_snapshot_failures_total ") && !l.ends_with(" 0"))
    });
    assert_eq!(http::get(addr, "/health").0, 200);
    let err = rt.block_on(service.stop()).unwrap_err();
    assert!(err.to_string().contains("final snapshot"), "{err}");
}
