//! The node's own counters (what the tiers and the IO runtime do not count themselves):
//! requests by operation, blocks stored, hit and missed, errors sent. Relaxed atomics, read as
//! `(name, value)` pairs for STATS and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use kvtier_proto::PutStatus;

macro_rules! counters {
    ($($field:ident: $doc:literal),* $(,)?) => {
        /// Counters of the block service.
        #[derive(Debug, Default)]
        pub(crate) struct StoreCounters {
            $(#[doc = $doc] pub(crate) $field: AtomicU64,)*
        }

        impl StoreCounters {
            /// Every counter by name.
            pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
                vec![$((stringify!($field).to_string(), self.$field.load(Relaxed)),)*]
            }

            /// Help text of a counter, by name.
            pub(crate) fn help(name: &str) -> Option<&'static str> {
                match name {
                    $(stringify!($field) => Some($doc),)*
                    _ => None,
                }
            }
        }
    };
}

counters! {
    requests_hello: "HELLO requests",
    requests_put: "PUT requests",
    requests_get: "GET requests",
    requests_match: "MATCH requests",
    requests_exists: "EXISTS requests",
    requests_delete: "DELETE requests",
    requests_stats: "STATS requests",
    requests_subscribe: "SUBSCRIBE requests",
    requests_ping: "PING requests",
    blocks_stored: "blocks a PUT stored",
    blocks_already_present: "blocks a PUT found already stored",
    blocks_no_space: "blocks a PUT could not store for lack of space",
    blocks_bad_size: "blocks a PUT refused for their size",
    blocks_durable: "blocks written to disk and synced before a durable PUT was acknowledged",
    get_hits_g2: "blocks a GET served from host memory",
    get_hits_lower: "blocks a GET served from disk (then promoted)",
    get_misses: "blocks a GET found nowhere",
    get_slow_path: "GET requests handed to the slow lane for disk reads",
    match_blocks: "blocks of the prefixes MATCH found",
    blocks_deleted: "blocks a DELETE removed",
    errors_sent: "ERROR frames sent",
    auth_failures: "HELLOs refused for a bad token",
}

fn inc(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

impl StoreCounters {
    /// One PUT's statuses.
    pub(crate) fn count_put(&self, status: &[PutStatus]) {
        inc(&self.requests_put, 1);
        for s in status {
            let c = match s {
                PutStatus::Stored => &self.blocks_stored,
                PutStatus::AlreadyPresent => &self.blocks_already_present,
                PutStatus::NoSpace => &self.blocks_no_space,
                _ => &self.blocks_bad_size,
            };
            inc(c, 1);
        }
    }

    /// Blocks written to disk for a durable PUT.
    pub(crate) fn durable_blocks(&self, n: usize) {
        inc(&self.blocks_durable, n);
    }

    /// Blocks removed by a DELETE.
    pub(crate) fn deleted(&self, n: usize) {
        inc(&self.requests_delete, 1);
        inc(&self.blocks_deleted, n);
    }

    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        inc(counter, n);
    }
}
