//! [`Lines`]: the memory under the holder table's buckets.
//!
//! The index is bound by address translation, not arithmetic: with hundreds of instances the
//! table is hundreds of megabytes and every block looked up lands on its own 4 KiB page, so
//! each lookup pays a page walk. Large tables therefore live in an anonymous mapping advised
//! for transparent huge pages (`madvise(MADV_HUGEPAGE)`; honoured where the kernel's THP mode is
//! `always` or `madvise`), which covers the same table with 512 times fewer translations.
//! Small tables, and any platform or failure where the mapping is not available, use an
//! ordinary vector. Either way the contents are the same cache lines; only where they live
//! differs.

use std::ops::{Deref, DerefMut};

use super::table::Line;

/// Tables at least this large (bytes) are mapped and advised for huge pages: below it a table
/// fits in a few ordinary pages' worth of translations anyway.
const HUGE_FROM_BYTES: usize = 4 << 20;

/// A fixed-length array of cache lines.
#[derive(Debug, Default)]
pub(super) struct Lines(Store);

#[derive(Debug, Default)]
enum Store {
    #[default]
    Empty,
    Vec(Vec<Line>),
    Mapped(memmap2::MmapMut),
}

impl Lines {
    /// `n` free lines.
    pub(super) fn new(n: usize) -> Self {
        if n == 0 {
            return Self(Store::Empty);
        }
        let bytes = n * std::mem::size_of::<Line>();
        if bytes >= HUGE_FROM_BYTES
            && let Some(mut lines) = Self::mapped(bytes)
        {
            lines.fill(Line::FREE);
            return lines;
        }
        Self(Store::Vec(vec![Line::FREE; n]))
    }

    /// An anonymous mapping of `bytes`, advised for huge pages; `None` if the system refuses.
    fn mapped(bytes: usize) -> Option<Self> {
        let map = memmap2::MmapMut::map_anon(bytes).ok()?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: where it is not honoured the table works the same, just slower.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        // A mapping starts on a page boundary, which satisfies the lines' 64-byte alignment,
        // and `bytes` is a whole number of lines; anything else is refused, not cast.
        bytemuck::try_cast_slice::<u8, Line>(&map[..]).ok()?;
        Some(Self(Store::Mapped(map)))
    }
}

impl Deref for Lines {
    type Target = [Line];
    #[inline]
    fn deref(&self) -> &[Line] {
        match &self.0 {
            Store::Empty => &[],
            Store::Vec(v) => v,
            // Checked castable when the mapping was made; the mapping never moves.
            Store::Mapped(m) => bytemuck::cast_slice(&m[..]),
        }
    }
}

impl DerefMut for Lines {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Line] {
        match &mut self.0 {
            Store::Empty => &mut [],
            Store::Vec(v) => v,
            Store::Mapped(m) => bytemuck::cast_slice_mut(&mut m[..]),
        }
    }
}

impl Clone for Lines {
    fn clone(&self) -> Self {
        let mut copy = Self::new(self.len());
        copy.copy_from_slice(self);
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_tables_start_free_and_clone() {
        for n in [0, 1, 3, (HUGE_FROM_BYTES / 64) + 5] {
            let mut lines = Lines::new(n);
            assert_eq!(lines.len(), n);
            assert!(
                lines
                    .iter()
                    .all(|l| l.0.iter().all(|s| s.holders[0] == u32::MAX))
            );
            if n > 0 {
                lines[n - 1].0[1].key = 7;
                let copy = lines.clone();
                assert_eq!(copy[n - 1].0[1].key, 7);
                assert_eq!(copy.len(), n);
            }
        }
        let large = Lines::new(HUGE_FROM_BYTES / 64);
        assert!(
            matches!(large.0, Store::Mapped(_)),
            "large tables are mapped here"
        );
    }
}
