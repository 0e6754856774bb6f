//! Property: whatever the network does to the messages of several instances (loses, repeats,
//! reorders them), once each instance's latest message has arrived the router answers every
//! query exactly as a brute-force recomputation from each instance's live set does.

use std::collections::HashSet;
use std::sync::Arc;

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload, Publisher,
};
use kvtier_router::{QueryScratch, Router};
use proptest::prelude::*;

const INSTANCES: usize = 3;
const MEDIA: [Medium; 2] = [Medium::Gpu, Medium::Cpu];

fn chains() -> Vec<Vec<SequenceHash>> {
    // Four chains; 0 and 1 share their first three blocks.
    let mut out = vec![];
    for seed in 0..4u64 {
        let mut v = vec![SequenceHash::root(if seed == 1 { 0 } else { seed })];
        for i in 1..8u64 {
            let parent = v[i as usize - 1];
            let shared = seed == 1 && i < 3;
            let salt = if shared { 0 } else { seed };
            v.push(SequenceHash::child_of(parent, salt * 1000 + i));
        }
        out.push(v);
    }
    out
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        inst: usize,
        medium: usize,
        chain: usize,
        len: usize,
    },
    Remove {
        inst: usize,
        medium: usize,
        chain: usize,
        from: usize,
    },
    Clear {
        inst: usize,
        medium: Option<usize>,
    },
    Shutdown {
        inst: usize,
    },
    Deliver {
        pick: usize,
        duplicate: bool,
    },
    Drop {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..INSTANCES;
    prop_oneof![
        4 => (i.clone(), 0..2usize, 0..4usize, 1..=8usize)
            .prop_map(|(inst, medium, chain, len)| Op::Create { inst, medium, chain, len }),
        2 => (i.clone(), 0..2usize, 0..4usize, 0..8usize)
            .prop_map(|(inst, medium, chain, from)| Op::Remove { inst, medium, chain, from }),
        1 => (i.clone(), prop::option::of(0..2usize)).prop_map(|(inst, medium)| Op::Clear { inst, medium }),
        1 => i.prop_map(|inst| Op::Shutdown { inst }),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        2 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
    ]
}

struct Model {
    live: Vec<[HashSet<SequenceHash>; 2]>,
    publishers: Vec<Publisher>,
    network: Vec<Arc<EventMessage>>,
}

impl Model {
    fn publish(&mut self, inst: usize, payload: Payload) {
        let p = &self.publishers[inst];
        if p.is_shut_down() {
            return;
        }
        match &payload {
            Payload::Batch(b) => {
                let m = MEDIA.iter().position(|&m| m == b.medium).unwrap();
                for h in &b.hashes {
                    match b.kind {
                        EventKind::Create => self.live[inst][m].insert(*h),
                        EventKind::Remove => self.live[inst][m].remove(h),
                    };
                }
            }
            Payload::Cleared { medium: Some(md) } => {
                let m = MEDIA.iter().position(|x| x == md).unwrap();
                self.live[inst][m].clear();
            }
            Payload::Heartbeat => {}
            Payload::Cleared { medium: None } | Payload::Shutdown => {
                self.live[inst].iter_mut().for_each(HashSet::clear)
            }
        }
        let id = p.publish(payload).unwrap();
        let msg = kvtier_events::ReplaySource::replay(p, id..=id).unwrap();
        self.network.push(msg[0].clone());
    }
}

fn brute(model: &Model, inst: usize, medium: usize, q: &[SequenceHash]) -> u32 {
    q.iter()
        .take_while(|h| model.live[inst][medium].contains(h))
        .count() as u32
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn router_matches_brute_force(ops in prop::collection::vec(op(), 1..80),
                                  capacity in 1..6usize) {
        let chains = chains();
        let mut router = Router::builder().with_max_early(64).build();
        let mut model = Model {
            live: (0..INSTANCES).map(|_| Default::default()).collect(),
            publishers: (0..INSTANCES)
                .map(|i| Publisher::with_replay_capacity(InstanceId(100 + i as u128), capacity))
                .collect(),
            network: vec![],
        };
        for (i, p) in model.publishers.iter().enumerate() {
            router.attach_source(InstanceId(100 + i as u128), Arc::new(p.clone()));
        }
        for op in ops {
            match op {
                Op::Create { inst, medium, chain, len } => model.publish(inst, Payload::Batch(EventBatch {
                    medium: MEDIA[medium],
                    kind: EventKind::Create,
                    hashes: chains[chain][..len].to_vec(),
                    policy: EmitPolicy::All,
                })),
                Op::Remove { inst, medium, chain, from } => model.publish(inst, Payload::Batch(EventBatch {
                    medium: MEDIA[medium],
                    kind: EventKind::Remove,
                    hashes: chains[chain][from..].iter().rev().copied().collect(),
                    policy: EmitPolicy::All,
                })),
                Op::Clear { inst, medium } => model.publish(inst, Payload::Cleared { medium: medium.map(|m| MEDIA[m]) }),
                Op::Shutdown { inst } => model.publish(inst, Payload::Shutdown),
                Op::Deliver { pick, duplicate } => {
                    if !model.network.is_empty() {
                        let i = pick % model.network.len();
                        let m = if duplicate { model.network[i].clone() } else { model.network.swap_remove(i) };
                        router.apply(m);
                    }
                }
                Op::Drop { pick } => {
                    if !model.network.is_empty() {
                        let i = pick % model.network.len();
                        model.network.swap_remove(i);
                    }
                }
            }
        }
        // The latest message of each instance arrives (anything before it may be lost).
        for p in &model.publishers {
            let last = p.last_event_id();
            if last > 0 {
                let m = kvtier_events::ReplaySource::replay(p, last..=last).unwrap();
                router.apply(m[0].clone());
            }
        }
        let mut scratch = QueryScratch::default();
        for chain in &chains {
            for n in 1..=chain.len() {
                let q = &chain[..n];
                let answer = router.query(q, &mut scratch);
                for inst in 0..INSTANCES {
                    for (m, medium) in MEDIA.iter().enumerate() {
                        let want = brute(&model, inst, m, q);
                        let got = answer.overlaps.iter()
                            .find(|o| o.instance == InstanceId(100 + inst as u128))
                            .map_or(0, |o| o.matched(*medium));
                        prop_assert_eq!(got, want, "instance {} medium {:?} query {} blocks", inst, medium, n);
                    }
                }
            }
        }
        for (inst, p) in model.publishers.iter().enumerate() {
            let info = router.instances().into_iter().find(|i| i.instance == InstanceId(100 + inst as u128));
            if p.is_shut_down() {
                prop_assert!(info.is_none());
            } else if let Some(info) = info {
                prop_assert_eq!(info.blocks[0], model.live[inst][0].len());
                prop_assert_eq!(info.blocks[1], model.live[inst][1].len());
                prop_assert_eq!(info.next_event_id, p.last_event_id() + 1);
            }
        }
    }
}
