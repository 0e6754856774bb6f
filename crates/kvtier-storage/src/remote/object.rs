//! The `object_store` backend: a local directory (the embedded default), memory, or
//! S3-compatible storage (cargo feature `s3`), driven from blocking calls.
//!
//! The backend owns a current-thread tokio runtime and blocks on each call, bounded by
//! `tokio::time::timeout`, so the caller sees a synchronous API and never hangs. Batches run
//! their requests concurrently inside one bounded call.
//!
//! Manifests are versioned objects `KEY/v{version:020}` written with `PutMode::Create` (atomic
//! create-if-absent on local disk, memory and S3): whoever creates version `n + 1` first wins
//! the compare-and-swap from `n`; versions more than [`KEEP_VERSIONS`] behind are then removed,
//! best effort (see there why not at once). An empty object is a tombstone (a delete). The latest version is the largest one listed. Object
//! stores have no per-key expiry, so a manifest's time to live is written into its frame and
//! checked on read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::backend::{Backend, BackendError, Live, StoredManifest};

/// Superseded manifest versions kept before the oldest is removed.
///
/// A compare-and-swap from `n` checks that `n` exists, then creates `n + 1`. Had `n + 1` been
/// created and already removed by cleanup, that create would succeed again and the update
/// would be lost (under the newer versions). Keeping this many versions means that can only
/// happen to a writer stalled between its check and its create for this many successful
/// updates of the same manifest, each of which is bounded by the store's timeout.
const KEEP_VERSIONS: u64 = 64;

/// Blocks and manifests in an `object_store` store.
pub(crate) struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("store", &self.store.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn classify(e: object_store::Error) -> BackendError {
    use object_store::Error as E;
    match e {
        E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } => {
            BackendError::Other(e.to_string())
        }
        other => BackendError::Unavailable(other.to_string()),
    }
}

fn version_path(key: &str, version: u64) -> Path {
    Path::from(format!("{key}/v{version:020}"))
}

impl ObjectBackend {
    /// A backend over `store`; every call is bounded by `timeout`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackendError::Other(format!("tokio runtime: {e}")))?;
        Ok(Self {
            store,
            runtime,
            timeout,
        })
    }

    fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        // Blocking on a runtime from inside another one would panic: refuse instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BackendError::Other(
                "blocking G4 call made on an async runtime thread; use spawn_blocking".into(),
            ));
        }
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// The largest version of a manifest and its bytes (empty = tombstone).
    async fn latest(&self, key: &str) -> Result<Option<(u64, Vec<u8>)>, BackendError> {
        let prefix = Path::from(key);
        for _ in 0..4 {
            let metas: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(classify)?;
            let Some(version) = metas
                .iter()
                .filter_map(|m| {
                    m.location
                        .filename()?
                        .strip_prefix('v')?
                        .parse::<u64>()
                        .ok()
                })
                .max()
            else {
                return Ok(None);
            };
            match self.store.get(&version_path(key, version)).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(classify)?;
                    return Ok(Some((version, bytes.to_vec())));
                }
                // Superseded and cleaned up between the list and the get: list again.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(BackendError::Other(format!(
            "manifest {key} changes too fast to read"
        )))
    }

    /// Creates version `version`; false when it exists. Removes an old version on success.
    async fn create(&self, key: &str, version: u64, bytes: Vec<u8>) -> Result<bool, BackendError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&version_path(key, version), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {
                if version > KEEP_VERSIONS {
                    // Best effort: a leftover old version is ignored by readers.
                    let old = version_path(key, version - KEEP_VERSIONS);
                    let _ = self.store.delete(&old).await;
                }
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }
}

async fn get_one(store: &dyn ObjectStore, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
    match store.get(&Path::from(key)).await {
        Ok(got) => Ok(Some(got.bytes().await.map_err(classify)?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(classify(e)),
    }
}

async fn head_one(store: &dyn ObjectStore, key: &str) -> Result<bool, BackendError> {
    match store.head(&Path::from(key)).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(classify(e)),
    }
}

impl Backend for ObjectBackend {
    fn put(&self, key: &str, value: Vec<u8>, _ttl: Option<Duration>) -> Result<(), BackendError> {
        self.run(async {
            self.store
                .put(&Path::from(key), PutPayload::from(value))
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>)>,
        _ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let store = &self.store;
        self.run(async {
            let puts = items.into_iter().map(|(key, value)| async move {
                store
                    .put(&Path::from(key), PutPayload::from(value))
                    .await
                    .map_err(classify)
            });
            futures::future::try_join_all(puts).await?;
            Ok(())
        })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.run(get_one(self.store.as_ref(), key))
    }

    fn get_batch(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let store = self.store.as_ref();
        self.run(futures::future::try_join_all(
            keys.iter().map(|k| get_one(store, k)),
        ))
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        self.run(head_one(self.store.as_ref(), key))
    }

    /// Concurrent `HEAD`s inside one bounded call.
    fn exists_batch(&self, keys: &[String]) -> Result<Vec<bool>, BackendError> {
        let store = self.store.as_ref();
        self.run(futures::future::try_join_all(
            keys.iter().map(|k| head_one(store, k)),
        ))
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.run(async {
            match self.store.delete(&Path::from(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
    }

    fn native_expiry(&self) -> bool {
        false
    }

    fn manifest_get(
        &self,
        key: &str,
        live: Live<'_>,
    ) -> Result<Option<StoredManifest>, BackendError> {
        let latest = self.run(self.latest(key))?;
        Ok(latest
            .filter(|(_, bytes)| !bytes.is_empty() && live(bytes))
            .map(|(v, bytes)| (v, bytes, None)))
    }

    fn manifest_put_new(
        &self,
        key: &str,
        frame: Vec<u8>,
        _ttl: Option<Duration>,
        live: Live<'_>,
    ) -> Result<Option<u64>, BackendError> {
        self.run(async {
            let next = match self.latest(key).await? {
                Some((_, bytes)) if !bytes.is_empty() && live(&bytes) => return Ok(None),
                Some((version, _)) => version + 1,
                None => 1,
            };
            Ok(self.create(key, next, frame).await?.then_some(next))
        })
    }

    fn manifest_cas(
        &self,
        key: &str,
        expected: u64,
        frame: Option<Vec<u8>>,
        live: Live<'_>,
    ) -> Result<Option<u64>, BackendError> {
        self.run(async {
            // `expected` must be the live latest: creating `expected + 1` then fails if anyone
            // else moved on from it, so checking that it exists and is live is enough.
            match get_one(self.store.as_ref(), version_path(key, expected).as_ref()).await? {
                Some(bytes) if !bytes.is_empty() && live(&bytes) => {}
                _ => return Ok(None),
            }
            let deleting = frame.is_none();
            let created = self
                .create(key, expected + 1, frame.unwrap_or_default())
                .await?;
            Ok(created.then_some(if deleting { 0 } else { expected + 1 }))
        })
    }

    fn manifest_touch_ttl(&self, _key: &str, _ttl: Duration) -> Result<Option<bool>, BackendError> {
        Ok(None)
    }
}

/// A local-directory store rooted at `dir` (created if missing).
pub(crate) fn local_dir(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, BackendError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BackendError::Other(format!("creating {}: {e}", dir.display())))?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| BackendError::Other(e.to_string()))?;
    Ok(Arc::new(fs))
}

/// An in-memory store (tests, and a stand-in where no shared store exists).
pub(crate) fn memory() -> Arc<dyn ObjectStore> {
    Arc::new(object_store::memory::InMemory::new())
}
