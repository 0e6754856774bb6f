//! One registry entry: per-tier presence counts packed into a `u64`, plus an optional boxed
//! overflow (unusual counts and attachments).
//!
//! Presence is counted, not flagged: each tier's count is +1 per `registered` and −1 per
//! `removed` notification, and the tier holds the hash while its count is positive. Managers
//! notify after releasing their own lock, so notifications about one hash can arrive out of
//! order (a removal before the registration it follows). Increments commute, so once the
//! managers are quiet every count equals the number of that tier's managers holding the hash,
//! whatever order the notifications took. A bit flag would not: a late `registered` would leave
//! an evicted hash marked present forever.
//!
//! Invariants:
//! - a tier's count is 1 exactly when its bit in `ones` is set and it has no `counts` record;
//!   any other non-zero count (0 > c, or c > 1) is a `counts` record with its bit clear;
//! - `extra` is `Some` only while it holds a count record or an attachment, so an entry that
//!   is only present somewhere costs 16 bytes beside its key and no allocation.

use std::any::{Any, TypeId};

use crate::sync::Arc;

/// One attached value. Values of one type on one hash are either a single unique one or any
/// number of multiple ones, never both.
pub(crate) struct Attached {
    pub(crate) ty: TypeId,
    pub(crate) unique: bool,
    pub(crate) value: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
pub(crate) struct Extra {
    /// Tiers whose count is neither 0 nor 1: `(tier index, count)`.
    counts: Vec<(u8, i32)>,
    pub(crate) attachments: Vec<Attached>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.attachments.is_empty()
    }
}

pub(crate) struct Entry {
    /// Bit `i` set: tier `i` has count exactly 1.
    ones: u64,
    extra: Option<Box<Extra>>,
}

impl Entry {
    pub(crate) const EMPTY: Entry = Entry {
        ones: 0,
        extra: None,
    };

    /// The tiers whose count is positive.
    #[inline]
    pub(crate) fn mask(&self) -> u64 {
        let mut m = self.ones;
        if let Some(x) = &self.extra {
            for &(t, c) in &x.counts {
                if c > 0 {
                    m |= 1u64 << t;
                }
            }
        }
        m
    }

    fn count(&self, tier: u8) -> i32 {
        if self.ones & (1u64 << tier) != 0 {
            return 1;
        }
        self.extra
            .as_ref()
            .and_then(|x| x.counts.iter().find(|&&(t, _)| t == tier))
            .map_or(0, |&(_, c)| c)
    }

    /// Adds `delta` to `tier`'s count.
    #[inline]
    pub(crate) fn adjust(&mut self, tier: u8, delta: i32) {
        let bit = 1u64 << tier;
        // Common case: no overflow records, the count goes 0 -> 1 or 1 -> 0.
        if self.extra.as_ref().is_none_or(|x| x.counts.is_empty()) {
            let set = self.ones & bit != 0;
            if delta == 1 && !set {
                self.ones |= bit;
                return;
            }
            if delta == -1 && set {
                self.ones &= !bit;
                return;
            }
        }
        let c = self.count(tier).saturating_add(delta);
        self.ones &= !bit;
        if let Some(x) = self.extra.as_mut() {
            x.counts.retain(|&(t, _)| t != tier);
        }
        match c {
            0 => {}
            1 => self.ones |= bit,
            _ => self.extra_mut().counts.push((tier, c)),
        }
        self.shrink();
    }

    /// The overflow box, created if needed.
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub(crate) fn attachments(&self) -> &[Attached] {
        self.extra.as_ref().map_or(&[], |x| &x.attachments)
    }

    pub(crate) fn has_attachments(&self) -> bool {
        !self.attachments().is_empty()
    }

    /// Removes and returns every attachment (the caller drops them after unlocking).
    pub(crate) fn take_attachments(&mut self) -> Vec<Attached> {
        let out = self
            .extra
            .as_mut()
            .map(|x| std::mem::take(&mut x.attachments))
            .unwrap_or_default();
        self.shrink();
        out
    }

    /// Drops the overflow box once it is empty (restores the invariant).
    pub(crate) fn shrink(&mut self) {
        if self.extra.as_ref().is_some_and(|x| x.is_empty()) {
            self.extra = None;
        }
    }

    /// Whether the entry records nothing and can leave the map.
    pub(crate) fn is_vacant(&self) -> bool {
        self.ones == 0 && self.extra.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_only_entry_has_no_box() {
        let mut e = Entry::EMPTY;
        e.adjust(0, 1);
        e.adjust(3, 1);
        assert_eq!(e.mask(), 0b1001);
        assert!(e.extra.is_none());
        e.adjust(0, -1);
        e.adjust(3, -1);
        assert!(e.is_vacant());
    }

    #[test]
    fn reordered_notifications_commute() {
        // removal observed before the registration it follows
        let mut e = Entry::EMPTY;
        e.adjust(1, -1);
        assert_eq!(e.mask(), 0);
        assert!(!e.is_vacant(), "a pending -1 must be remembered");
        e.adjust(1, 1);
        assert!(e.is_vacant());

        // two managers of one tier
        let mut e = Entry::EMPTY;
        e.adjust(2, 1);
        e.adjust(2, 1);
        e.adjust(2, -1);
        assert_eq!(e.mask(), 0b100);
        assert!(e.extra.is_none(), "count back to 1 lives in the bit");
        e.adjust(2, -1);
        assert!(e.is_vacant());
    }

    #[test]
    fn entry_is_two_words() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }
}
