//! Typed attachments: values of any `Send + Sync + 'static` type hung on a hash in the
//! [`Registry`].
//!
//! Per hash and per value type, values are attached either in *unique* mode (one value,
//! replaced by the next [`Registry::attach_unique`]) or in *multiple* mode (a list appended to
//! by [`Registry::attach`]); asking for the other mode is an [`AttachmentError`] that hands the
//! value back. [`Registry::detach`] removes every value of a type, whatever its mode.
//!
//! Every value is stored behind its own `Arc`. Readers clone the `Arc`s under the shard's read
//! lock and run their closure after releasing it, so no registry lock is held while user code
//! runs — closures may call back into the registry freely — and a value's `Clone` and `Drop`
//! never run under a lock either (replaced or detached values are returned to the caller,
//! values dropped with a hash's last presence are dropped after unlocking).
//!
//! # Lifetime
//! Attaching to a hash that no tier holds is allowed (a caller may label a block before it
//! lands). An entry lives while some tier holds its hash or it has attachments. When a presence
//! update leaves the hash held by no tier (the last tier evicted it), its attachments are
//! dropped. Attachments made while no tier holds the hash stay until detached or until the
//! hash arrives in a tier and leaves again.

use std::any::{Any, TypeId};
use std::fmt;

use crate::SequenceHash;
use crate::registry::Registry;
use crate::registry::entry::{Attached, Entry};
use crate::sync::Arc;

/// How values of one type are attached to one hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// One value, replaced by the next [`Registry::attach_unique`].
    Unique,
    /// A list, appended to by [`Registry::attach`].
    Multiple,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Unique => "unique",
            AttachMode::Multiple => "multiple",
        })
    }
}

/// Why a value could not be attached; the value is handed back.
///
/// # Examples
///
/// ```
/// use kvtier_core::{AttachMode, AttachmentError, Registry, SequenceHash};
///
/// let registry = Registry::new();
/// let h = SequenceHash::root(1);
/// registry.attach::<u32>(h, 1).unwrap();
/// let err = registry.attach_unique::<u32>(h, 2).unwrap_err();
/// assert!(matches!(err, AttachmentError::ModeMismatch { attached: AttachMode::Multiple, .. }));
/// assert_eq!(err.into_value(), 2);
/// ```
#[non_exhaustive]
pub enum AttachmentError<V> {
    /// Values of this type are already attached to the hash in the other mode.
    ModeMismatch {
        /// The hash.
        hash: SequenceHash,
        /// `std::any::type_name` of the value type.
        type_name: &'static str,
        /// The mode the existing values were attached in.
        attached: AttachMode,
        /// The value that was not attached.
        value: V,
    },
}

impl<V> AttachmentError<V> {
    /// The value that was not attached.
    pub fn into_value(self) -> V {
        match self {
            AttachmentError::ModeMismatch { value, .. } => value,
        }
    }
}

impl<V> fmt::Debug for AttachmentError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachmentError::ModeMismatch {
                hash,
                type_name,
                attached,
                ..
            } => f
                .debug_struct("ModeMismatch")
                .field("hash", hash)
                .field("type_name", type_name)
                .field("attached", attached)
                .finish_non_exhaustive(),
        }
    }
}

impl<V> fmt::Display for AttachmentError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachmentError::ModeMismatch {
                hash,
                type_name,
                attached,
                ..
            } => write!(
                f,
                "`{type_name}` is attached to {hash} in {attached} mode; cannot attach it in the other mode"
            ),
        }
    }
}

impl<V> std::error::Error for AttachmentError<V> {}

fn mode_of(e: &Entry, ty: TypeId) -> Option<AttachMode> {
    e.attachments().iter().find(|a| a.ty == ty).map(|a| {
        if a.unique {
            AttachMode::Unique
        } else {
            AttachMode::Multiple
        }
    })
}

/// Hands `value` back in an error when values of its type are attached to `e` in the mode that
/// conflicts with `wanted`.
fn check_mode<V: 'static>(
    e: &Entry,
    hash: SequenceHash,
    wanted: AttachMode,
    value: V,
) -> Result<V, AttachmentError<V>> {
    match mode_of(e, TypeId::of::<V>()) {
        Some(attached) if attached != wanted => Err(AttachmentError::ModeMismatch {
            hash,
            type_name: std::any::type_name::<V>(),
            attached,
            value,
        }),
        _ => Ok(value),
    }
}

fn downcast<V: Any + Send + Sync>(a: Arc<dyn Any + Send + Sync>) -> Option<Arc<V>> {
    // Values are filed under their own TypeId, so this always succeeds.
    a.downcast::<V>().ok()
}

impl Registry {
    /// Attaches `value` to `hash` as the one value of type `V`, returning the value it
    /// replaces.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Registry, SequenceHash};
    ///
    /// let registry = Registry::new();
    /// let h = SequenceHash::root(9);
    /// assert!(registry.attach_unique(h, String::from("a")).unwrap().is_none());
    /// let old = registry.attach_unique(h, String::from("b")).unwrap();
    /// assert_eq!(old.as_deref().map(String::as_str), Some("a"));
    /// assert_eq!(registry.get_unique::<String>(h).as_deref(), Some("b"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`AttachmentError::ModeMismatch`] (with `value`) when values of type `V` are attached to
    /// `hash` with [`attach`](Self::attach).
    pub fn attach_unique<V: Send + Sync + 'static>(
        &self,
        hash: SequenceHash,
        value: V,
    ) -> Result<Option<Arc<V>>, AttachmentError<V>> {
        let ty = TypeId::of::<V>();
        let mut shard = self.inner.shard(hash).write();
        let entry = shard.map.entry(hash).or_insert(Entry::EMPTY);
        let value: Arc<dyn Any + Send + Sync> =
            Arc::new(check_mode(entry, hash, AttachMode::Unique, value)?);
        let list = &mut entry.extra_mut().attachments;
        let old = match list.iter_mut().find(|a| a.ty == ty) {
            Some(a) => Some(std::mem::replace(&mut a.value, value)),
            None => {
                list.push(Attached {
                    ty,
                    unique: true,
                    value,
                });
                None
            }
        };
        drop(shard);
        Ok(old.and_then(downcast))
    }

    /// Appends `value` to the values of type `V` attached to `hash`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Registry, SequenceHash};
    ///
    /// let registry = Registry::new();
    /// let h = SequenceHash::root(9);
    /// registry.attach(h, 1u64).unwrap();
    /// registry.attach(h, 2u64).unwrap();
    /// let sum = registry.with_all::<u64, _>(h, |vs| vs.iter().map(|v| **v).sum::<u64>());
    /// assert_eq!(sum, 3);
    /// ```
    ///
    /// # Errors
    ///
    /// [`AttachmentError::ModeMismatch`] (with `value`) when a value of type `V` is attached to
    /// `hash` with [`attach_unique`](Self::attach_unique).
    pub fn attach<V: Send + Sync + 'static>(
        &self,
        hash: SequenceHash,
        value: V,
    ) -> Result<(), AttachmentError<V>> {
        let ty = TypeId::of::<V>();
        let mut shard = self.inner.shard(hash).write();
        let entry = shard.map.entry(hash).or_insert(Entry::EMPTY);
        let value = check_mode(entry, hash, AttachMode::Multiple, value)?;
        entry.extra_mut().attachments.push(Attached {
            ty,
            unique: false,
            value: Arc::new(value),
        });
        Ok(())
    }

    /// The unique value of type `V` on `hash`, shared. `None` when there is none, or when `V`
    /// is attached in multiple mode.
    pub fn get_unique_arc<V: Send + Sync + 'static>(&self, hash: SequenceHash) -> Option<Arc<V>> {
        let ty = TypeId::of::<V>();
        let found = {
            let shard = self.inner.shard(hash).read();
            shard
                .map
                .get(&hash)?
                .attachments()
                .iter()
                .find(|a| a.ty == ty && a.unique)
                .map(|a| a.value.clone())
        };
        found.and_then(downcast)
    }

    /// A clone of the unique value of type `V` on `hash` (cloned after the lock is released).
    /// `None` when there is none, or when `V` is attached in multiple mode.
    pub fn get_unique<V: Clone + Send + Sync + 'static>(&self, hash: SequenceHash) -> Option<V> {
        self.get_unique_arc::<V>(hash).map(|v| V::clone(&v))
    }

    /// Runs `f` on the unique value of type `V` on `hash`, with no registry lock held (`f` may
    /// call back into the registry). `None` when there is no such value.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Registry, SequenceHash};
    ///
    /// let registry = Registry::new();
    /// let h = SequenceHash::root(3);
    /// registry.attach_unique(h, vec![1u8, 2, 3]).unwrap();
    /// assert_eq!(registry.with_unique(h, |v: &Vec<u8>| v.len()), Some(3));
    /// ```
    pub fn with_unique<V: Send + Sync + 'static, R>(
        &self,
        hash: SequenceHash,
        f: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        self.get_unique_arc::<V>(hash).map(|v| f(&v))
    }

    /// Every value of type `V` on `hash`, in attachment order, whatever the mode (a unique
    /// value is a list of one). Empty when there is none.
    pub fn get_all<V: Send + Sync + 'static>(&self, hash: SequenceHash) -> Vec<Arc<V>> {
        let ty = TypeId::of::<V>();
        let found: Vec<_> = {
            let shard = self.inner.shard(hash).read();
            match shard.map.get(&hash) {
                None => return Vec::new(),
                Some(e) => e
                    .attachments()
                    .iter()
                    .filter(|a| a.ty == ty)
                    .map(|a| a.value.clone())
                    .collect(),
            }
        };
        found.into_iter().filter_map(downcast).collect()
    }

    /// Runs `f` on every value of type `V` on `hash` (see [`get_all`](Self::get_all)), with no
    /// registry lock held. `f` sees an empty slice when there is none.
    pub fn with_all<V: Send + Sync + 'static, R>(
        &self,
        hash: SequenceHash,
        f: impl FnOnce(&[Arc<V>]) -> R,
    ) -> R {
        f(&self.get_all::<V>(hash))
    }

    /// Removes every value of type `V` from `hash` (either mode) and returns them in
    /// attachment order; the caller decides when they drop.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{Registry, SequenceHash};
    ///
    /// let registry = Registry::new();
    /// let h = SequenceHash::root(4);
    /// registry.attach(h, 'x').unwrap();
    /// registry.attach(h, 'y').unwrap();
    /// assert_eq!(registry.detach::<char>(h).len(), 2);
    /// assert!(registry.get_all::<char>(h).is_empty());
    /// ```
    pub fn detach<V: Send + Sync + 'static>(&self, hash: SequenceHash) -> Vec<Arc<V>> {
        let ty = TypeId::of::<V>();
        let mut removed = Vec::new();
        {
            let mut shard = self.inner.shard(hash).write();
            let Some(entry) = shard.map.get_mut(&hash) else {
                return Vec::new();
            };
            if !entry.has_attachments() {
                return Vec::new();
            }
            let list = &mut entry.extra_mut().attachments;
            let mut i = 0;
            while i < list.len() {
                if list[i].ty == ty {
                    removed.push(list.remove(i).value);
                } else {
                    i += 1;
                }
            }
            entry.shrink();
            if entry.is_vacant() {
                shard.map.remove(&hash);
            }
        }
        removed.into_iter().filter_map(downcast).collect()
    }

    /// Whether anything is attached to `hash`.
    pub fn has_attachments(&self, hash: SequenceHash) -> bool {
        let shard = self.inner.shard(hash).read();
        shard.map.get(&hash).is_some_and(Entry::has_attachments)
    }
}
