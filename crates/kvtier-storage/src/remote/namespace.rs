//! Namespaces: which deployment a G4 key belongs to.
//!
//! Two deployments that share a bucket or a Redis must never read each other's blocks. A
//! [`Namespace`] names the model, the hash scheme and the block layout; every key starts with
//! its [`Namespace::prefix`] and every frame carries its [`Namespace::tag`], so a block of
//! another namespace is neither found nor, if moved by hand, accepted.

use xxhash_rust::xxh3::xxh3_128;

use super::G4Error;

/// The identity of a deployment's blocks in a shared external store.
///
/// Built from the model name, the hash scheme (any stable string, e.g. `"xxh3-v1/bs16"`) and
/// the block size in bytes. The key prefix is a readable slug of the model name followed by a
/// 64-bit digest of all three, so namespaces differing in any field get disjoint keys.
///
/// # Examples
///
/// ```
/// use kvtier_storage::remote::Namespace;
///
/// let a = Namespace::new("llama-3-8b", "xxh3-v1/bs16", 64 << 10)?;
/// let b = Namespace::new("llama-3-8b", "xxh3-v1/bs16", 128 << 10)?;
/// assert_ne!(a.prefix(), b.prefix());
/// assert!(a.prefix().starts_with("llama-3-8b-"));
/// # Ok::<(), kvtier_storage::remote::G4Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    block_bytes: usize,
    tag: u64,
    prefix: String,
}

impl Namespace {
    /// A namespace for `model`, `hash_scheme` and blocks of `block_bytes` bytes.
    ///
    /// # Errors
    ///
    /// [`G4Error::InvalidNamespace`] when `model` or `hash_scheme` is empty or longer than 256
    /// bytes, or `block_bytes` is zero or above 1 GiB.
    pub fn new(model: &str, hash_scheme: &str, block_bytes: usize) -> Result<Self, G4Error> {
        let bad = |why: &str| G4Error::InvalidNamespace(why.to_string());
        if model.is_empty() || model.len() > 256 {
            return Err(bad("model name must be 1..=256 bytes"));
        }
        if hash_scheme.is_empty() || hash_scheme.len() > 256 {
            return Err(bad("hash scheme must be 1..=256 bytes"));
        }
        if block_bytes == 0 || block_bytes > 1 << 30 {
            return Err(bad("block size must be 1 byte ..= 1 GiB"));
        }
        // Length-prefixed fields, so ("ab", "c") and ("a", "bc") differ.
        let mut id = Vec::new();
        for field in [model.as_bytes(), hash_scheme.as_bytes()] {
            id.extend_from_slice(&(field.len() as u64).to_le_bytes());
            id.extend_from_slice(field);
        }
        id.extend_from_slice(&(block_bytes as u64).to_le_bytes());
        let digest = xxh3_128(&id);
        let tag = (digest >> 64) as u64 ^ digest as u64;
        let slug: String = model
            .chars()
            .take(48)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Ok(Self {
            block_bytes,
            tag,
            prefix: format!("{slug}-{tag:016x}"),
        })
    }

    /// Bytes of one block in this namespace.
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// The 64-bit digest of model, hash scheme and block size that every frame carries.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The first path segment of every key in this namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_namespace_and_bad_fields_are_errors() {
        let base = Namespace::new("m/odel x", "s", 4096).expect("valid");
        assert!(base.prefix().starts_with("m-odel-x-"));
        for other in [
            Namespace::new("m/odel y", "s", 4096),
            Namespace::new("m/odel x", "t", 4096),
            Namespace::new("m/odel x", "s", 8192),
        ] {
            let other = other.expect("valid");
            assert_ne!(other.tag(), base.tag());
            assert_ne!(other.prefix(), base.prefix());
        }
        assert!(Namespace::new("", "s", 1).is_err());
        assert!(Namespace::new("m", "", 1).is_err());
        assert!(Namespace::new("m", "s", 0).is_err());
        assert!(Namespace::new("m", "s", (1 << 30) + 1).is_err());
    }
}
