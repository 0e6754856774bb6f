//! Page-aligned caller buffers for copies in and out of the arena.
//!
//! Every arena slot starts on a page. A copy between a slot and a buffer that sits a few bytes
//! off a page boundary (a large `Vec<u8>` comes from `mmap` 16 bytes past one) takes the CPU's
//! slow path on the machines kvtier runs on: measured by `benches/arena.rs`, reading 256 KiB
//! blocks out of a cold arena ran at about half the speed into a `Vec` as into a page-aligned
//! buffer. [`PageBuf`] is that buffer, with no `unsafe`: an over-allocated `Vec` viewed from
//! its first page boundary.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::ArenaError;
use crate::layout::PAGE_SIZE;

/// A zeroed, pre-faulted byte buffer whose first byte is page-aligned.
///
/// # Examples
///
/// ```
/// use kvtier_storage::arena::PageBuf;
/// use kvtier_storage::layout::PAGE_SIZE;
///
/// let mut buf = PageBuf::zeroed(10_000)?;
/// assert_eq!(buf.len(), 10_000);
/// assert_eq!(buf.as_ptr().addr() % PAGE_SIZE, 0);
/// buf[9_999] = 1;
/// # Ok::<(), kvtier_storage::arena::ArenaError>(())
/// ```
pub struct PageBuf {
    buf: Vec<u8>,
    offset: usize,
    len: usize,
}

impl PageBuf {
    /// A buffer of `len` zero bytes starting on a page boundary. Allocates `len + PAGE_SIZE - 1`
    /// bytes and writes every one, so no later copy into it takes a page fault.
    ///
    /// # Errors
    ///
    /// [`ArenaError::AllocationFailed`] when the size overflows or the allocator refuses it.
    pub fn zeroed(len: usize) -> Result<Self, ArenaError> {
        let failed = ArenaError::AllocationFailed { bytes: len };
        let total = len.checked_add(PAGE_SIZE - 1).ok_or(failed.clone())?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(total).map_err(|_| failed)?;
        // A memset, not calloc: it faults every page in now.
        buf.resize(total, 0);
        let addr = buf.as_ptr().addr();
        let offset = (PAGE_SIZE - addr % PAGE_SIZE) % PAGE_SIZE;
        Ok(Self { buf, offset, len })
    }

    /// Bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.offset..self.offset + self.len]
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

impl AsRef<[u8]> for PageBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PageBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_sized() {
        for len in [0, 1, 100, PAGE_SIZE, 3 * PAGE_SIZE + 5, 1 << 20] {
            let mut b = PageBuf::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert_eq!(b.is_empty(), len == 0);
            assert_eq!(b.as_ptr().addr() % PAGE_SIZE, 0, "len {len}");
            assert!(b.iter().all(|&x| x == 0));
            b.fill(3);
            assert_eq!(b.as_ref().len(), len);
            assert!(b.iter().all(|&x| x == 3));
        }
        assert!(matches!(
            PageBuf::zeroed(usize::MAX),
            Err(ArenaError::AllocationFailed { .. })
        ));
        assert!(PageBuf::zeroed(isize::MAX as usize - PAGE_SIZE).is_err());
    }
}
