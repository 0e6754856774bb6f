//! Router snapshots from untrusted bytes: loading never panics, and a loaded router writes a
//! snapshot that loads back to the same instances.
#![no_main]

use kvtier_router::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(router) = Router::from_snapshot_bytes(Router::builder(), data) {
        let bytes = router.snapshot_bytes().expect("a loaded router snapshots");
        let again = Router::from_snapshot_bytes(Router::builder(), &bytes).expect("round trip");
        assert_eq!(again.instances(), router.instances());
    }
});
