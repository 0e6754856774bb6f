//! An idle server uses ~no CPU: its workers park (no spinning) and its IO threads block in
//! the kernel. Alone in its test binary so no other test's threads are on the process clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kvtier_server::Backend;

/// Process CPU time, all threads (user + system).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn idle_server_threads_are_parked() {
    for backend in Backend::ALL {
        let service = Arc::new(TestService::default());
        let server = builder(service, backend).with_workers(4).start().unwrap();
        let mut s = connect(server.local_addrs()[0]);
        for i in 0..100 {
            roundtrip(&mut s, &frame(OP_ECHO, 0, i, 100));
        }
        std::thread::sleep(Duration::from_millis(100));
        let before = cpu_time();
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu_time() - before;
        // Four parked workers and one blocked IO thread: a spinning one would burn ~1 s.
        assert!(
            used < Duration::from_millis(50),
            "{backend:?}: {used:?} of CPU in 1 s idle"
        );
        drop(s);
        server.shutdown().unwrap();
    }
}
