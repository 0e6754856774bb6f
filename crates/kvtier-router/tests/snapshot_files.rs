//! Snapshot files as a service meets them: saves racing each other on one path, snapshots with
//! names that look like temporary files, and damaged or unreadable files at start, which must
//! leave an empty router and the reason rather than refuse to start.

use std::path::Path;
use std::sync::Arc;

use kvtier_core::Medium;
use kvtier_events::{EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload};
use kvtier_router::{Router, SnapshotError, write_snapshot};

mod common;
use common::chain;

fn router_with(instances: u128) -> Router {
    let mut r = Router::builder().build();
    for i in 1..=instances {
        r.apply(EventMessage {
            instance: InstanceId(i),
            event_id: 1,
            payload: Payload::Batch(EventBatch {
                medium: Medium::Gpu,
                kind: EventKind::Create,
                hashes: chain(4, i as u64),
                policy: EmitPolicy::All,
            }),
        });
    }
    r
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn concurrent_saves_to_one_path_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.snap");
    let routers: Vec<Arc<Router>> = (1..=4).map(|n| Arc::new(router_with(n))).collect();
    let threads: Vec<_> = routers
        .iter()
        .map(|r| {
            let (r, path) = (r.clone(), path.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    r.save_snapshot(&path).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Whichever save came last, the file is one whole snapshot, and no temporary is left.
    let loaded = Router::load_snapshot(Router::builder(), &path).unwrap();
    let n = loaded.stats().instances;
    assert!((1..=4).contains(&n));
    assert_eq!(loaded.stats().entries, 4 * n);
    assert_eq!(names(dir.path()), ["router.snap"]);
}

#[test]
fn a_snapshot_named_like_a_temporary_is_still_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["router.tmp", "router", ".router.tmp", "x.partial"] {
        let path = dir.path().join(name);
        let r = router_with(2);
        let bytes = r.snapshot_bytes().unwrap();
        write_snapshot(&path, &bytes).unwrap();
        write_snapshot(&path, &bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(names(dir.path()), [name]);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn a_failed_write_leaves_the_old_snapshot_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.snap");
    let old = router_with(1).snapshot_bytes().unwrap();
    write_snapshot(&path, &old).unwrap();
    // A directory where the snapshot should go cannot be replaced by a file.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("inside"), b"x").unwrap();
    let err = write_snapshot(&blocked, &old).unwrap_err();
    assert!(matches!(err, SnapshotError::Io(_)), "{err}");
    // A directory that does not exist.
    assert!(write_snapshot(&dir.path().join("no/such/dir/snap"), &old).is_err());
    assert_eq!(names(dir.path()), ["blocked", "router.snap"]);
    assert_eq!(std::fs::read(&path).unwrap(), old);
}

#[test]
fn damaged_or_unreadable_snapshots_start_an_empty_router_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let good = router_with(3).snapshot_bytes().unwrap();
    let restore = |bytes: &[u8]| {
        let path = dir.path().join("snap");
        std::fs::write(&path, bytes).unwrap();
        Router::restore_or_empty(Router::builder(), &path)
    };

    let (r, err) = restore(&good);
    assert!(err.is_none());
    assert_eq!(r.stats().instances, 3);
    assert_eq!(r.next_event_id(InstanceId(2)), Some(2));

    let (r, err) = restore(&good[..good.len() / 2]);
    assert!(
        matches!(err, Some(SnapshotError::Truncated { .. })),
        "{err:?}"
    );
    assert_eq!((r.stats().instances, r.stats().entries), (0, 0));

    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    let (r, err) = restore(&flipped);
    assert!(matches!(err, Some(SnapshotError::Checksum)), "{err:?}");
    assert_eq!(r.stats().instances, 0);

    let mut version = good.clone();
    version[8..12].copy_from_slice(&2u32.to_le_bytes());
    let (r, err) = restore(&version);
    assert!(matches!(err, Some(SnapshotError::Version(2))), "{err:?}");
    assert_eq!(r.stats().instances, 0);

    let (_, err) = restore(b"");
    assert!(matches!(err, Some(SnapshotError::BadMagic)), "{err:?}");

    // Unreadable: the path is a directory.
    let (r, err) = Router::restore_or_empty(Router::builder(), dir.path());
    let err = err.unwrap();
    assert!(
        matches!(err, SnapshotError::Io(_)) && !err.is_missing(),
        "{err}"
    );
    assert_eq!(r.stats().instances, 0);

    // Missing: a first start.
    let (r, err) = Router::restore_or_empty(Router::builder(), &dir.path().join("none"));
    assert!(err.unwrap().is_missing());
    assert_eq!(r.stats().instances, 0);

    // The empty router works.
    let (mut r, _) = restore(&flipped);
    r.apply(EventMessage {
        instance: InstanceId(9),
        event_id: 1,
        payload: Payload::Heartbeat,
    });
    assert_eq!(r.stats().instances, 1);
}
