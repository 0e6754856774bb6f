//! Tier markers: the type parameter of every block names the tier its manager serves, so a G1
//! block cannot be passed where a G2 block is expected.

/// The storage medium a tier lives on (used in events and metrics labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Medium {
    /// Accelerator memory (G1).
    Gpu,
    /// Host memory (G2).
    Cpu,
    /// Local disk (G3).
    Disk,
    /// A store outside this machine (G4).
    External,
}

impl Medium {
    /// Every medium, in the order of [`Medium::index`].
    pub const ALL: [Medium; 4] = [Medium::Gpu, Medium::Cpu, Medium::Disk, Medium::External];

    /// A dense index (0..4) for per-medium arrays: the position in [`Medium::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Medium::Gpu => 0,
            Medium::Cpu => 1,
            Medium::Disk => 2,
            Medium::External => 3,
        }
    }

    /// Parses a wire name in any case (`GPU`, `cpu`, `Disk`, `EXTERNAL`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::Medium;
    /// assert_eq!(Medium::from_name("cpu"), Some(Medium::Cpu));
    /// assert_eq!(Medium::from_name("tape"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Medium> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Upper-case wire name (`GPU`, `CPU`, `DISK`, `EXTERNAL`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Medium::Gpu => "GPU",
            Medium::Cpu => "CPU",
            Medium::Disk => "DISK",
            Medium::External => "EXTERNAL",
        }
    }
}

/// A zero-sized marker naming a storage tier. Implement it for your own marker types to run
/// managers for other tiers.
///
/// # Examples
///
/// ```
/// use kvtier_core::{Medium, Tier};
///
/// struct PinnedHost;
/// impl Tier for PinnedHost {
///     const NAME: &'static str = "pinned_host";
///     const MEDIUM: Medium = Medium::Cpu;
/// }
/// assert_eq!(PinnedHost::NAME, "pinned_host");
/// ```
pub trait Tier: Send + Sync + 'static {
    /// Short lower-case name, used as the `pool` label of metrics.
    const NAME: &'static str;
    /// The medium the tier's bytes live on.
    const MEDIUM: Medium;
}

macro_rules! tier {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $medium:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $ty;
        impl Tier for $ty {
            const NAME: &'static str = $name;
            const MEDIUM: Medium = Medium::$medium;
        }
    };
}

tier!(
    /// G1: accelerator memory.
    G1, "g1", Gpu
);
tier!(
    /// G2: host memory.
    G2, "g2", Cpu
);
tier!(
    /// G3: local disk.
    G3, "g3", Disk
);
tier!(
    /// G4: an external store (another machine, Redis/Valkey, object storage).
    G4, "g4", External
);
