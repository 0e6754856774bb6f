//! [`DiskEvents`]: the disk tier's residency as block events of the `Disk` medium, on the
//! node's publisher beside the host-memory events, so a router following the node (SUBSCRIBE)
//! knows which blocks it can still serve from disk after host memory evicted them.

use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{EmitPolicy, EventBatch, EventKind, Payload, Publisher};
use kvtier_storage::disk::DiskListener;

/// Publishes what the disk tier stores and removes.
pub(crate) struct DiskEvents {
    publisher: Publisher,
}

impl std::fmt::Debug for DiskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskEvents")
            .field("instance", &self.publisher.instance())
            .finish()
    }
}

impl DiskEvents {
    pub(crate) fn new(publisher: Publisher) -> Self {
        Self { publisher }
    }

    fn publish(&self, kind: EventKind, hashes: &[SequenceHash]) {
        let mut hashes = hashes.to_vec();
        // The message's order: by position ascending for Create, descending for Remove.
        match kind {
            EventKind::Create => hashes.sort_by_key(|h| h.position()),
            EventKind::Remove => hashes.sort_by_key(|h| std::cmp::Reverse(h.position())),
        }
        // A publisher that shut down (the node is stopping) has no one to tell.
        let _ = self.publisher.publish(Payload::Batch(EventBatch {
            medium: Medium::Disk,
            kind,
            hashes,
            policy: EmitPolicy::All,
        }));
    }
}

impl DiskListener for DiskEvents {
    fn stored(&self, hashes: &[SequenceHash]) {
        self.publish(EventKind::Create, hashes);
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        self.publish(EventKind::Remove, hashes);
    }
}
