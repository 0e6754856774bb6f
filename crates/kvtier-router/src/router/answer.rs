//! The router's read side: routing answers ([`Router::query`]), counters and the list of
//! known instances. Everything here takes `&self`, so a service answers queries under a read
//! lock while nothing is being applied.

use std::sync::atomic::Ordering;

use kvtier_core::{BlockHasher, ExtraKeys, HashError, HashScheme, Medium, SequenceHash};
use kvtier_events::InstanceId;

use super::{Router, RouterStats};
use crate::index::QueryScratch;
use crate::query::{InstanceOverlap, MediumOverlap, RouteAnswer};

impl Router {
    /// The hash scheme queries given as tokens are hashed with.
    pub fn hash_scheme(&self) -> HashScheme {
        self.config.scheme
    }

    /// The sequence hashes of `tokens` under the router's hash scheme (only full blocks).
    ///
    /// # Errors
    ///
    /// [`HashError`] for an invalid block size or extra keys.
    pub fn hashes_for(
        &self,
        tokens: &[u32],
        block_size: usize,
        extra: ExtraKeys,
    ) -> Result<Vec<SequenceHash>, HashError> {
        Ok(BlockHasher::new(block_size, self.config.scheme, extra)?.sequence_hashes(tokens))
    }

    /// For a request's sequence hashes: every instance holding a prefix of it, per medium,
    /// and the best instance.
    ///
    /// The best instance has the highest score: its weighted overlap (each medium's `matched`
    /// times its weight, the maximum over media) minus the load weight times its load (see
    /// [`RouterBuilder::with_load_weight`](crate::RouterBuilder::with_load_weight); 0 by
    /// default); ties go to the lower load, then the lower id. When no instance holds
    /// anything, the least loaded known instance is best.
    pub fn query(&self, hashes: &[SequenceHash], scratch: &mut QueryScratch) -> RouteAnswer {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let instances = &self.instances;
        let found = self
            .index
            .query(hashes, |slot| instances.is_sparse(slot), scratch);
        let mut overlaps: Vec<InstanceOverlap> = Vec::new();
        for o in found {
            let Some(state) = instances.get(o.slot) else {
                continue;
            };
            if overlaps.last().is_none_or(|l| l.instance != state.id) {
                overlaps.push(InstanceOverlap::new(state.id, state.policy));
            }
            let Some(last) = overlaps.last_mut() else {
                continue;
            };
            last.media[o.medium.index()] = MediumOverlap {
                matched: o.matched,
                upper: o.upper,
            };
        }
        let load = &*self.config.load;
        let lw = self.config.load_weight;
        for o in &mut overlaps {
            o.load = load.load(o.instance);
            o.score = Medium::ALL
                .iter()
                .map(|m| self.config.weights[m.index()] * o.media[m.index()].matched as f64)
                .fold(0.0, f64::max)
                - lw * o.load;
        }
        // Instances holding nothing compete on load alone: score 0 - weight * load. They
        // matter only when load counts, or when nobody holds anything.
        let mut best: Option<(f64, f64, InstanceId)> = overlaps
            .iter()
            .map(|o| (o.score, o.load, o.instance))
            .max_by(cmp_candidates);
        if best.is_none() || lw > 0.0 {
            for (_, s) in instances.iter() {
                let l = load.load(s.id);
                let cand = (-lw * l, l, s.id);
                if best.is_none_or(|b| cmp_candidates(&cand, &b).is_gt()) {
                    best = Some(cand);
                }
            }
        }
        let best = best.map(|b| b.2);
        RouteAnswer {
            blocks: hashes.len(),
            overlaps,
            best,
        }
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            queries: self.queries.load(Ordering::Relaxed),
            instances: self.instances.len() as u64,
            blocks: self.index.len() as u64,
            entries: self.index.entries() as u64,
            ..self.stats
        }
    }

    /// The known instances with the next event id each expects and its blocks per medium.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let mut out: Vec<InstanceInfo> = self
            .instances
            .iter()
            .map(|(slot, s)| InstanceInfo {
                instance: s.id,
                next_event_id: s.next_id,
                blocks: self.index.blocks_of(slot),
                buffered: s.early.len(),
                sparse: s.policy.is_sparse(),
            })
            .collect();
        out.sort_by_key(|i| i.instance);
        out
    }

    /// The id of the next message the router will apply from `instance`: for a known instance
    /// the one after the last applied, for a recently retired one the one after its last id
    /// (anything at or below that is ignored as stale); `None` for an instance the router
    /// does not know.
    ///
    /// A converter that numbers an engine's messages itself (the vLLM source after a restart
    /// from a snapshot) starts at this id, so that none of its messages is discarded as a
    /// duplicate and none opens a gap.
    pub fn next_event_id(&self, instance: InstanceId) -> Option<u64> {
        match self.instances.slot_of(instance) {
            Some(slot) => self.instances.get(slot).map(|s| s.next_id),
            None => self
                .instances
                .retired_at(instance)
                .map(|last| last.saturating_add(1)),
        }
    }
}

/// Orders (score, load, id) candidates: higher score, then lower load, then lower id wins.
fn cmp_candidates(a: &(f64, f64, InstanceId), b: &(f64, f64, InstanceId)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0)
        .then(b.1.total_cmp(&a.1))
        .then(b.2.cmp(&a.2))
}

/// One known instance (see [`Router::instances`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The instance.
    pub instance: InstanceId,
    /// The id of the next message the router will apply from it.
    pub next_event_id: u64,
    /// Blocks held per medium, in [`Medium::ALL`] order.
    pub blocks: [usize; 4],
    /// Early messages waiting for a gap to close.
    pub buffered: usize,
    /// Whether it announces only power-of-two positions.
    pub sparse: bool,
}
