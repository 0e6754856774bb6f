//! The Redis-compatible port (placeholder until the RESP service lands).

use serde::Deserialize;

/// The RESP keyspace's settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {}
