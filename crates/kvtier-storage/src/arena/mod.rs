//! G2: the host-memory arena (work in progress).
