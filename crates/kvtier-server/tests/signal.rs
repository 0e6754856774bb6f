//! `Server::run_until_signal`: SIGTERM stops the server gracefully (in-flight replies flushed,
//! drain hook run). Alone in its test binary because it raises a signal in the process.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use kvtier_server::Backend;

#[test]
fn sigterm_shuts_down_gracefully() {
    // A process-wide handler first, so a SIGTERM raised before the server's own handler is
    // installed cannot kill the test process.
    let seen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, seen.clone()).unwrap();
    for backend in Backend::ALL {
        let service = Arc::new(TestService::default());
        let server = builder(service.clone(), backend).start().unwrap();
        let mut client = connect(server.local_addrs()[0]);
        let runner = std::thread::spawn(move || server.run_until_signal());
        client.write_all(&frame(OP_DELAY, 300, 1, 100)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        seen.store(false, Ordering::SeqCst);
        while !runner.is_finished() {
            signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        runner.join().unwrap().unwrap();
        assert!(seen.load(Ordering::SeqCst));
        // The delayed request was in flight when the signal came: answered before the close.
        assert_eq!(request_id(&read_frame(&mut client).unwrap()), 1);
        assert!(closed(&mut client));
        assert_eq!(service.drained.load(Ordering::SeqCst), 1);
    }
}
