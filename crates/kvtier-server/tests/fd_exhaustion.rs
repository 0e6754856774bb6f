//! Out of file descriptors: accept fails (EMFILE) while clients wait in the backlog. The IO
//! thread must neither spin nor forget the backlog: once descriptors free up, the waiting
//! connections are accepted and served. Alone in its test binary: it lowers the process's
//! descriptor limit.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kvtier_server::Backend;
use rustix::process::{Resource, getrlimit, setrlimit};

/// Process CPU time (all threads), without opening a file (there are no descriptors left).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[test]
fn backlog_is_served_after_descriptors_free_up() {
    let original = getrlimit(Resource::Nofile);
    for backend in Backend::ALL {
        // Clients wait in the backlog of a listener bound before the server starts...
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients: Vec<_> = (0..4u64)
            .map(|id| {
                let mut s = connect(addr);
                s.write_all(&frame(OP_ECHO, 0, id, 10)).unwrap();
                s
            })
            .collect();
        // ...and the server starts with room for its own setup (an eventfd and an epoll or
        // io_uring descriptor) plus one connection. (`open_fds` counts its own directory
        // handle, hence one more than open now.)
        let mut limit = original;
        limit.current = Some(open_fds() + 2);
        setrlimit(Resource::Nofile, limit).unwrap();
        let service = Arc::new(TestService::default());
        let server = kvtier_server::ServerBuilder::with_shared_service(service)
            .listen_on(listener, kvtier_server::BinaryFramer::new())
            .with_backend(kvtier_server::BackendChoice::Force(backend))
            .with_workers(1)
            .start()
            .unwrap();
        // Some of those could not be accepted; give the server time to hit EMFILE.
        std::thread::sleep(Duration::from_millis(200));
        let accepted = server.counters().connections_accepted;
        assert!(
            accepted < 4,
            "{backend:?}: limit too loose ({accepted} accepted)"
        );
        // No spinning on the failing accept meanwhile.
        let before = cpu_time();
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_time() - before;
        assert!(
            used < Duration::from_millis(100),
            "{backend:?}: {used:?} CPU while out of fds"
        );
        setrlimit(Resource::Nofile, original).unwrap();
        // Every client, accepted late or not, gets its reply.
        for (id, s) in clients.iter_mut().enumerate() {
            let back = read_frame(s).unwrap_or_else(|e| panic!("{backend:?}: client {id}: {e}"));
            assert_eq!(request_id(&back), id as u64);
        }
        assert_eq!(server.counters().connections_accepted, 4);
        drop(clients);
        server.shutdown().unwrap();
    }
}
