//! What a router concludes from a real vLLM engine's KV events (issue 7, "Semantics vLLM
//! engines rely on"), end to end.
//!
//! Every test drives a [`VllmSource`] over ZeroMQ from the publisher stand-in in scripted mode
//! ([`kvtier_testkit::vllm_script`]): each batch is encoded by msgspec with vLLM's own struct
//! definitions, published with the next sequence number and kept for replay, exactly as
//! `ZmqEventPublisher` does. The source's messages are applied to a [`Router`], and the tests
//! assert with queries by tokens, hashed the way a request would be ([`BlockHasher`], or
//! [`vllm_request_hashes`] when `extra_keys` matter):
//!
//! | test | the engine's behaviour it relies on |
//! |---|---|
//! | `unknown_event_type_and_medium_skip_only_themselves` | one bad event is one bad event |
//! | `an_undecodable_batch_does_not_forget_earlier_blocks` | ... and one bad batch is one bad batch |
//! | `two_copies_need_two_removals` | vLLM does not deduplicate: one `BlockRemoved` per copy |
//! | `an_offloaded_cpu_copy_outlives_its_gpu_copy` | CPU copies: empty `token_ids`, no parent |
//! | `cache_salt_separates_tenants`, `multimodal_identifiers_separate_images`, `lora_extra_keys_match_lora_queries` | `extra_keys` are part of the hash |
//! | `a_child_stored_before_its_parent_is_known_is_placed_later` | an unknown parent is not forever |
//! | `a_store_under_a_recognised_parent_re_establishes_the_prefix` | a stored block's prefix is held |
//! | `skipped_events_and_unplaceable_blocks_are_counted` | operators can see all of it |
//! | `a_sliding_window_group_does_not_evict_the_full_attention_prefix` | hybrid models: one stream per KV-cache group |
//! | `an_engine_restart_forgets_its_blocks` | (the scripted publisher's restart) |
//!
//! Synchronisation: after the batches of a step, [`Engine::settle`] publishes a marker (a
//! store of a fresh root block) and applies the source's messages until the marker's arrives;
//! every earlier batch has been handled by then, live or through replay.
//!
//! Set `KVTIER_SKIP_PYTHON_TESTS=1` to skip these tests where there is no Python.

use std::time::Duration;

use kvtier_core::{BlockHasher, Medium, SequenceHash};
use kvtier_events::{EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{
    MmPlaceholder, QueryScratch, Router, VllmConvertConfig, VllmSource, VllmSourceBuilder,
    VllmSourceHandle, VllmStats, vllm_request_hashes,
};
use kvtier_testkit::python::skip_python_tests;
use kvtier_testkit::vllm::VllmPublisher;
use kvtier_testkit::vllm_script::{
    Batch, Event, Generation, Hash, KeyPart, ScriptedPublisher, Stored,
};
use tokio::sync::mpsc;

#[path = "common/source.rs"]
mod source;
use source::{WAIT, wait_stats};

const BLOCK_SIZE: usize = 4;
const MODEL: &str = "test-model";
const NAME: &str = "engine-under-test";
const TOPIC: &str = "kv-events";
/// The wire generation of the tests' batches, unless a test says otherwise.
const GEN: Generation = Generation::V4Map;

/// Held blocks per medium, in [`Medium::ALL`] order (GPU, CPU, DISK, EXTERNAL).
type Held = [u32; 4];

fn gpu(n: u32) -> Held {
    [n, 0, 0, 0]
}

/// `blocks` blocks of tokens unique to `seed`.
fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BLOCK_SIZE) as u32)
        .map(|t| seed * 1000 + t)
        .collect()
}

/// Hashes named `{prefix}0`, `{prefix}1`, ...
fn hashes(prefix: &str, n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| Hash::named(&format!("{prefix}{i}")))
        .collect()
}

fn store(hashes: Vec<Hash>, parent: Option<Hash>, tokens: Vec<u32>) -> Stored {
    Stored::new(hashes, parent, tokens, BLOCK_SIZE)
}

fn batch(events: Vec<Event>) -> Batch {
    Batch::new(GEN, events)
}

/// One engine (the scripted publisher), the source following it, and a router fed by it.
struct Engine {
    publisher: ScriptedPublisher,
    source: Option<(VllmSourceHandle, mpsc::Receiver<EventMessage>)>,
    router: Router,
    config: VllmConvertConfig,
    instance: InstanceId,
    markers: u32,
}

impl Engine {
    /// A publisher, and a source connected to it.
    async fn start() -> Engine {
        let mut engine = Engine::publisher_only();
        engine.connect(|b| b).await;
        engine
    }

    /// A publisher with no source yet (the router joins later: [`Engine::connect`]).
    fn publisher_only() -> Engine {
        let publisher = VllmPublisher::builder().with_topic(TOPIC).start_scripted();
        let source = Self::builder(&publisher).build().unwrap();
        Engine {
            config: source.convert_config().clone(),
            instance: source.instance_id(0),
            publisher,
            source: None,
            router: Router::builder().build(),
            markers: 0,
        }
    }

    fn builder(publisher: &ScriptedPublisher) -> VllmSourceBuilder {
        VllmSource::builder(NAME, publisher.endpoint())
            .with_replay_endpoint(publisher.replay_endpoint())
            .with_topic(TOPIC)
            .with_model(MODEL)
            .with_default_block_size(BLOCK_SIZE)
            .with_replay_timeout(Duration::from_secs(5))
    }

    /// Starts the source (`configure` adds options), waits for its SUB connection and lets
    /// the subscription settle (a batch lost anyway is recovered by the late-join replay).
    async fn connect(&mut self, configure: impl FnOnce(VllmSourceBuilder) -> VllmSourceBuilder) {
        let source = configure(Self::builder(&self.publisher)).build().unwrap();
        let (tx, rx) = mpsc::channel(256);
        let handle = source.spawn(tx);
        wait_stats(&handle, "the SUB connection", |s| s.connects >= 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.source = Some((handle, rx));
    }

    /// Publishes a batch; returns its sequence number.
    fn publish(&mut self, batch: Batch) -> u64 {
        tokio::task::block_in_place(|| self.publisher.publish(&batch))
    }

    /// Publishes raw bytes as a batch's payload; returns its sequence number.
    fn publish_raw(&mut self, payload: &[u8], live: bool) -> u64 {
        tokio::task::block_in_place(|| self.publisher.publish_raw(payload, live, true))
    }

    fn handle(&self) -> &VllmSourceHandle {
        &self.source.as_ref().expect("a connected source").0
    }

    fn stats(&self) -> VllmStats {
        self.handle().stats()
    }

    /// Publishes a marker, then applies the source's messages until the marker's: everything
    /// published before it has been handled.
    async fn settle(&mut self) {
        let n = self.markers;
        self.markers += 1;
        let marker_tokens = tokens(500 + n, 1);
        let marker = self.plain(&marker_tokens)[0];
        let stored = store(
            vec![Hash::named(&format!("marker-{n}"))],
            None,
            marker_tokens,
        );
        self.publish(batch(vec![Event::Stored(stored)]));
        let (_, rx) = self.source.as_mut().expect("a connected source");
        loop {
            let message = match tokio::time::timeout(WAIT, rx.recv()).await {
                Ok(Some(message)) => message,
                Ok(None) => panic!("the source stopped"),
                Err(_) => panic!("marker {n} never arrived"),
            };
            let is_marker = matches!(
                &message.payload,
                Payload::Batch(b) if b.kind == EventKind::Create && b.hashes.contains(&marker)
            );
            self.router.apply(message);
            if is_marker {
                return;
            }
        }
    }

    /// The kvtier hashes of a plain request for `tokens` (no LoRA, salt or images).
    fn plain(&self, tokens: &[u32]) -> Vec<SequenceHash> {
        BlockHasher::new(BLOCK_SIZE, self.config.scheme, self.config.extra_keys(None))
            .unwrap()
            .sequence_hashes(tokens)
    }

    /// The kvtier hashes of a request with `extra_keys` (C2's folding).
    fn request(
        &self,
        tokens: &[u32],
        lora: Option<&str>,
        salt: Option<&str>,
        mm: &[MmPlaceholder],
    ) -> Vec<SequenceHash> {
        vllm_request_hashes(&self.config, BLOCK_SIZE, lora, salt, mm, tokens).unwrap()
    }

    /// How many leading blocks of `hashes` the engine holds, per medium.
    fn held(&self, hashes: &[SequenceHash]) -> Held {
        let answer = self.router.query(hashes, &mut QueryScratch::default());
        answer
            .overlaps
            .iter()
            .find(|o| o.instance == self.instance)
            .map_or([0; 4], |o| Medium::ALL.map(|m| o.matched(m)))
    }
}

/// The value of the counter with metric suffix `suffix` (contract C4).
fn counter(stats: &VllmStats, suffix: &str) -> u64 {
    let counters = stats.counters();
    counters
        .iter()
        .find(|(name, _, _)| *name == suffix)
        .map(|c| c.2)
        .unwrap_or_else(|| {
            let names: Vec<_> = counters.iter().map(|c| c.0).collect();
            panic!("no counter {suffix:?} among {names:?}")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_type_and_medium_skip_only_themselves() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let (a, b, x, c) = (tokens(1, 2), tokens(2, 1), tokens(3, 1), tokens(4, 1));
    // A newer engine's event type and a medium kvtier does not know, between good events,
    // in both layouts.
    engine.publish(batch(vec![
        Event::Stored(store(hashes("a", 2), None, a.clone())),
        Event::Unknown {
            tag: "BlockPinned".into(),
            block_hashes: hashes("a", 1),
        },
        Event::Stored(store(hashes("x", 1), None, x.clone()).with_medium(Some("CXL_POOL"))),
        Event::Stored(store(hashes("b", 1), None, b.clone())),
    ]));
    engine.publish(Batch::new(
        Generation::V3Array,
        vec![
            Event::Unknown {
                tag: "BlockPinned".into(),
                block_hashes: hashes("b", 1),
            },
            Event::Stored(store(hashes("c", 1), None, c.clone())),
        ],
    ));
    engine.settle().await;

    assert_eq!(
        engine.held(&engine.plain(&a)),
        gpu(2),
        "A, before the unknown event"
    );
    assert_eq!(
        engine.held(&engine.plain(&b)),
        gpu(1),
        "B, after the unknown medium"
    );
    assert_eq!(
        engine.held(&engine.plain(&c)),
        gpu(1),
        "C, in the positional batch"
    );
    assert_eq!(
        engine.held(&engine.plain(&x)),
        [0; 4],
        "X, on the unknown medium"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_does_not_forget_earlier_blocks() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let (a, b, c) = (tokens(1, 2), tokens(2, 1), tokens(3, 1));
    engine.publish(batch(vec![Event::Stored(store(
        hashes("a", 2),
        None,
        a.clone(),
    ))]));
    engine.settle().await;
    assert_eq!(engine.held(&engine.plain(&a)), gpu(2));

    // Not msgpack at all, live and in the replay buffer; then one lost on PUB, so that only
    // its replay (as undecodable) can fill the gap.
    engine.publish_raw(b"\xc1 not a batch", true);
    engine.publish(batch(vec![Event::Stored(store(
        hashes("b", 1),
        None,
        b.clone(),
    ))]));
    engine.publish_raw(b"\x93\xc1", false);
    engine.publish(batch(vec![Event::Stored(store(
        hashes("c", 1),
        None,
        c.clone(),
    ))]));
    engine.settle().await;

    assert_eq!(
        engine.held(&engine.plain(&a)),
        gpu(2),
        "A survives the bad batches"
    );
    assert_eq!(engine.held(&engine.plain(&b)), gpu(1), "B");
    assert_eq!(engine.held(&engine.plain(&c)), gpu(1), "C");
    let stats = engine.stats();
    // Seq 1 live and replayed, seq 3 replayed.
    assert!(
        counter(&stats, "undecodable_batches") >= 2,
        "counted: {stats:?}"
    );
    assert_eq!(
        stats.convert.clears, 0,
        "no Cleared for a bad batch: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_need_two_removals() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let x = tokens(5, 2);
    // Two requests computed the same prefix: two physical copies, two stores.
    engine.publish(batch(vec![Event::Stored(store(
        hashes("x", 2),
        None,
        x.clone(),
    ))]));
    engine.publish(batch(vec![Event::Stored(store(
        hashes("x", 2),
        None,
        x.clone(),
    ))]));
    engine.settle().await;
    assert_eq!(engine.held(&engine.plain(&x)), gpu(2));

    engine.publish(batch(vec![Event::removed(hashes("x", 2), "GPU")]));
    engine.settle().await;
    assert_eq!(engine.held(&engine.plain(&x)), gpu(2), "one copy left");

    engine.publish(batch(vec![Event::removed(hashes("x", 2), "GPU")]));
    engine.settle().await;
    assert_eq!(engine.held(&engine.plain(&x)), [0; 4], "no copy left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offloaded_cpu_copy_outlives_its_gpu_copy() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let g = tokens(6, 2);
    engine.publish(batch(vec![Event::Stored(store(
        hashes("g", 2),
        None,
        g.clone(),
    ))]));
    // vLLM's offloading connector: the CPU copies, with empty token_ids and no parent.
    let offload = store(hashes("g", 2), None, vec![]).with_medium(Some("CPU"));
    engine.publish(batch(vec![Event::Stored(offload)]));
    engine.settle().await;
    let h = engine.plain(&g);
    assert_eq!(engine.held(&h), [2, 2, 0, 0], "on GPU and CPU");

    engine.publish(batch(vec![Event::removed(hashes("g", 2), "GPU")]));
    engine.settle().await;
    assert_eq!(engine.held(&h), [0, 2, 0, 0], "the CPU copy still matches");

    engine.publish(batch(vec![Event::removed(hashes("g", 2), "CPU")]));
    engine.settle().await;
    assert_eq!(engine.held(&h), [0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_salt_separates_tenants() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let t = tokens(7, 2);
    // vLLM puts cache_salt in the extra keys of block 0 only.
    let salted = store(hashes("s", 2), None, t.clone())
        .with_extra_keys(vec![Some(vec!["tenant-a".into()]), None]);
    engine.publish(batch(vec![Event::Stored(salted)]));
    engine.settle().await;

    let tenant_a = engine.request(&t, None, Some("tenant-a"), &[]);
    let tenant_b = engine.request(&t, None, Some("tenant-b"), &[]);
    let unsalted = engine.plain(&t);
    assert_eq!(
        engine.request(&t, None, None, &[]),
        unsalted,
        "C2: no salt = plain"
    );
    assert_eq!(engine.held(&tenant_a), gpu(2), "the salted query");
    assert_eq!(engine.held(&tenant_b), [0; 4], "another tenant's salt");
    assert_eq!(engine.held(&unsalted), [0; 4], "an unsalted query");

    // The same tokens unsalted: a separate chain (other engine hashes).
    engine.publish(batch(vec![Event::Stored(store(
        hashes("u", 2),
        None,
        t.clone(),
    ))]));
    engine.settle().await;
    assert_eq!(engine.held(&unsalted), gpu(2));
    assert_eq!(engine.held(&tenant_a), gpu(2));
    assert_eq!(engine.held(&tenant_b), [0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multimodal_identifiers_separate_images() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let t = tokens(8, 3);
    // An image whose placeholder covers tokens 2..6: vLLM puts (identifier, offset - block
    // start) in blocks 0 and 1.
    let image = |identifier: &str, offset| MmPlaceholder {
        identifier: identifier.to_owned(),
        offset,
        length: 4,
    };
    let key = |rel: i64| Some(vec![KeyPart::List(vec!["img-1".into(), rel.into()])]);
    let keys = vec![key(2), key(-2), None];
    let stored = store(hashes("m", 3), None, t.clone()).with_extra_keys(keys);
    engine.publish(batch(vec![Event::Stored(stored)]));
    engine.settle().await;

    let held = |mm: &[MmPlaceholder]| engine.held(&engine.request(&t, None, None, mm));
    assert_eq!(
        held(&[image("img-1", 2)]),
        gpu(3),
        "the same image at the same place"
    );
    assert_eq!(held(&[image("img-2", 2)]), [0; 4], "another image");
    assert_eq!(
        held(&[image("img-1", 3)]),
        [0; 4],
        "the image one token later"
    );
    assert_eq!(held(&[]), [0; 4], "the text alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_extra_keys_match_lora_queries() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let (l, ls) = (tokens(9, 2), tokens(10, 2));
    // vLLM puts the LoRA name first in every block's extra keys, then the salt on block 0.
    let lora = store(hashes("l", 2), None, l.clone())
        .with_lora_name("sql-adapter")
        .with_extra_keys(vec![
            Some(vec!["sql-adapter".into()]),
            Some(vec!["sql-adapter".into()]),
        ]);
    let lora_salted = store(hashes("k", 2), None, ls.clone())
        .with_lora_name("sql-adapter")
        .with_extra_keys(vec![
            Some(vec!["sql-adapter".into(), "tenant-a".into()]),
            Some(vec!["sql-adapter".into()]),
        ]);
    engine.publish(batch(vec![Event::Stored(lora), Event::Stored(lora_salted)]));
    engine.settle().await;

    let adapter = Some("sql-adapter");
    assert_eq!(engine.held(&engine.request(&l, adapter, None, &[])), gpu(2));
    assert_eq!(
        engine.held(&engine.plain(&l)),
        [0; 4],
        "without the adapter"
    );
    assert_eq!(
        engine.held(&engine.request(&ls, adapter, Some("tenant-a"), &[])),
        gpu(2)
    );
    assert_eq!(
        engine.held(&engine.request(&ls, adapter, None, &[])),
        [0; 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_stored_before_its_parent_is_known_is_placed_later() {
    if skip_python_tests() {
        return;
    }
    // The engine cached a system prompt long before the router joined; that batch has left
    // its replay buffer.
    let mut engine = Engine::publisher_only();
    let (p, c) = (tokens(11, 1), tokens(12, 1));
    let prompt = || Event::Stored(store(hashes("p", 1), None, p.clone()));
    engine.publish(batch(vec![prompt()]).unbuffered());
    engine.connect(|b| b).await;

    let child = store(hashes("c", 1), Some(Hash::named("p0")), c.clone());
    engine.publish(batch(vec![Event::Stored(child)]));
    engine.settle().await;
    let pc = engine.plain(&[p.clone(), c.clone()].concat());
    assert_eq!(engine.held(&pc), [0; 4], "the parent is unknown");

    // Another request stores the prompt again (vLLM does not deduplicate): now the router
    // knows where the child goes.
    engine.publish(batch(vec![prompt()]));
    engine.settle().await;
    assert_eq!(
        engine.held(&pc),
        gpu(2),
        "the child is placed under its parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_under_a_recognised_parent_re_establishes_the_prefix() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let a = tokens(13, 3);
    engine.publish(batch(vec![Event::Stored(store(
        hashes("a", 2),
        None,
        a[..2 * BLOCK_SIZE].to_vec(),
    ))]));
    engine.settle().await;
    let h = engine.plain(&a);
    assert_eq!(engine.held(&h), gpu(2));

    // A batch lost for good: the router must forget what it believed the engine held.
    let lost = store(hashes("z", 1), None, tokens(14, 1));
    engine.publish(batch(vec![Event::Stored(lost)]).lost().unbuffered());
    // The running request stores its next block: it holds a0 and a1 right now.
    let next = store(
        vec![Hash::named("a2")],
        Some(Hash::named("a1")),
        a[2 * BLOCK_SIZE..].to_vec(),
    );
    engine.publish(batch(vec![Event::Stored(next)]));
    engine.settle().await;
    assert_eq!(engine.held(&h), gpu(3), "a0, a1 and a2 are held again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_events_and_unplaceable_blocks_are_counted() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    engine.publish(batch(vec![
        Event::Unknown {
            tag: "BlockPinned".into(),
            block_hashes: hashes("a", 1),
        },
        Event::Stored(store(hashes("x", 1), None, tokens(3, 1)).with_medium(Some("CXL_POOL"))),
        // A parent nobody announced: the blocks wait for it.
        Event::Stored(store(
            hashes("o", 2),
            Some(Hash::named("nowhere")),
            tokens(4, 2),
        )),
        // Tokens for one block of two (as vLLM issue #44451 reports for Mamba's skipped
        // blocks): the second block cannot be placed.
        Event::Stored(store(hashes("t", 2), None, tokens(5, 1))),
    ]));
    // A batch msgspec would never write: [1.5, [["BlockStored", "bad"]], 0] (a malformed
    // event in a well-formed batch).
    let mut malformed = vec![0x93, 0xcb];
    malformed.extend_from_slice(&1.5f64.to_be_bytes());
    malformed.extend_from_slice(&[0x91, 0x92, 0xab]);
    malformed.extend_from_slice(b"BlockStored");
    malformed.extend_from_slice(&[0xa3, b'b', b'a', b'd', 0x00]);
    engine.publish_raw(&malformed, true);
    engine.settle().await;

    let stats = engine.stats();
    assert_eq!(
        counter(&stats, "skipped_events_unknown_tag"),
        1,
        "{stats:?}"
    );
    assert_eq!(
        counter(&stats, "skipped_events_unknown_medium"),
        1,
        "{stats:?}"
    );
    assert_eq!(counter(&stats, "skipped_events_malformed"), 1, "{stats:?}");
    assert_eq!(counter(&stats, "unplaceable_blocks"), 1, "{stats:?}");
    assert_eq!(
        stats.convert.pending_blocks, 2,
        "waiting for their parent: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_window_group_does_not_evict_the_full_attention_prefix() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::start().await;
    let t = tokens(17, 3);
    // A hybrid model stores the same blocks once per KV-cache group, in the positional
    // generation that introduced groups and in the map one.
    let group = |idx, kind| store(hashes("w", 3), None, t.clone()).with_group(idx, kind);
    engine.publish(Batch::new(
        Generation::V3Array,
        vec![
            Event::Stored(group(0, "full_attention")),
            Event::Stored(group(1, "sliding_window")),
        ],
    ));
    engine.settle().await;
    let h = engine.plain(&t);
    assert_eq!(engine.held(&h), gpu(3));

    // The window slides past the first two blocks: only group 1 evicts them.
    engine.publish(batch(vec![Event::Removed {
        block_hashes: hashes("w", 2),
        medium: Some("GPU".into()),
        group_idx: Some(1),
    }]));
    engine.settle().await;
    assert_eq!(
        engine.held(&h),
        gpu(3),
        "full attention still holds the prefix"
    );

    engine.publish(batch(vec![Event::Removed {
        block_hashes: hashes("w", 3),
        medium: Some("GPU".into()),
        group_idx: Some(0),
    }]));
    engine.settle().await;
    assert_eq!(engine.held(&h), [0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_forgets_its_blocks() {
    if skip_python_tests() {
        return;
    }
    let mut engine = Engine::publisher_only();
    engine
        .connect(|b| b.with_idle_reconnect(Some(Duration::from_millis(500))))
        .await;
    let (a, b) = (tokens(15, 1), tokens(16, 1));
    engine.publish(batch(vec![Event::Stored(store(
        hashes("a", 1),
        None,
        a.clone(),
    ))]));
    engine.settle().await;
    assert_eq!(engine.held(&engine.plain(&a)), gpu(1));

    // A new engine process on the same ports: sequence from 0, empty cache and buffer.
    let connects = engine.stats().connects;
    tokio::task::block_in_place(|| engine.publisher.restart());
    wait_stats(engine.handle(), "a reconnect", |s| s.connects > connects).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seq = engine.publish(batch(vec![Event::Stored(store(
        hashes("b", 1),
        None,
        b.clone(),
    ))]));
    assert_eq!(seq, 0, "the restarted engine counts from 0");
    engine.settle().await;

    assert_eq!(
        engine.held(&engine.plain(&a)),
        [0; 4],
        "the old engine's cache is gone"
    );
    assert_eq!(engine.held(&engine.plain(&b)), gpu(1));
    assert_eq!(engine.stats().resets, 1);
}
