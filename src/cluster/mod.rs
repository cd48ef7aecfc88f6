//! Cluster membership and replication plumbing around the Raft core: durable storage.
pub mod storage;
