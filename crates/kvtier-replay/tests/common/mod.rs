//! Shared helpers of the kvtier-replay integration tests: traces from id lists and a tiny RNG.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use kvtier_replay::{Chains, RequestMeta, Trace};

/// A trace whose requests are the given id lists.
pub fn trace_of(requests: &[&[u64]]) -> Trace {
    let mut t = Trace::new();
    for r in requests {
        t.push(r, RequestMeta::default());
    }
    t
}

/// Chains of the given id lists.
pub fn chains_of(requests: &[&[u64]]) -> Chains {
    Chains::from_trace(&trace_of(requests))
}

/// xorshift64*: enough randomness for generating tiny test traces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random prefix-consistent trace: `nodes` blocks forming a forest (node i's parent is a
/// random earlier node or none), and `requests` requests, each the root path of a random node.
pub fn random_forest_trace(rng: &mut Rng, nodes: usize, requests: usize) -> Trace {
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let p = if i == 0 || rng.below(4) == 0 {
            None
        } else {
            Some(rng.below(i as u64) as usize)
        };
        parent.push(p);
    }
    let mut t = Trace::new();
    for _ in 0..requests {
        let mut path = Vec::new();
        let mut n = Some(rng.below(nodes as u64) as usize);
        while let Some(x) = n {
            path.push(x as u64);
            n = parent[x];
        }
        path.reverse();
        t.push(&path, RequestMeta::default());
    }
    t
}
