//! Clients for kvtier's binary protocol (skeleton; being written).
