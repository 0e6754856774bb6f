//! [`SyntheticConfig`]: a seeded generator of multi-turn chat traces, so replays and tests run
//! without a file and policies can be compared on traffic other than the shipped trace.
//!
//! The model:
//!
//! ```text
//! system prompts   P_0 .. P_{k-1}, each a fixed run of blocks; popularity Zipf(s) over them
//! conversation     = one system prompt + turns; turn t asks for
//!                    prompt blocks + every earlier turn's blocks + new blocks for this turn
//! traffic          `concurrency` conversations are open at once; each request picks one of
//!                    them uniformly and issues its next turn; a finished conversation (turn
//!                    count reached, or context at `max_blocks`) is replaced by a new one
//! ```
//!
//! Every new block gets a fresh id, so ids imply their prefix exactly as in Mooncake traces
//! (`hash_ids` are prefix ids; timestamps advance by `interarrival_ms`; token counts assume
//! full 512-token blocks). The random source is a SplitMix64 stream seeded with `seed`: equal
//! configurations produce equal traces on every platform.

use crate::{RequestMeta, Trace};

/// Tokens per block assumed for `input_length` (Mooncake's block size).
const TOKENS_PER_BLOCK: u64 = 512;

/// Parameters of the synthetic chat workload. Every field has a documented default
/// ([`SyntheticConfig::default`]).
///
/// # Examples
///
/// ```
/// use kvtier_replay::SyntheticConfig;
///
/// let cfg = SyntheticConfig { requests: 500, seed: 7, ..SyntheticConfig::default() };
/// let trace = cfg.generate();
/// assert_eq!(trace.len(), 500);
/// assert_eq!(trace, cfg.generate()); // deterministic
/// ```
///
/// Fields are public and meant for functional update (`..SyntheticConfig::default()`).
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Seed of the random stream. Default 42.
    pub seed: u64,
    /// Requests to generate. Default 10,000.
    pub requests: usize,
    /// Distinct system prompts. Default 16.
    pub system_prompts: usize,
    /// Zipf exponent of system-prompt popularity (0 = uniform). Default 1.0.
    pub prompt_zipf: f64,
    /// Blocks per system prompt, inclusive range. Default (2, 12).
    pub prompt_blocks: (usize, usize),
    /// Conversations open at once. Default 64.
    pub concurrency: usize,
    /// Turns per conversation, inclusive range. Default (1, 10).
    pub turns: (usize, usize),
    /// New blocks per turn (user message plus the previous answer), inclusive range.
    /// Default (1, 6).
    pub blocks_per_turn: (usize, usize),
    /// A conversation ends once its context reaches this many blocks. Default 160.
    pub max_blocks: usize,
    /// Milliseconds between consecutive requests. Default 50.
    pub interarrival_ms: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            requests: 10_000,
            system_prompts: 16,
            prompt_zipf: 1.0,
            prompt_blocks: (2, 12),
            concurrency: 64,
            turns: (1, 10),
            blocks_per_turn: (1, 6),
            max_blocks: 160,
            interarrival_ms: 50,
        }
    }
}

/// SplitMix64: tiny, seedable, identical everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo` when the range is empty).
    fn between(&mut self, (lo, hi): (usize, usize)) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Conversation {
    context: Vec<u64>,
    turns_left: usize,
}

impl SyntheticConfig {
    /// Generates the trace. Degenerate settings are clamped (at least one prompt, one open
    /// conversation, one turn, one block per prompt and per turn).
    ///
    /// Time and memory grow with `requests` (tens of blocks per request at the default
    /// settings, 8 bytes each); `kvtier replay` caps it at 1,000,000 (about 0.9 GB peak).
    pub fn generate(&self) -> Trace {
        let mut rng = SplitMix(self.seed);
        let mut next_id = 0u64;
        let mut fresh = |n: usize, out: &mut Vec<u64>| {
            out.extend(next_id..next_id + n as u64);
            next_id += n as u64;
        };

        let prompts: Vec<Vec<u64>> = (0..self.system_prompts.max(1))
            .map(|_| {
                let mut p = Vec::new();
                fresh(rng.between(clamp1(self.prompt_blocks)), &mut p);
                p
            })
            .collect();
        // Cumulative Zipf weights over prompt ranks.
        let mut cdf: Vec<f64> = (1..=prompts.len())
            .map(|r| (r as f64).powf(-self.prompt_zipf))
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let total = cdf.last().copied().unwrap_or(1.0);
        cdf.iter_mut().for_each(|c| *c /= total);

        let open_new = |rng: &mut SplitMix| {
            let u = rng.unit();
            let rank = cdf.partition_point(|&c| c <= u).min(prompts.len() - 1);
            Conversation {
                context: prompts[rank].clone(),
                turns_left: rng.between(clamp1(self.turns)),
            }
        };
        let mut open: Vec<Conversation> = (0..self.concurrency.max(1))
            .map(|_| open_new(&mut rng))
            .collect();

        let mut trace = Trace::new();
        for i in 0..self.requests {
            let slot = (rng.next_u64() % open.len() as u64) as usize;
            let conv = &mut open[slot];
            let added = rng.between(clamp1(self.blocks_per_turn));
            fresh(added, &mut conv.context);
            let out_blocks = rng.between(clamp1(self.blocks_per_turn)) as u64;
            trace.push(
                &conv.context,
                RequestMeta {
                    timestamp: Some(i as u64 * self.interarrival_ms),
                    input_length: Some(conv.context.len() as u64 * TOKENS_PER_BLOCK),
                    output_length: Some(out_blocks * TOKENS_PER_BLOCK / 2),
                },
            );
            conv.turns_left -= 1;
            if conv.turns_left == 0 || conv.context.len() >= self.max_blocks {
                open[slot] = open_new(&mut rng);
            }
        }
        trace
    }
}

fn clamp1((lo, hi): (usize, usize)) -> (usize, usize) {
    let lo = lo.max(1);
    (lo, hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_imply_their_prefix() {
        let t = SyntheticConfig {
            requests: 2000,
            ..SyntheticConfig::default()
        }
        .generate();
        let mut seen = std::collections::HashMap::new();
        for r in t.iter() {
            for (i, &id) in r.hash_ids.iter().enumerate() {
                let parent = i.checked_sub(1).map(|p| r.hash_ids[p]);
                assert_eq!(*seen.entry(id).or_insert((i, parent)), (i, parent));
            }
        }
    }

    #[test]
    fn seeds_differ() {
        let a = SyntheticConfig {
            requests: 100,
            seed: 1,
            ..SyntheticConfig::default()
        };
        let b = SyntheticConfig {
            seed: 2,
            ..a.clone()
        };
        assert_ne!(a.generate(), b.generate());
    }
}
