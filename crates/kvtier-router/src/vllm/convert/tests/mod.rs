//! Converter tests, by topic: chains and filters (`basics`), copy counting and offloaded copies
//! (`copies`), placement of blocks under forgotten parents (`placement`), extra keys and
//! [`crate::vllm_request_hashes`] (`keys`), coalescing, state and memory (`compact`), copy
//! counts against a reference model (`model`).

use kvtier_core::{BlockHasher, HashScheme, Medium, SequenceHash};
use kvtier_events::{EventKind, EventMessage, Payload};

use super::*;

mod basics;
mod compact;
mod copies;
mod keys;
mod model;
mod placement;
mod table;

const BS: usize = 4;

fn config() -> VllmConvertConfig {
    VllmConvertConfig::default().with_model("m")
}

fn hasher(lora: Option<&str>) -> BlockHasher {
    BlockHasher::new(BS, HashScheme::Kvtier, config().extra_keys(lora)).unwrap()
}

fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BS) as u32).map(|t| seed * 1000 + t).collect()
}

fn h(v: i128) -> ExternalHash {
    ExternalHash::Int(v)
}

fn stored(hashes: &[i128], parent: Option<i128>, tokens: &[u32]) -> VllmEvent {
    VllmEvent::BlockStored {
        block_hashes: hashes.iter().map(|&v| h(v)).collect(),
        parent: parent.map(h),
        token_ids: tokens.to_vec(),
        block_size: BS,
        lora_id: None,
        lora_name: None,
        medium: None,
        group_idx: None,
        cache_kind: None,
        extra_keys: None,
    }
}

/// A store without tokens nor parent on `medium`: what the offloading connector sends.
fn offloaded(hashes: &[i128], medium: Medium) -> VllmEvent {
    VllmEvent::BlockStored {
        block_hashes: hashes.iter().map(|&v| h(v)).collect(),
        parent: None,
        token_ids: Vec::new(),
        block_size: BS,
        lora_id: None,
        lora_name: None,
        medium: Some(medium),
        group_idx: None,
        cache_kind: None,
        extra_keys: None,
    }
}

fn removed(hashes: &[i128], medium: Option<Medium>) -> VllmEvent {
    VllmEvent::BlockRemoved {
        block_hashes: hashes.iter().map(|&v| h(v)).collect(),
        medium,
        group_idx: None,
    }
}

fn apply(conv: &mut VllmConverter, event: VllmEvent) -> Vec<EventMessage> {
    let mut out = Vec::new();
    conv.apply_event(&event, &mut out);
    out
}

fn apply_all(conv: &mut VllmConverter, events: Vec<VllmEvent>) -> Vec<EventMessage> {
    let mut out = Vec::new();
    conv.apply_batch(
        &VllmBatch {
            ts: 0.0,
            events,
            dp_rank: None,
        },
        &mut out,
    );
    out
}

fn batch_of(msg: &EventMessage) -> (EventKind, Medium, Vec<SequenceHash>) {
    match &msg.payload {
        Payload::Batch(b) => {
            assert_eq!(b.policy, EmitPolicy::All);
            (b.kind, b.medium, b.hashes.clone())
        }
        other => panic!("not a batch: {other:?}"),
    }
}

fn create(medium: Medium, hashes: &[SequenceHash]) -> (EventKind, Medium, Vec<SequenceHash>) {
    (EventKind::Create, medium, hashes.to_vec())
}

fn remove(medium: Medium, hashes: &[SequenceHash]) -> (EventKind, Medium, Vec<SequenceHash>) {
    (EventKind::Remove, medium, hashes.to_vec())
}
