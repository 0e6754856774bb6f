//! [`Batcher`]: groups one emitter's events into batches of one kind.
//!
//! Two groups are open at a time, one of creates and one of removes. A batch goes out when the
//! groups together reach the size limit, when the oldest pending event is older than the time
//! limit (checked by the emitter's flusher), and on flush or shutdown.
//!
//! Invariant: the published order of the events of one hash is the order they happened in.
//! Pending removes always go out before pending creates, so a re-Create after a Remove is
//! safe as it is; a Remove of a hash whose Create is still pending first flushes both groups
//! (the balance map below remembers in which generation of the create group each hash was
//! announced, so this costs no extra lookup). Events of different hashes may be reordered
//! between the two groups; a set-based consumer ends in the same state either way.
//!
//! The manager calls its observers after releasing its locks, so two threads' notifications of
//! one hash can arrive swapped (thread A registers `h`, thread B evicts it, B's Remove arrives
//! first). The batcher therefore keeps a balance per announced hash (creates minus removes seen)
//! and announces only the changes of "held" (balance > 0): the early Remove takes the balance to
//! -1 and says nothing, the late Create brings it back to 0 and says nothing, which is what
//! happened. Once every notification has arrived the announced state equals the manager's.
//!
//! In a batch, creates are sorted by position ascending and removes by position descending, so
//! a radix-style consumer inserts parents first and removes children first (the order of
//! distinct hashes at one position is unspecified).

use std::time::Instant;

use hashbrown::HashMap;
use kvtier_core::{Medium, SeqHashBuilder, SequenceHash};

use crate::{EmitPolicy, EventBatch, EventKind, Payload};

/// Takes a group's hashes as one batch, sorted for a radix-style consumer.
fn take(
    hashes: &mut Vec<SequenceHash>,
    kind: EventKind,
    medium: Medium,
    policy: EmitPolicy,
) -> Option<Payload> {
    if hashes.is_empty() {
        return None;
    }
    // The next batch starts with room for as many: no regrowth on the hot path.
    let room = hashes.len();
    let mut hashes = std::mem::replace(hashes, Vec::with_capacity(room));
    match kind {
        EventKind::Create => hashes.sort_unstable_by_key(|h| h.position()),
        EventKind::Remove => hashes.sort_unstable_by_key(|h| std::cmp::Reverse(h.position())),
    }
    Some(Payload::Batch(EventBatch {
        medium,
        kind,
        hashes,
        policy,
    }))
}

/// What the batcher knows of one announced hash.
#[derive(Clone, Copy)]
struct Tally {
    /// Creates minus removes seen.
    balance: i32,
    /// The create-group generation its last announced Create went into.
    created_in: u32,
}

/// Pending events of one emitter.
pub(crate) struct Batcher {
    medium: Medium,
    policy: EmitPolicy,
    max_batch: usize,
    creates: Vec<SequenceHash>,
    removes: Vec<SequenceHash>,
    /// Bumped each time the create group is taken.
    create_gen: u32,
    oldest: Option<Instant>,
    /// Per hash with a non-zero balance.
    tallies: HashMap<SequenceHash, Tally, SeqHashBuilder>,
    /// Notifications absorbed because they arrived out of order.
    absorbed: u64,
}

impl Batcher {
    pub(crate) fn new(medium: Medium, policy: EmitPolicy, max_batch: usize) -> Self {
        Self {
            medium,
            policy,
            max_batch: max_batch.max(1),
            creates: Vec::new(),
            removes: Vec::new(),
            create_gen: 0,
            oldest: None,
            tallies: HashMap::default(),
            absorbed: 0,
        }
    }

    /// Notifications absorbed so far because they arrived out of order.
    pub(crate) fn absorbed(&self) -> u64 {
        self.absorbed
    }

    /// When the oldest pending event was pushed.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    pub(crate) fn pending(&self) -> usize {
        self.creates.len() + self.removes.len()
    }

    fn take_creates(&mut self) -> Option<Payload> {
        self.create_gen = self.create_gen.wrapping_add(1);
        take(
            &mut self.creates,
            EventKind::Create,
            self.medium,
            self.policy,
        )
    }

    /// Adds one event; batches that must go out now (conflict or size) are handed to `out` in
    /// the order they must be published.
    pub(crate) fn push(&mut self, kind: EventKind, hash: SequenceHash, out: &mut Vec<Payload>) {
        let gen_now = self.create_gen;
        let tally = self.tallies.entry(hash).or_insert(Tally {
            balance: 0,
            created_in: gen_now.wrapping_sub(1),
        });
        let before = tally.balance;
        tally.balance += match kind {
            EventKind::Create => 1,
            EventKind::Remove => -1,
        };
        let after = tally.balance;
        let created_in = tally.created_in;
        if before <= 0 && after > 0 {
            tally.created_in = gen_now;
        }
        if after == 0 {
            self.tallies.remove(&hash);
        }
        if (before > 0) == (after > 0) {
            self.absorbed += 1;
            return;
        }
        match kind {
            EventKind::Create => self.creates.push(hash),
            EventKind::Remove => {
                if created_in == gen_now && !self.creates.is_empty() {
                    // Its Create is pending: publish everything pending first (removes, which
                    // all precede the pending creates of their hashes, then creates).
                    self.flush(out);
                }
                self.removes.push(hash);
            }
        }
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        if self.pending() >= self.max_batch {
            self.flush(out);
        }
    }

    /// Hands every pending event to `out`: removes first, then creates (a hash pending in both
    /// was removed and then created again, in that order).
    pub(crate) fn flush(&mut self, out: &mut Vec<Payload>) {
        out.extend(take(
            &mut self.removes,
            EventKind::Remove,
            self.medium,
            self.policy,
        ));
        out.extend(self.take_creates());
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
        assert!(b.tallies.is_empty());
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

    proptest::proptest! {
        /// Whatever the size limit, the flush points and the swaps in delivery, the published
        /// stream alternates Create, Remove, ... per hash and ends in the true state.
        #[test]
        fn stream_alternates_and_ends_true(
            ops in proptest::collection::vec((0..6u64, proptest::bool::ANY), 1..200),
            swaps in proptest::collection::vec(0..200usize, 0..40),
            max_batch in 1..8usize,
            flushes in proptest::collection::vec(0..200usize, 0..10),
        ) {
            // The true order: toggle each hash's state.
            let mut live = [false; 6];
            let mut truth = vec![];
            for &(h, _) in &ops {
                let kind = if live[h as usize] { EventKind::Remove } else { EventKind::Create };
                live[h as usize] = !live[h as usize];
                truth.push((kind, SequenceHash::root(h)));
            }
            // Delivery: adjacent swaps, as notifications overtaking each other.
            let mut delivered = truth.clone();
            for &i in &swaps {
                if i + 1 < delivered.len() {
                    delivered.swap(i, i + 1);
                }
            }
            let mut b = Batcher::new(Medium::Gpu, EmitPolicy::All, max_batch);
            let mut out = vec![];
            for (i, &(kind, h)) in delivered.iter().enumerate() {
                b.push(kind, h, &mut out);
                if flushes.contains(&i) {
                    b.flush(&mut out);
                }
            }
            b.flush(&mut out);
            let mut announced = std::collections::HashMap::new();
            for p in &out {
                let Payload::Batch(batch) = p else { unreachable!() };
                for h in &batch.hashes {
                    let was = announced.insert(*h, batch.kind == EventKind::Create).unwrap_or(false);
                    proptest::prop_assert_eq!(was, batch.kind == EventKind::Remove);
                }
            }
            for (h, &l) in live.iter().enumerate() {
                let got = announced.get(&SequenceHash::root(h as u64)).copied().unwrap_or(false);
                proptest::prop_assert_eq!(got, l);
            }
        }
    }
}
