//! The Redis-compatible port (being written).
