//! [`Batcher`]: groups one emitter's events into batches of one kind.
//!
//! Two groups are open at a time, one of creates and one of removes. A batch goes out when the
//! groups together reach the size limit, when the oldest pending event is older than the time
//! limit (checked by the emitter's flusher), and on flush or shutdown.
//!
//! Invariant: the published order of the events of one hash is the order they happened in. An
//! event whose hash is pending in the *other* group first flushes that group, so a Remove never
//! goes out before the Create it follows (nor a re-Create before the Remove it follows).
//! Events of different hashes may be reordered between the two groups; a set-based consumer
//! ends in the same state either way.
//!
//! The manager calls its observers after releasing its locks, so two threads' notifications of
//! one hash can arrive swapped (thread A registers `h`, thread B evicts it, B's Remove arrives
//! first). The batcher therefore keeps a balance per announced hash (creates minus removes seen)
//! and announces only the changes of "held" (balance > 0): the early Remove takes the balance to
//! -1 and says nothing, the late Create brings it back to 0 and says nothing, which is what
//! happened. Once every notification has arrived the announced state equals the manager's.
//!
//! In a batch, creates are sorted by position ascending and removes by position descending
//! (stable: events at one position keep their order), so a radix-style consumer inserts
//! parents first and removes children first.

use std::time::Instant;

use hashbrown::{HashMap, HashSet};
use kvtier_core::{Medium, SeqHashBuilder, SequenceHash};

use crate::{EmitPolicy, EventBatch, EventKind, Payload};

/// One open group of events of one kind.
#[derive(Default)]
struct Group {
    hashes: Vec<SequenceHash>,
    members: HashSet<SequenceHash, SeqHashBuilder>,
}

impl Group {
    fn take(&mut self, kind: EventKind, medium: Medium, policy: EmitPolicy) -> Option<Payload> {
        if self.hashes.is_empty() {
            return None;
        }
        self.members.clear();
        let mut hashes = std::mem::take(&mut self.hashes);
        match kind {
            EventKind::Create => hashes.sort_by_key(|h| h.position()),
            EventKind::Remove => hashes.sort_by_key(|h| std::cmp::Reverse(h.position())),
        }
        Some(Payload::Batch(EventBatch {
            medium,
            kind,
            hashes,
            policy,
        }))
    }
}

/// Pending events of one emitter.
pub(crate) struct Batcher {
    medium: Medium,
    policy: EmitPolicy,
    max_batch: usize,
    creates: Group,
    removes: Group,
    oldest: Option<Instant>,
    /// Creates minus removes seen, per hash; zero entries are dropped.
    balance: HashMap<SequenceHash, i32, SeqHashBuilder>,
    /// Notifications absorbed because they arrived out of order.
    absorbed: u64,
}

impl Batcher {
    pub(crate) fn new(medium: Medium, policy: EmitPolicy, max_batch: usize) -> Self {
        Self {
            medium,
            policy,
            max_batch: max_batch.max(1),
            creates: Group::default(),
            removes: Group::default(),
            oldest: None,
            balance: HashMap::default(),
            absorbed: 0,
        }
    }

    /// Notifications absorbed so far because they arrived out of order.
    pub(crate) fn absorbed(&self) -> u64 {
        self.absorbed
    }

    /// Records one notification; whether it changes what the instance is known to hold.
    fn settle(&mut self, kind: EventKind, hash: SequenceHash) -> bool {
        let delta = match kind {
            EventKind::Create => 1,
            EventKind::Remove => -1,
        };
        let entry = self.balance.entry(hash).or_insert(0);
        let before = *entry;
        *entry += delta;
        let after = *entry;
        if after == 0 {
            self.balance.remove(&hash);
        }
        let changes = (before > 0) != (after > 0);
        if !changes {
            self.absorbed += 1;
        }
        changes
    }

    /// When the oldest pending event was pushed.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    pub(crate) fn pending(&self) -> usize {
        self.creates.hashes.len() + self.removes.hashes.len()
    }

    /// Adds one event; batches that must go out now (conflict or size) are handed to `out` in
    /// the order they must be published.
    pub(crate) fn push(&mut self, kind: EventKind, hash: SequenceHash, out: &mut Vec<Payload>) {
        if !self.settle(kind, hash) {
            return;
        }
        let (mine, other, other_kind) = match kind {
            EventKind::Create => (&mut self.creates, &mut self.removes, EventKind::Remove),
            EventKind::Remove => (&mut self.removes, &mut self.creates, EventKind::Create),
        };
        if other.members.contains(&hash) {
            out.extend(other.take(other_kind, self.medium, self.policy));
        }
        mine.hashes.push(hash);
        mine.members.insert(hash);
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        if self.pending() >= self.max_batch {
            self.flush(out);
        }
    }

    /// Hands every pending event to `out`: removes first, then creates (the two groups share
    /// no hash, so their order does not matter to a consumer).
    pub(crate) fn flush(&mut self, out: &mut Vec<Payload>) {
        out.extend(
            self.removes
                .take(EventKind::Remove, self.medium, self.policy),
        );
        out.extend(
            self.creates
                .take(EventKind::Create, self.medium, self.policy),
        );
        self.oldest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u32, seed: u64) -> Vec<SequenceHash> {
        let mut v = vec![SequenceHash::root(seed)];
        for i in 1..n {
            let p = v[i as usize - 1];
            v.push(SequenceHash::child_of(p, seed * 1000 + i as u64));
        }
        v
    }

    fn kinds(out: &[Payload]) -> Vec<(EventKind, Vec<u32>)> {
        out.iter()
            .map(|p| match p {
                Payload::Batch(b) => (b.kind, b.hashes.iter().map(|h| h.position()).collect()),
                other => panic!("unexpected payload {other:?}"),
            })
            .collect()
    }

    #[test]
    fn creates_ascend_and_removes_descend() {
        let c = chain(4, 1);
        let d = chain(3, 2);
        let mut b = Batcher::new(Medium::Gpu, EmitPolicy::All, 100);
        let mut out = vec![];
        for &h in &d {
            b.push(EventKind::Create, h, &mut out);
        }
        b.flush(&mut out);
        out.clear();
        for h in [c[2], c[0], c[3], c[1]] {
            b.push(EventKind::Create, h, &mut out);
        }
        for h in [d[0], d[2], d[1]] {
            b.push(EventKind::Remove, h, &mut out);
        }
        assert!(out.is_empty());
        b.flush(&mut out);
        assert_eq!(
            kinds(&out),
            [
                (EventKind::Remove, vec![2, 1, 0]),
                (EventKind::Create, vec![0, 1, 2, 3])
            ]
        );
        assert_eq!(b.pending(), 0);
        assert!(b.oldest().is_none());
    }

    #[test]
    fn remove_of_a_pending_create_flushes_the_create_first() {
        let c = chain(2, 3);
        let mut b = Batcher::new(Medium::Cpu, EmitPolicy::All, 100);
        let mut out = vec![];
        b.push(EventKind::Create, c[0], &mut out);
        b.push(EventKind::Create, c[1], &mut out);
        b.push(EventKind::Remove, c[1], &mut out);
        assert_eq!(kinds(&out), [(EventKind::Create, vec![0, 1])]);
        // And a re-create of the removed hash flushes the remove first.
        b.push(EventKind::Create, c[1], &mut out);
        b.flush(&mut out);
        assert_eq!(
            kinds(&out),
            [
                (EventKind::Create, vec![0, 1]),
                (EventKind::Remove, vec![1]),
                (EventKind::Create, vec![1])
            ]
        );
    }

    #[test]
    fn swapped_notifications_cancel() {
        let c = chain(1, 5);
        let mut b = Batcher::new(Medium::Gpu, EmitPolicy::All, 100);
        let mut out = vec![];
        // Truth: create, remove, create. Arrival: remove, create, create.
        b.push(EventKind::Remove, c[0], &mut out);
        b.push(EventKind::Create, c[0], &mut out);
        assert_eq!(b.pending(), 0);
        b.push(EventKind::Create, c[0], &mut out);
        b.flush(&mut out);
        assert_eq!(kinds(&out), [(EventKind::Create, vec![0])]);
        assert_eq!(b.absorbed(), 2);
        // Truth: create, remove, create, remove. Arrival: create, create, remove, remove.
        let mut b = Batcher::new(Medium::Gpu, EmitPolicy::All, 100);
        let mut out = vec![];
        for k in [
            EventKind::Create,
            EventKind::Create,
            EventKind::Remove,
            EventKind::Remove,
        ] {
            b.push(k, c[0], &mut out);
        }
        b.flush(&mut out);
        assert_eq!(
            kinds(&out),
            [(EventKind::Create, vec![0]), (EventKind::Remove, vec![0])]
        );
        assert!(b.balance.is_empty());
    }

    #[test]
    fn size_limit_flushes() {
        let c = chain(5, 4);
        let mut b = Batcher::new(Medium::Gpu, EmitPolicy::All, 2);
        let mut out = vec![];
        for &h in &c {
            b.push(EventKind::Create, h, &mut out);
        }
        assert_eq!(
            kinds(&out),
            [
                (EventKind::Create, vec![0, 1]),
                (EventKind::Create, vec![2, 3])
            ]
        );
        assert_eq!(b.pending(), 1);
        assert!(b.oldest().is_some());
    }
}
