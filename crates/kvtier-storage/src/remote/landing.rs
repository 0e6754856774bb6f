//! Where block reads land: [`Landing`], the [`ValueSink`] that
//! [`G4Store`](super::G4Store)'s reads hand to a backend, with one [`frame::Receiver`] and one
//! destination ([`Dest`]) per block, so a backend streams each payload straight into its final
//! place and each block is checked as its bytes arrive.

use super::backend::ValueSink;
use super::frame;

/// Where a received block's payload goes.
pub(crate) enum Dest<'d> {
    /// A caller's buffer of exactly one block.
    Borrowed(&'d mut [u8]),
    /// A buffer of the store's own, allocated when the value's length is right.
    Owned(Vec<u8>),
}

impl Dest<'_> {
    /// The destination's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Dest::Borrowed(d) => d,
            Dest::Owned(v) => v,
        }
    }
}

/// Block frames a backend streams straight into their destinations, each checked by its own
/// [`frame::Receiver`] as its bytes land.
pub(crate) struct Landing<'d> {
    /// One receiver per block, in request order.
    pub rx: Vec<frame::Receiver>,
    /// One destination per block, in request order.
    pub dests: Vec<Dest<'d>>,
    /// Payload bytes of one block (the namespace's block size).
    pub payload_len: usize,
}

impl ValueSink for Landing<'_> {
    fn start(&mut self, i: usize, len: Option<usize>) {
        let (Some(rx), Some(dest)) = (self.rx.get_mut(i), self.dests.get_mut(i)) else {
            return;
        };
        rx.start(len);
        if let Dest::Owned(v) = dest {
            if len == Some(frame::HEADER_BYTES + self.payload_len) && v.is_empty() {
                *v = vec![0u8; self.payload_len];
            }
        }
    }

    fn region(&mut self, i: usize) -> &mut [u8] {
        let (Some(rx), Some(dest)) = (self.rx.get_mut(i), self.dests.get_mut(i)) else {
            return &mut [];
        };
        let dest: &mut [u8] = match dest {
            Dest::Borrowed(d) => d,
            Dest::Owned(v) => v,
        };
        rx.region(dest)
    }

    fn filled(&mut self, i: usize, n: usize) {
        if let (Some(rx), Some(dest)) = (self.rx.get_mut(i), self.dests.get(i)) {
            rx.filled(n, dest.as_slice());
        }
    }
}
