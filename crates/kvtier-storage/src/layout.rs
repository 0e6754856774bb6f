//! Block byte layouts: how many bytes one KV block holds, and the slot it takes in an arena.
//!
//! A block's bytes come either from a model's shape ([`ModelLayout`], vLLM style: K and V ×
//! layers × tokens per block × KV heads × head dim × dtype bytes) or are given directly
//! ([`BlockLayout::from_bytes`]). Both paths are validated the same way: no zero dimension, no
//! overflow, and no block above [`MAX_BLOCK_BYTES`]. kvtier treats the bytes as opaque; it never
//! looks inside a block.
//!
//! A slot is the block rounded up to [`PAGE_SIZE`], so every slot of an arena starts on a page
//! boundary (copies into page-aligned memory are the fast path of `rep movsb` on the machines
//! kvtier runs on; see `NOTES.md`). The padding is the arena's only fragmentation.

use std::fmt;
use std::str::FromStr;

/// Granularity of arena slots: every slot starts on a multiple of this many bytes.
pub const PAGE_SIZE: usize = 4096;

/// The largest block accepted (1 GiB). A real KV block is KiB to a few MiB; anything above this
/// is a unit mix-up (bytes for KiB, tokens for blocks) and is rejected rather than allocated.
pub const MAX_BLOCK_BYTES: usize = 1 << 30;

/// Errors of a block layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A dimension of the layout is zero.
    #[error("block layout: `{field}` must be at least 1")]
    Zero {
        /// Which dimension.
        field: &'static str,
    },
    /// The product of the dimensions does not fit in `usize`.
    #[error("block layout: {what} overflows usize")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// The block is larger than [`MAX_BLOCK_BYTES`].
    #[error("block layout: {bytes} bytes per block is above the limit of {max} bytes")]
    TooLarge {
        /// The block size asked for (saturated at `u128::MAX` bytes).
        bytes: u128,
        /// [`MAX_BLOCK_BYTES`].
        max: usize,
    },
    /// `planes` is neither 1 (a latent cache) nor 2 (K and V).
    #[error("block layout: `planes` must be 1 (latent) or 2 (K and V), got {planes}")]
    Planes {
        /// The value given.
        planes: usize,
    },
    /// A dtype name that is not known.
    #[error("unknown KV cache dtype `{name}` (expected f32, f16, bf16, fp8, fp8_e4m3 or fp8_e5m2)")]
    UnknownDtype {
        /// The name given.
        name: String,
    },
}

/// The element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit float, E4M3 (vLLM `fp8` / `fp8_e4m3`).
    Fp8E4m3,
    /// 8-bit float, E5M2 (vLLM `fp8_e5m2`).
    Fp8E5m2,
}

impl Dtype {
    /// Bytes per element.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_storage::layout::Dtype;
    /// assert_eq!(Dtype::Bf16.size_bytes(), 2);
    /// assert_eq!("fp8".parse::<Dtype>().unwrap().size_bytes(), 1);
    /// ```
    pub const fn size_bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::Fp8E4m3 | Dtype::Fp8E5m2 => 1,
        }
    }

    /// The canonical name (as [`FromStr`] accepts it).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Fp8E4m3 => "fp8_e4m3",
            Dtype::Fp8E5m2 => "fp8_e5m2",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = LayoutError;

    /// Parses the names vLLM and PyTorch use (case-insensitive): `f32`/`float32`/`float`,
    /// `f16`/`float16`/`half`, `bf16`/`bfloat16`, `fp8`/`fp8_e4m3`, `fp8_e5m2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "f32" | "fp32" | "float32" | "float" => Dtype::F32,
            "f16" | "fp16" | "float16" | "half" => Dtype::F16,
            "bf16" | "bfloat16" => Dtype::Bf16,
            "fp8" | "fp8_e4m3" | "fp8e4m3" | "float8_e4m3fn" => Dtype::Fp8E4m3,
            "fp8_e5m2" | "fp8e5m2" | "float8_e5m2" => Dtype::Fp8E5m2,
            _ => return Err(LayoutError::UnknownDtype { name: s.to_owned() }),
        })
    }
}

/// The shape of a model's KV cache, from which the bytes of one block follow.
///
/// `block_bytes = planes × layers × block_size × kv_heads × head_dim × dtype bytes`, where
/// `planes` is 2 (K and V, the vLLM layout) or 1 for a latent cache (MLA, see
/// [`ModelLayout::latent`]).
///
/// # Examples
///
/// ```
/// use kvtier_storage::layout::{BlockLayout, Dtype, ModelLayout};
///
/// // Llama-3.1-8B: 32 layers, 8 KV heads of 128, bf16, 16 tokens per block.
/// let model = ModelLayout::new(32, 16, 8, 128, Dtype::Bf16);
/// let layout = BlockLayout::from_model(&model)?;
/// assert_eq!(layout.block_bytes(), 2 * 32 * 16 * 8 * 128 * 2); // 2 MiB
/// # Ok::<(), kvtier_storage::layout::LayoutError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelLayout {
    /// Tensors per layer and token: 2 (K and V) or 1 (a latent cache).
    pub planes: usize,
    /// Attention layers whose KV the block holds.
    pub num_layers: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// KV heads (after GQA/MQA grouping; per rank under tensor parallelism).
    pub num_kv_heads: usize,
    /// Elements per head (for a latent cache: the latent plus rope width).
    pub head_dim: usize,
    /// The element type.
    pub dtype: Dtype,
}

impl ModelLayout {
    /// A K-and-V layout (`planes = 2`), as vLLM allocates for standard attention.
    pub const fn new(
        num_layers: usize,
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
        dtype: Dtype,
    ) -> Self {
        Self {
            planes: 2,
            num_layers,
            block_size,
            num_kv_heads,
            head_dim,
            dtype,
        }
    }

    /// A latent layout (`planes = 1`, one head): multi-head latent attention stores one
    /// compressed vector of `latent_dim` elements per token and layer.
    pub const fn latent(
        num_layers: usize,
        block_size: usize,
        latent_dim: usize,
        dtype: Dtype,
    ) -> Self {
        Self {
            planes: 1,
            num_layers,
            block_size,
            num_kv_heads: 1,
            head_dim: latent_dim,
            dtype,
        }
    }
}

/// The validated byte size of one block, and the slot it takes in an arena.
///
/// # Examples
///
/// ```
/// use kvtier_storage::layout::{BlockLayout, LayoutError, PAGE_SIZE};
///
/// let layout = BlockLayout::from_bytes(10_000)?;
/// assert_eq!(layout.slot_bytes(), 3 * PAGE_SIZE); // rounded up to whole pages
/// assert_eq!(layout.padding_bytes(), 3 * PAGE_SIZE - 10_000);
/// assert!(matches!(BlockLayout::from_bytes(0), Err(LayoutError::Zero { .. })));
/// # Ok::<(), LayoutError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockLayout {
    block_bytes: usize,
    slot_bytes: usize,
}

impl BlockLayout {
    /// A layout of `block_bytes` bytes per block, given directly.
    ///
    /// # Errors
    ///
    /// [`LayoutError::Zero`] for 0, [`LayoutError::TooLarge`] above [`MAX_BLOCK_BYTES`].
    pub fn from_bytes(block_bytes: usize) -> Result<Self, LayoutError> {
        if block_bytes == 0 {
            return Err(LayoutError::Zero {
                field: "block_bytes",
            });
        }
        if block_bytes > MAX_BLOCK_BYTES {
            return Err(LayoutError::TooLarge {
                bytes: block_bytes as u128,
                max: MAX_BLOCK_BYTES,
            });
        }
        // Cannot overflow: block_bytes <= 1 GiB.
        let slot_bytes = block_bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Ok(Self {
            block_bytes,
            slot_bytes,
        })
    }

    /// The layout of one block of `model`.
    ///
    /// # Errors
    ///
    /// [`LayoutError::Zero`] naming the first zero dimension; [`LayoutError::Overflow`] when
    /// the product does not fit in `usize`; [`LayoutError::TooLarge`] above
    /// [`MAX_BLOCK_BYTES`].
    pub fn from_model(model: &ModelLayout) -> Result<Self, LayoutError> {
        let dims = [
            ("planes", model.planes),
            ("num_layers", model.num_layers),
            ("block_size", model.block_size),
            ("num_kv_heads", model.num_kv_heads),
            ("head_dim", model.head_dim),
        ];
        if let Some((field, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(LayoutError::Zero { field });
        }
        if model.planes > 2 {
            return Err(LayoutError::Planes {
                planes: model.planes,
            });
        }
        // Checked multiplication in u128 keeps the true size of a merely absurd layout for the
        // error message; only a product beyond u128 (or usize) is reported as an overflow.
        let mut wide: Option<u128> = Some(model.dtype.size_bytes() as u128);
        for (_, v) in dims {
            wide = wide.and_then(|acc| acc.checked_mul(v as u128));
        }
        let Some(wide) = wide else {
            return Err(LayoutError::Overflow {
                what: "block bytes",
            });
        };
        let Ok(bytes) = usize::try_from(wide) else {
            return Err(LayoutError::Overflow {
                what: "block bytes",
            });
        };
        if bytes > MAX_BLOCK_BYTES {
            return Err(LayoutError::TooLarge {
                bytes: wide,
                max: MAX_BLOCK_BYTES,
            });
        }
        Self::from_bytes(bytes)
    }

    /// Bytes of one block (what a reader or writer of the block sees).
    pub const fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Bytes one block takes in an arena: `block_bytes` rounded up to [`PAGE_SIZE`].
    pub const fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Padding at the end of each slot (`slot_bytes - block_bytes`).
    pub const fn padding_bytes(&self) -> usize {
        self.slot_bytes - self.block_bytes
    }

    /// Bytes of `block_count` slots, checked.
    ///
    /// # Errors
    ///
    /// [`LayoutError::Zero`] for no blocks, [`LayoutError::Overflow`] when the total does not
    /// fit in `isize` (the most one allocation may hold).
    pub fn arena_bytes(&self, block_count: usize) -> Result<usize, LayoutError> {
        if block_count == 0 {
            return Err(LayoutError::Zero {
                field: "block_count",
            });
        }
        self.slot_bytes
            .checked_mul(block_count)
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or(LayoutError::Overflow {
                what: "arena bytes (block_count × slot_bytes)",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_layouts_match_vllm_sizes() {
        // Llama-3.1-8B bf16, 16 tokens: 2 × 32 × 16 × 8 × 128 × 2 = 2 MiB.
        let l = BlockLayout::from_model(&ModelLayout::new(32, 16, 8, 128, Dtype::Bf16)).unwrap();
        assert_eq!(l.block_bytes(), 2 << 20);
        assert_eq!(l.padding_bytes(), 0);
        // Same model, fp8 cache: half the bytes.
        let l = BlockLayout::from_model(&ModelLayout::new(32, 16, 8, 128, Dtype::Fp8E4m3)).unwrap();
        assert_eq!(l.block_bytes(), 1 << 20);
        // f32 doubles bf16.
        let l = BlockLayout::from_model(&ModelLayout::new(2, 16, 2, 64, Dtype::F32)).unwrap();
        assert_eq!(l.block_bytes(), 2 * 2 * 16 * 2 * 64 * 4);
        // DeepSeek-V3 MLA: 61 layers, latent 512 + rope 64, bf16, 64 tokens, one plane.
        let l = BlockLayout::from_model(&ModelLayout::latent(61, 64, 576, Dtype::Bf16)).unwrap();
        assert_eq!(l.block_bytes(), 61 * 64 * 576 * 2);
        assert_eq!(l.slot_bytes() % PAGE_SIZE, 0);
        assert!(l.slot_bytes() >= l.block_bytes());
        assert!(l.slot_bytes() - l.block_bytes() < PAGE_SIZE);
    }

    #[test]
    fn zero_dimensions_are_named() {
        let base = ModelLayout::new(32, 16, 8, 128, Dtype::F16);
        let cases = [
            (
                ModelLayout {
                    num_layers: 0,
                    ..base
                },
                "num_layers",
            ),
            (
                ModelLayout {
                    block_size: 0,
                    ..base
                },
                "block_size",
            ),
            (
                ModelLayout {
                    num_kv_heads: 0,
                    ..base
                },
                "num_kv_heads",
            ),
            (
                ModelLayout {
                    head_dim: 0,
                    ..base
                },
                "head_dim",
            ),
            (ModelLayout { planes: 0, ..base }, "planes"),
        ];
        for (m, field) in cases {
            assert_eq!(
                BlockLayout::from_model(&m),
                Err(LayoutError::Zero { field }),
                "{m:?}"
            );
        }
        assert_eq!(
            BlockLayout::from_bytes(0),
            Err(LayoutError::Zero {
                field: "block_bytes"
            })
        );
    }

    #[test]
    fn overflow_and_absurd_sizes_are_rejected() {
        let huge = ModelLayout::new(usize::MAX, usize::MAX, usize::MAX, usize::MAX, Dtype::F32);
        assert!(matches!(
            BlockLayout::from_model(&huge),
            Err(LayoutError::Overflow { .. })
        ));
        // Fits in usize but 64 GiB per block: a unit mix-up.
        let absurd = ModelLayout::new(1024, 1024, 64, 128, Dtype::F32);
        let err = BlockLayout::from_model(&absurd).unwrap_err();
        assert_eq!(
            err,
            LayoutError::TooLarge {
                bytes: 2 * 1024 * 1024 * 64 * 128 * 4,
                max: MAX_BLOCK_BYTES
            }
        );
        assert!(err.to_string().contains("above the limit"));
        assert!(BlockLayout::from_bytes(MAX_BLOCK_BYTES).is_ok());
        assert!(matches!(
            BlockLayout::from_bytes(MAX_BLOCK_BYTES + 1),
            Err(LayoutError::TooLarge { .. })
        ));
        let three = ModelLayout {
            planes: 3,
            ..ModelLayout::new(1, 1, 1, 1, Dtype::F16)
        };
        assert_eq!(
            BlockLayout::from_model(&three),
            Err(LayoutError::Planes { planes: 3 })
        );
    }

    #[test]
    fn arena_bytes_are_checked() {
        let l = BlockLayout::from_bytes(5000).unwrap();
        assert_eq!(l.arena_bytes(3), Ok(3 * 2 * PAGE_SIZE));
        assert!(matches!(l.arena_bytes(0), Err(LayoutError::Zero { .. })));
        assert!(matches!(
            l.arena_bytes(usize::MAX),
            Err(LayoutError::Overflow { .. })
        ));
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in [
            Dtype::F32,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Fp8E4m3,
            Dtype::Fp8E5m2,
        ] {
            assert_eq!(d.name().parse::<Dtype>(), Ok(d));
            assert_eq!(d.to_string().to_uppercase().parse::<Dtype>(), Ok(d));
        }
        assert_eq!("bfloat16".parse::<Dtype>(), Ok(Dtype::Bf16));
        assert_eq!("half".parse::<Dtype>(), Ok(Dtype::F16));
        let err = "int4".parse::<Dtype>().unwrap_err();
        assert_eq!(
            err,
            LayoutError::UnknownDtype {
                name: "int4".into()
            }
        );
    }
}
