//! kvtier-testkit: the fixtures kvtier's integration tests share.
//!
//! This crate owns test plumbing that more than one test file needs: where the workspace is
//! ([`workspace_root`]), the Python virtual environment that `scripts/python-env.sh` builds
//! and the `KVTIER_SKIP_PYTHON_TESTS` switch ([`python`]), free local ports ([`net`]), child
//! processes that never outlive a test and whose output is read line by line ([`process`]),
//! the stand-in for vLLM's ZeroMQ KV-event publisher ([`vllm`], scripted by the test in
//! [`vllm_script`]), and a std-only HTTP/1.1
//! client ([`http`]). It owns no assertions about kvtier itself: what a test checks stays in
//! the test. It depends on std only, is never published, and is only ever a
//! `[dev-dependencies]` entry; nothing in a shipped crate may use it.
//!
//! Fixtures panic with a message instead of returning errors: a broken fixture is a failed
//! test.
//!
//! | module | what |
//! |---|---|
//! | [`python`] | [`python::skip_python_tests`], [`python::python`] (the venv's interpreter) |
//! | [`net`] | [`net::free_port`] |
//! | [`process`] | [`process::ChildGuard`] (kill on drop), [`process::Lines`] (stdout lines) |
//! | [`vllm`] | [`vllm::VllmPublisher`], `crates/kvtier-router/tests/python/vllm_publisher.py` |
//! | [`vllm_script`] | [`vllm_script::ScriptedPublisher`]: the same script publishing the test's own batches |
//! | [`http`] | [`http::request`], [`http::get`], [`http::post`] |
//!
//! # Example
//!
//! A toy server on a free port, queried with the HTTP client:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpListener;
//!
//! use kvtier_testkit::{http, net};
//!
//! let listener = TcpListener::bind(("127.0.0.1", net::free_port()))?;
//! let addr = listener.local_addr()?;
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (stream, _) = listener.accept()?;
//!     // Read the request up to its blank line (a GET has no body), then answer.
//!     let mut reader = BufReader::new(&stream);
//!     let mut line = String::new();
//!     while reader.read_line(&mut line)? > 2 {
//!         line.clear();
//!     }
//!     (&stream).write_all(
//!         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n",
//!     )
//! });
//! assert_eq!(http::get(addr, "/health"), (200, "ok\n".to_string()));
//! server.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A test that needs Python starts with the skip check:
//!
//! ```no_run
//! use kvtier_testkit::python::skip_python_tests;
//! use kvtier_testkit::vllm::VllmPublisher;
//!
//! if skip_python_tests() {
//!     return;
//! }
//! let mut publisher = VllmPublisher::builder().with_dp_rank(2).start();
//! publisher.send("go");
//! assert!(publisher.wait_line("PHASE1_DONE", std::time::Duration::from_secs(20)));
//! ```

pub mod http;
pub mod net;
pub mod process;
pub mod python;
pub mod rng;
pub mod vllm;
pub mod vllm_script;

use std::path::{Path, PathBuf};

/// The workspace's root directory (the one holding `scripts/` and `crates/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
