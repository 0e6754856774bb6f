//! kvtier's KV service over the storage tiers (skeleton; being written).

pub mod resp;
