//! Clustering of ringway instances: the peer transport that carries Raft messages between them.
pub mod transport;
