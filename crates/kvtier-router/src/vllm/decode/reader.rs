//! A msgpack reader over a byte slice: one value head at a time, no allocation, no recursion
//! beyond [`MAX_DEPTH`].
//!
//! Owns only the msgpack grammar (markers, lengths, nesting); what the values mean is
//! `event.rs` and `decode.rs`. A length is checked against the bytes that remain before any
//! slice is taken, so a hostile header costs nothing; callers that pre-allocate from an
//! element count cap it with [`Reader::remaining`] (every msgpack value takes at least one
//! byte). Every error is [`VllmDecodeError::Msgpack`]: the input is not well-formed msgpack.

use super::VllmDecodeError;

/// The deepest msgpack nesting accepted (a batch needs 5 levels; extra keys a few more). The
/// batch itself is at depth 1.
pub(super) const MAX_DEPTH: usize = 24;

/// The head of one msgpack value: a scalar with its payload, or a container with its count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Head<'a> {
    Nil,
    Bool(bool),
    /// Any integer that is not negative, whatever its marker.
    UInt(u64),
    /// A negative integer.
    NInt(i64),
    F32(f32),
    F64(f64),
    /// A string's bytes (not checked for UTF-8).
    Str(&'a [u8]),
    Bin(&'a [u8]),
    /// An array of this many values (which follow).
    Array(u32),
    /// A map of this many key/value pairs (which follow).
    Map(u32),
    /// An extension value (type and data skipped).
    Ext,
}

/// A cursor over the bytes of one batch.
#[derive(Clone, Debug)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn truncated() -> VllmDecodeError {
    VllmDecodeError::Msgpack {
        reason: "unexpected end of input".into(),
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The offset of the next value.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves back to an offset returned by [`Reader::pos`].
    pub(super) fn rewind(&mut self, pos: usize) {
        self.pos = pos.min(self.bytes.len());
    }

    /// Bytes not read yet: an upper bound on the values that can follow.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The bytes read since offset `from`.
    pub(super) fn since(&self, from: usize) -> &'a [u8] {
        self.bytes.get(from..self.pos).unwrap_or_default()
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, VllmDecodeError> {
        let b = *self.bytes.get(self.pos).ok_or_else(truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], VllmDecodeError> {
        if n > self.remaining() {
            return Err(truncated());
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], VllmDecodeError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    #[inline]
    fn len8(&mut self) -> Result<usize, VllmDecodeError> {
        self.byte().map(usize::from)
    }

    #[inline]
    fn len16(&mut self) -> Result<usize, VllmDecodeError> {
        self.array::<2>()
            .map(|b| usize::from(u16::from_be_bytes(b)))
    }

    #[inline]
    fn len32(&mut self) -> Result<u32, VllmDecodeError> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    #[inline]
    fn sized(&mut self, n: u32) -> Result<&'a [u8], VllmDecodeError> {
        // A u32 always fits a usize on the 32- and 64-bit targets kvtier builds for; if it did
        // not, it could not fit the input either.
        self.take(usize::try_from(n).map_err(|_| truncated())?)
    }

    fn ext(&mut self, len: usize) -> Result<Head<'a>, VllmDecodeError> {
        self.take(len.saturating_add(1))?; // type byte, then data
        Ok(Head::Ext)
    }

    fn signed(v: i64) -> Head<'a> {
        match u64::try_from(v) {
            Ok(u) => Head::UInt(u),
            Err(_) => Head::NInt(v),
        }
    }

    /// Reads the head of the next value (a string's or binary's bytes are consumed with it; a
    /// container's elements are not).
    #[inline]
    pub(super) fn head(&mut self) -> Result<Head<'a>, VllmDecodeError> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Head::UInt(u64::from(m)),
            0x80..=0x8f => Head::Map(u32::from(m & 0x0f)),
            0x90..=0x9f => Head::Array(u32::from(m & 0x0f)),
            0xa0..=0xbf => Head::Str(self.take(usize::from(m & 0x1f))?),
            0xc0 => Head::Nil,
            0xc1 => {
                return Err(VllmDecodeError::Msgpack {
                    reason: "reserved marker 0xc1".into(),
                });
            }
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                Head::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = self.len16()?;
                Head::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = self.len32()?;
                Head::Bin(self.sized(n)?)
            }
            0xc7 => {
                let n = self.len8()?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len16()?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len32()?;
                let n = usize::try_from(n).map_err(|_| truncated())?;
                self.ext(n)?
            }
            0xca => Head::F32(f32::from_be_bytes(self.array()?)),
            0xcb => Head::F64(f64::from_be_bytes(self.array()?)),
            0xcc => Head::UInt(u64::from(self.byte()?)),
            0xcd => Head::UInt(u64::from(u16::from_be_bytes(self.array()?))),
            0xce => Head::UInt(u64::from(u32::from_be_bytes(self.array()?))),
            0xcf => Head::UInt(u64::from_be_bytes(self.array()?)),
            0xd0 => Self::signed(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Self::signed(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Self::signed(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Self::signed(i64::from_be_bytes(self.array()?)),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len8()?;
                Head::Str(self.take(n)?)
            }
            0xda => {
                let n = self.len16()?;
                Head::Str(self.take(n)?)
            }
            0xdb => {
                let n = self.len32()?;
                Head::Str(self.sized(n)?)
            }
            0xdc => Head::Array(u32::from(u16::from_be_bytes(self.array()?))),
            0xdd => Head::Array(self.len32()?),
            0xde => Head::Map(u32::from(u16::from_be_bytes(self.array()?))),
            0xdf => Head::Map(self.len32()?),
            0xe0..=0xff => Head::NInt(i64::from(m as i8)),
        })
    }

    /// Reads an unsigned integer of up to 32 bits without the general dispatch (token ids),
    /// else the general head.
    #[inline(always)]
    pub(super) fn head_fast(&mut self) -> Result<Head<'a>, VllmDecodeError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (value, len) = match *rest {
            [b, ..] if b < 0x80 => (u64::from(b), 1),
            [0xcc, b, ..] => (u64::from(b), 2),
            [0xcd, b0, b1, ..] => (u64::from(u16::from_be_bytes([b0, b1])), 3),
            [0xce, b0, b1, b2, b3, ..] => (u64::from(u32::from_be_bytes([b0, b1, b2, b3])), 5),
            _ => return self.head(),
        };
        self.pos += len;
        Ok(Head::UInt(value))
    }

    /// Reads up to `n` unsigned integers of up to 32 bits in a row (token ids), appending them
    /// to `out`; stops early, reading nothing more, at the first value in any other form.
    /// Returns how many it read.
    ///
    /// The loop works on a local slice and position, so that nothing is stored back to the
    /// reader until it ends (a token costs a few instructions).
    #[inline]
    pub(super) fn uints_fast(&mut self, n: u32, out: &mut Vec<u32>) -> u32 {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let mut at = 0;
        let mut read = 0;
        while read < n {
            let (value, len) = match rest.get(at..).unwrap_or_default() {
                [b, ..] if *b < 0x80 => (u32::from(*b), 1),
                [0xcc, b, ..] => (u32::from(*b), 2),
                [0xcd, b0, b1, ..] => (u32::from(u16::from_be_bytes([*b0, *b1])), 3),
                [0xce, b0, b1, b2, b3, ..] => (u32::from_be_bytes([*b0, *b1, *b2, *b3]), 5),
                _ => break,
            };
            out.push(value);
            at += len;
            read += 1;
        }
        self.pos += at;
        read
    }

    /// Reads a `bin 8` value (how msgspec writes a 32-byte hash) without the general dispatch;
    /// `None`, reading nothing, when the next value is anything else.
    #[inline(always)]
    pub(super) fn bin8_fast(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.pos..)?;
        let [0xc4, n, ..] = *rest else {
            return None;
        };
        let end = 2 + usize::from(n);
        let bytes = rest.get(2..end)?;
        self.pos += end;
        Some(bytes)
    }

    /// Skips one whole value that sits at nesting `depth` (the batch is at depth 1).
    ///
    /// # Errors
    ///
    /// [`VllmDecodeError::Msgpack`] for truncated input, a reserved marker, or a container
    /// deeper than [`MAX_DEPTH`].
    pub(super) fn skip(&mut self, depth: usize) -> Result<(), VllmDecodeError> {
        let items = match self.head()? {
            Head::Array(n) => u64::from(n),
            Head::Map(n) => 2 * u64::from(n),
            _ => return Ok(()),
        };
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        // Each value takes at least one byte, so a hostile count ends at the input's end.
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

/// The error for nesting past [`MAX_DEPTH`].
pub(super) fn too_deep() -> VllmDecodeError {
    VllmDecodeError::Msgpack {
        reason: format!("nesting deeper than {MAX_DEPTH} levels"),
    }
}
