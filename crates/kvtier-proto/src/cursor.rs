//! Bounds-checked little-endian reading of a payload ([`Cursor`]); the only place the decoders
//! index bytes, so none of them can read past the frame.

use crate::ProtoError;

/// A read position in a payload. Every read checks the remaining length first and fails with
/// [`ProtoError::Truncated`] instead of panicking.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if n > self.rest.len() {
            return Err(ProtoError::Truncated {
                what,
                needed: n,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtoError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        self.array(what).map(u64::from_le_bytes)
    }

    pub(crate) fn u128(&mut self, what: &'static str) -> Result<u128, ProtoError> {
        self.array(what).map(u128::from_le_bytes)
    }

    /// Reads a count of entries of at least `min_entry_bytes` each, checked against `max` and
    /// against the bytes left, before any caller allocates for it.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_entry_bytes: usize,
        max: u32,
    ) -> Result<usize, ProtoError> {
        let count = self.u32(what)?;
        if count > max {
            return Err(ProtoError::TooManyBlocks {
                count: u64::from(count),
                max,
            });
        }
        let needed = u64::from(count) * min_entry_bytes as u64;
        if needed > self.rest.len() as u64 {
            return Err(ProtoError::CountOverrun {
                what,
                count: u64::from(count),
                needed,
                available: self.rest.len(),
            });
        }
        Ok(count as usize)
    }

    /// A `u16`-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes16(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ProtoError> {
        let len = usize::from(self.u16(what)?);
        if len > max {
            return Err(ProtoError::FieldTooLong { what, len, max });
        }
        self.take(len, what)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str16(&mut self, what: &'static str, max: usize) -> Result<&'a str, ProtoError> {
        let bytes = self.bytes16(what, max)?;
        std::str::from_utf8(bytes).map_err(|_| ProtoError::InvalidUtf8 { what })
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails with [`ProtoError::TrailingBytes`] unless the payload is used up.
    pub(crate) fn finish(self) -> Result<(), ProtoError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

/// Appends a `u16`-length-prefixed field, checking it against `max` (and `u16::MAX`).
pub(crate) fn put_bytes16(
    out: &mut Vec<u8>,
    bytes: &[u8],
    what: &'static str,
    max: usize,
) -> Result<(), ProtoError> {
    let max = max.min(usize::from(u16::MAX));
    if bytes.len() > max {
        return Err(ProtoError::FieldTooLong {
            what,
            len: bytes.len(),
            max,
        });
    }
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Checks an encoder's entry count against the limit and returns it as the wire `u32`.
pub(crate) fn check_count(count: usize, max: u32) -> Result<u32, ProtoError> {
    match u32::try_from(count) {
        Ok(c) if c <= max => Ok(c),
        _ => Err(ProtoError::TooManyBlocks {
            count: count as u64,
            max,
        }),
    }
}
