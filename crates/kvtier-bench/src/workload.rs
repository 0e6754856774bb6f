//! Deterministic workload generation: a SplitMix64 generator, chains of well-mixed block hashes,
//! a Zipf sampler and the churn workload.
//!
//! Everything here reproduces the generators of the kvbm-logical anchor harness
//! (`shared/anchors/kvbm-logical-bench/src/workload.rs`) bit for bit: same seeds, same id
//! layout, same sampling, so figures measured here compare with the anchor's README. No I/O and
//! no external RNG crate.
//!
//! A *chain* is a `Vec<u64>` whose element `i` is the 64-bit, prefix-implying hash of the block
//! at position `i` (its parent is element `i - 1`); adapters turn it into their own keys.

/// SplitMix64 pseudo-random generator (deterministic, `Copy`-cheap state).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose first output is `mix64(seed + golden gamma)`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `[0, 1)` (53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi]`, both inclusive (modulo bias is irrelevant at these sizes).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The SplitMix64 finalizer: a bijection on `u64` with full avalanche. Turns small ids into
/// realistic, well-mixed 64-bit hashes.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Id domain of the micro-benchmarks (keeps suites' hashes disjoint).
pub const TAG_MICRO: u64 = 1 << 60;
/// Id domain of the churn workload.
pub const TAG_CHURN: u64 = 2 << 60;

/// The chain of `len` block hashes of chain `id` in domain `tag`.
///
/// # Examples
///
/// ```
/// use kvtier_bench::{TAG_MICRO, chain};
///
/// let a = chain(TAG_MICRO, 7, 4);
/// assert_eq!(a.len(), 4);
/// assert_eq!(a, chain(TAG_MICRO, 7, 4)); // deterministic
/// assert_ne!(a[0], chain(TAG_MICRO, 8, 4)[0]);
/// ```
pub fn chain(tag: u64, id: u64, len: usize) -> Vec<u64> {
    (0..len as u64)
        .map(|i| mix64(tag | (id << 16) | i))
        .collect()
}

/// Zipf(s) sampler over ranks `0..n` (rank 0 most popular), by inverse CDF.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n >= 1` ranks with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|r| {
                acc += 1.0 / ((r + 1) as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Seed of the churn workload (the anchor harness's).
pub const CHURN_SEED: u64 = 0x5EED_CAFE;

/// The churn workload: independent prefix chains of random length and a stream of requests
/// drawn Zipf over them (popularity decoupled from length by a fixed shuffle).
#[derive(Clone, Debug)]
pub struct ChurnWorkload {
    /// One chain per prefix.
    pub prefixes: Vec<Vec<u64>>,
    /// Prefix index of each request, in arrival order.
    pub requests: Vec<u32>,
}

impl ChurnWorkload {
    /// `n_prefixes` chains with lengths uniform in `[min_len, max_len]`, `n_requests` Zipf(`s`)
    /// draws, all from `seed`.
    pub fn new(
        n_prefixes: usize,
        min_len: usize,
        max_len: usize,
        n_requests: usize,
        s: f64,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let prefixes = (0..n_prefixes)
            .map(|p| {
                let len = rng.range(min_len as u64, max_len as u64) as usize;
                chain(TAG_CHURN, p as u64, len)
            })
            .collect();
        let zipf = Zipf::new(n_prefixes, s);
        let mut perm: Vec<u32> = (0..n_prefixes as u32).collect();
        for i in (1..perm.len()).rev() {
            let j = rng.range(0, i as u64) as usize;
            perm.swap(i, j);
        }
        let requests = (0..n_requests)
            .map(|_| perm[zipf.sample(&mut rng)])
            .collect();
        Self { prefixes, requests }
    }

    /// The anchors' churn workload: 1,000 prefixes of 4..=64 blocks, Zipf(1.0), seed
    /// [`CHURN_SEED`], `n_requests` requests.
    pub fn standard(n_requests: usize) -> Self {
        Self::new(1000, 4, 64, n_requests, 1.0, CHURN_SEED)
    }

    /// Blocks requested over the whole stream.
    pub fn total_blocks(&self) -> u64 {
        self.requests
            .iter()
            .map(|&p| self.prefixes[p as usize].len() as u64)
            .sum()
    }

    /// Distinct blocks over all prefixes.
    pub fn distinct_blocks(&self) -> usize {
        self.prefixes.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_rank_zero_is_most_popular() {
        let z = Zipf::new(100, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 100];
        for _ in 0..20_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[50]);
    }

    #[test]
    fn churn_lengths_and_requests_are_in_range() {
        let w = ChurnWorkload::standard(1000);
        assert_eq!(w.prefixes.len(), 1000);
        assert!(w.prefixes.iter().all(|p| (4..=64).contains(&p.len())));
        assert!(w.requests.iter().all(|&r| r < 1000));
    }
}
