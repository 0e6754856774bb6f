//! The Python that tests run real publishers with.
//!
//! `scripts/python-env.sh` creates a virtual environment with pyzmq, msgpack and msgspec
//! (once, under `target/py-venv` unless `KVTIER_PY_VENV` says otherwise) and prints its
//! interpreter's path; [`python`] runs it once per test process. Tests that need Python call
//! [`skip_python_tests`] first, so that `KVTIER_SKIP_PYTHON_TESTS=1` skips them where there is
//! no Python or no access to PyPI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::workspace_root;

/// Whether `KVTIER_SKIP_PYTHON_TESTS` is set (to anything but `0`); says so on stderr when it
/// is. A test that needs Python returns early when this is true.
pub fn skip_python_tests() -> bool {
    let skip = std::env::var_os("KVTIER_SKIP_PYTHON_TESTS").is_some_and(|v| v != "0");
    if skip {
        eprintln!("KVTIER_SKIP_PYTHON_TESTS is set: skipping");
    }
    skip
}

/// The venv's python, created by `scripts/python-env.sh` (run once per test process; the
/// script itself is cheap when the venv is already complete, and safe to run concurrently).
///
/// # Panics
///
/// If the script fails (it needs python3 with venv and access to PyPI) or prints no path.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = workspace_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/python-env.sh"))
            .current_dir(&root)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/python-env.sh");
        assert!(
            out.status.success(),
            "scripts/python-env.sh failed (it needs python3 with venv and access to PyPI; \
             set KVTIER_SKIP_PYTHON_TESTS=1 to skip)"
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(stdout.lines().last().expect("a python path").trim())
    })
}
