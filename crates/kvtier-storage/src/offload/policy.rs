//! [`WritePolicy`]: when a block is copied down to the next tier, under SGLang HiCache's names,
//! and [`WriteGate`], the decision that policy makes for each event a tier sees.
//!
//! ```text
//! event seen by the upper tier   write_through   write_through_selective{k}   write_back
//! registered (new primary)       copy            -                            -
//! hit (matched again)            -               copy once hits >= k          -
//! evicted                        -               -                            copy
//! ```
//!
//! The gate only says whether an event makes a block a *candidate*; the caller skips blocks the
//! lower tier already holds (a gate never remembers what it let through, so that its memory
//! stays bounded). Hits are counted in a TinyLFU count-min sketch
//! ([`FrequencySketch`]): 4-bit counters, conservative update (a count never falls below the
//! true one until aging halves it), a fixed size whatever the number of blocks seen.

use kvtier_core::{FrequencySketch, FrequencyTracker, SequenceHash, SketchConfigError};

/// Hits before `write_through_selective` copies a block when no threshold is given: 2, SGLang
/// HiCache's default for its selective policy.
pub const DEFAULT_SELECTIVE_HITS: u32 = 2;

/// Largest hit threshold of [`WritePolicy::WriteThroughSelective`]: the hit sketch's 4-bit
/// counters saturate at 15.
pub const MAX_SELECTIVE_HITS: u32 = 15;

/// When a block is copied to the next tier down.
///
/// Parsed from and displayed as SGLang HiCache's names: `write_through`,
/// `write_through_selective` (threshold [`DEFAULT_SELECTIVE_HITS`]) or
/// `write_through_selective:K`, and `write_back` (`-` is accepted for `_`).
///
/// # Examples
///
/// ```
/// use kvtier_storage::offload::WritePolicy;
///
/// let p: WritePolicy = "write_through_selective:3".parse()?;
/// assert_eq!(p, WritePolicy::WriteThroughSelective { hits: 3 });
/// assert_eq!(p.to_string(), "write_through_selective:3");
/// assert_eq!("write-back".parse::<WritePolicy>()?, WritePolicy::WriteBack);
/// assert!("write_through_selective:0".parse::<WritePolicy>().is_err());
/// # Ok::<(), kvtier_storage::offload::WritePolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WritePolicy {
    /// Copy a block down as soon as it is registered.
    WriteThrough,
    /// Copy a block down once it has been hit `hits` times (in `1..=MAX_SELECTIVE_HITS`): most
    /// blocks are never reused, so this writes far less than write-through.
    WriteThroughSelective {
        /// Hits that make a block worth copying.
        hits: u32,
    },
    /// Copy a block down when the upper tier evicts it.
    WriteBack,
}

impl WritePolicy {
    /// The three policies, the selective one at [`DEFAULT_SELECTIVE_HITS`], in report order.
    pub const ALL: [WritePolicy; 3] = [
        WritePolicy::WriteThrough,
        WritePolicy::WriteThroughSelective {
            hits: DEFAULT_SELECTIVE_HITS,
        },
        WritePolicy::WriteBack,
    ];

    /// Checks the selective threshold.
    ///
    /// # Errors
    ///
    /// [`WritePolicyError::Threshold`] when a selective threshold is outside
    /// `1..=MAX_SELECTIVE_HITS`.
    pub fn validate(self) -> Result<Self, WritePolicyError> {
        match self {
            Self::WriteThroughSelective { hits } if !(1..=MAX_SELECTIVE_HITS).contains(&hits) => {
                Err(WritePolicyError::Threshold { hits })
            }
            p => Ok(p),
        }
    }
}

impl std::fmt::Display for WritePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WriteThrough => f.write_str("write_through"),
            Self::WriteThroughSelective { hits } => write!(f, "write_through_selective:{hits}"),
            Self::WriteBack => f.write_str("write_back"),
        }
    }
}

impl std::str::FromStr for WritePolicy {
    type Err = WritePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let (name, k) = match norm.split_once(':') {
            Some((name, k)) => (name, Some(k)),
            None => (norm.as_str(), None),
        };
        let policy = match (name, k) {
            ("write_through", None) => Self::WriteThrough,
            ("write_back", None) => Self::WriteBack,
            ("write_through_selective", None) => Self::WriteThroughSelective {
                hits: DEFAULT_SELECTIVE_HITS,
            },
            ("write_through_selective", Some(k)) => Self::WriteThroughSelective {
                hits: k.trim().parse().map_err(|_| WritePolicyError::Unknown {
                    name: s.to_string(),
                })?,
            },
            _ => {
                return Err(WritePolicyError::Unknown {
                    name: s.to_string(),
                });
            }
        };
        policy.validate()
    }
}

/// Why a write policy or a gate was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WritePolicyError {
    /// Not one of the policy names.
    #[error(
        "unknown write policy {name:?} (expected write_through, write_through_selective[:K] or write_back)"
    )]
    Unknown {
        /// The text given.
        name: String,
    },
    /// A selective threshold outside `1..=MAX_SELECTIVE_HITS`.
    #[error("write_through_selective needs 1..={MAX_SELECTIVE_HITS} hits, not {hits}")]
    Threshold {
        /// The threshold given.
        hits: u32,
    },
    /// The hit sketch could not be sized.
    #[error("cannot size the hit sketch: {0}")]
    Sketch(#[from] SketchConfigError),
}

/// The per-event decision of a [`WritePolicy`]: is this block now a candidate for the tier below?
///
/// Thread safe and lock free (the hit counts live in a shared [`FrequencySketch`]); memory is
/// fixed at construction (8 bytes per tracked block, for the selective policy only).
///
/// # Examples
///
/// ```
/// use kvtier_core::SequenceHash;
/// use kvtier_storage::offload::{WriteGate, WritePolicy};
///
/// let gate = WriteGate::new(WritePolicy::WriteThroughSelective { hits: 2 }, 1024)?;
/// let h = SequenceHash::root(1);
/// assert!(!gate.on_registered(h)); // registration alone is not reuse
/// assert!(!gate.on_hit(h));        // first hit
/// assert!(gate.on_hit(h));         // second hit: copy it down
/// assert!(!gate.on_evicted(h));
///
/// let back = WriteGate::new(WritePolicy::WriteBack, 1024)?;
/// assert!(back.on_evicted(h) && !back.on_registered(h) && !back.on_hit(h));
/// # Ok::<(), kvtier_storage::offload::WritePolicyError>(())
/// ```
#[derive(Debug)]
pub struct WriteGate {
    policy: WritePolicy,
    /// Hit counts; only for the selective policy.
    hits: Option<FrequencySketch>,
}

impl WriteGate {
    /// A gate for `policy`; the selective policy counts hits for about `tracked_blocks` distinct
    /// blocks (the sketch ages every 10 × that many hits, so old reuse fades). Size it to the
    /// blocks that can still be hit: the upper tier's capacity, or both tiers'.
    ///
    /// # Errors
    ///
    /// [`WritePolicyError::Threshold`] for a selective threshold outside
    /// `1..=MAX_SELECTIVE_HITS`; [`WritePolicyError::Sketch`] when `tracked_blocks` is 0 or above
    /// [`kvtier_core::MAX_SKETCH_CAPACITY`] (selective policy only).
    pub fn new(policy: WritePolicy, tracked_blocks: usize) -> Result<Self, WritePolicyError> {
        let policy = policy.validate()?;
        let hits = match policy {
            WritePolicy::WriteThroughSelective { .. } => {
                Some(FrequencySketch::builder(tracked_blocks).build()?)
            }
            _ => None,
        };
        Ok(Self { policy, hits })
    }

    /// The policy this gate applies.
    pub fn policy(&self) -> WritePolicy {
        self.policy
    }

    /// `hash` became registered in the upper tier: a candidate under write-through.
    #[inline]
    pub fn on_registered(&self, _hash: SequenceHash) -> bool {
        self.policy == WritePolicy::WriteThrough
    }

    /// `hash` was hit (matched again). Under the selective policy this counts the hit and
    /// answers whether the block has now been hit at least `k` times (every later hit answers
    /// yes too, until aging halves the count: skip blocks the lower tier already holds).
    #[inline]
    pub fn on_hit(&self, hash: SequenceHash) -> bool {
        match (&self.hits, self.policy) {
            (Some(sketch), WritePolicy::WriteThroughSelective { hits }) => {
                let key = hash.mix64();
                sketch.touch(key);
                sketch.count(key) >= hits
            }
            _ => false,
        }
    }

    /// `hash` left the upper tier: a candidate under write-back.
    #[inline]
    pub fn on_evicted(&self, _hash: SequenceHash) -> bool {
        self.policy == WritePolicy::WriteBack
    }

    /// Whether the policy has chosen `hash` for the tier below by now, going by what the gate
    /// has counted (every block under `write_through` and `write_back`; under
    /// `write_through_selective`, a block hit at least `k` times). Counts nothing.
    pub fn chosen(&self, hash: SequenceHash) -> bool {
        match self.policy {
            WritePolicy::WriteThroughSelective { hits } => self.hits(hash) >= hits,
            WritePolicy::WriteThrough | WritePolicy::WriteBack => true,
        }
    }

    /// Estimated hits of `hash` (0 unless the policy is selective).
    pub fn hits(&self, hash: SequenceHash) -> u32 {
        self.hits.as_ref().map_or(0, |s| s.count(hash.mix64()))
    }
}
