//! The cluster: ringway instances agreeing, through the Raft core in [`crate::raft`],
//! on every pool's upstream membership. [`state`] is the replicated state machine,
//! [`driver`] runs the Raft node over it, [`storage`] keeps its log on disk and
//! [`transport`] carries Raft messages and forwarded changes between instances, and
//! [`forward`] is the one path to propose a change from any instance. Starting a
//! member (storage, transport with its TLS or secret, the driver thread) is wiring,
//! done by the control layer ([`crate::control`]'s `member`): this module names
//! neither rustls nor the metrics registry.

pub mod driver;
pub mod forward;
pub mod state;
pub mod storage;
pub mod transport;

use md5::{Digest, Md5};

use crate::raft::NodeId;

/// The Raft id of the node named `name` in the config: the first eight bytes of its
/// MD5, never 0 (Raft's "nobody"). Every instance derives the same id from the same
/// name, with no coordination.
pub fn raft_id(name: &str) -> NodeId {
    let digest = Md5::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes).max(1)
}
