//! [`IndexLists`]: `N` intrusive doubly linked lists over dense block indices, sharing one
//! preallocated link array.
//!
//! This is the allocation-free core of the FIFO, LRU and multi-level LRU policies. Every index
//! in `0..capacity` is either *detached* or a member of exactly one of the `N` lists; the links
//! live in one array indexed by the block, so push, unlink and pop are O(1) and touch one or two
//! small records. Nothing here allocates after [`IndexLists::new`].
//!
//! ```text
//!   list k:  head -> a <-> b <-> c <- tail      (front = oldest, back = newest)
//!   links[b] = { prev: a, next: c, list: k }    links[x] = { .., list: DETACHED } when free
//! ```
//!
//! # Invariants
//! - `links[i].list == DETACHED` exactly when `i` is in no list.
//! - Following `next` from a list's head visits `len` members and ends at its tail.
//! - Out-of-range indices are never members: `contains` is `false`, `unlink` is a no-op, and
//!   `push_back` ignores them (callers check the range once at their own boundary).

/// "No index" in a link (the end of a list).
pub(crate) const NIL: u32 = u32::MAX;

/// `Link::list` value of an index that is in no list.
const DETACHED: u8 = u8::MAX;

/// Per-index links: neighbours and the list the index belongs to.
#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    list: u8,
}

const DETACHED_LINK: Link = Link {
    prev: NIL,
    next: NIL,
    list: DETACHED,
};

/// Head, tail and length of one list.
#[derive(Clone, Copy, Debug)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY_ENDS: Ends = Ends {
    head: NIL,
    tail: NIL,
    len: 0,
};

/// `N` intrusive doubly linked lists over indices `0..capacity` (see the module docs).
#[derive(Debug)]
pub(crate) struct IndexLists<const N: usize> {
    links: Box<[Link]>,
    ends: [Ends; N],
}

impl<const N: usize> IndexLists<N> {
    /// Empty lists for indices `0..capacity`; `capacity` is clamped below [`NIL`].
    pub(crate) fn new(capacity: usize) -> Self {
        const { assert!(N > 0 && N < DETACHED as usize, "1..255 lists") };
        let capacity = capacity.min(NIL as usize);
        Self {
            links: vec![DETACHED_LINK; capacity].into_boxed_slice(),
            ends: [EMPTY_ENDS; N],
        }
    }

    /// Whether `index` is in range, i.e. may be pushed.
    #[inline]
    pub(crate) fn in_range(&self, index: u32) -> bool {
        (index as usize) < self.links.len()
    }

    /// The list `index` belongs to, if any.
    #[inline]
    pub(crate) fn list_of(&self, index: u32) -> Option<usize> {
        match self.links.get(index as usize) {
            Some(l) if l.list != DETACHED => Some(l.list as usize),
            _ => None,
        }
    }

    /// Whether `index` is in one of the lists.
    #[inline]
    pub(crate) fn contains(&self, index: u32) -> bool {
        self.list_of(index).is_some()
    }

    /// Members of list `list`.
    #[inline]
    pub(crate) fn len(&self, list: usize) -> usize {
        self.ends.get(list).map_or(0, |e| e.len)
    }

    /// Appends a detached, in-range `index` at the back (newest end) of list `list`.
    ///
    /// An index that is already a member is moved; an out-of-range index or list is ignored.
    #[inline]
    pub(crate) fn push_back(&mut self, list: usize, index: u32) {
        if list >= N || !self.in_range(index) {
            return;
        }
        self.unlink(index);
        let i = index as usize;
        let ends = &mut self.ends[list];
        let old_tail = ends.tail;
        self.links[i] = Link {
            prev: old_tail,
            next: NIL,
            // `list < N < DETACHED`, so the cast is exact.
            list: list as u8,
        };
        if old_tail == NIL {
            ends.head = index;
        } else {
            self.links[old_tail as usize].next = index;
        }
        ends.tail = index;
        ends.len += 1;
    }

    /// Detaches `index` from whatever list holds it; returns that list, or `None` if detached.
    #[inline]
    pub(crate) fn unlink(&mut self, index: u32) -> Option<usize> {
        let link = *self.links.get(index as usize)?;
        if link.list == DETACHED {
            return None;
        }
        let list = link.list as usize;
        let ends = &mut self.ends[list];
        if link.prev == NIL {
            ends.head = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next == NIL {
            ends.tail = link.prev;
        } else {
            self.links[link.next as usize].prev = link.prev;
        }
        ends.len -= 1;
        self.links[index as usize] = DETACHED_LINK;
        Some(list)
    }

    /// The front (oldest) member of list `list`, without detaching it.
    #[inline]
    pub(crate) fn front(&self, list: usize) -> Option<u32> {
        let head = self.ends.get(list)?.head;
        (head != NIL).then_some(head)
    }

    /// Detaches and returns the front (oldest) member of list `list`.
    #[inline]
    pub(crate) fn pop_front(&mut self, list: usize) -> Option<u32> {
        let head = self.ends.get(list)?.head;
        if head == NIL {
            return None;
        }
        self.unlink(head);
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<const N: usize>(l: &mut IndexLists<N>, list: usize) -> Vec<u32> {
        std::iter::from_fn(|| l.pop_front(list)).collect()
    }

    #[test]
    fn push_unlink_pop_keep_order() {
        let mut l = IndexLists::<2>::new(8);
        for i in [3, 1, 4, 5] {
            l.push_back(0, i);
        }
        l.push_back(1, 7);
        assert_eq!(l.unlink(4), Some(0));
        assert_eq!(l.unlink(4), None);
        l.push_back(0, 3); // moves to the back
        assert_eq!(l.list_of(7), Some(1));
        assert_eq!(l.len(0), 3);
        assert_eq!(l.front(0), Some(1));
        assert_eq!(drain(&mut l, 0), vec![1, 5, 3]);
        assert_eq!(drain(&mut l, 1), vec![7]);
        assert!(!l.contains(3));
    }

    #[test]
    fn out_of_range_is_ignored() {
        let mut l = IndexLists::<1>::new(2);
        l.push_back(0, 2);
        l.push_back(5, 0);
        assert_eq!(l.len(0), 0);
        assert_eq!(l.unlink(NIL), None);
        assert_eq!(l.pop_front(3), None);
    }
}
