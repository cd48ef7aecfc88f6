//! Transport counters: lock-free atomics updated on the hot paths, and the plain
//! snapshots [`Transport::stats`](super::Transport::stats) returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::raft::NodeId;

/// Counters of one outbound peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_io: AtomicU64,
    pub dropped_fault: AtomicU64,
    pub dropped_oversize: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub connected: AtomicBool,
}

/// Counters not tied to a known peer (inbound connections, routing).
#[derive(Debug, Default)]
pub(crate) struct GlobalCounters {
    pub received: AtomicU64,
    pub inbound_dropped_full: AtomicU64,
    pub inbound_dropped_fault: AtomicU64,
    pub handshakes_rejected: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub unknown_destination: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub decode_errors: AtomicU64,
    pub misaddressed: AtomicU64,
    pub auth_rejected: AtomicU64,
    pub frames_bad_tag: AtomicU64,
    pub handshakes_silent: AtomicU64,
    pub handshakes_evicted: AtomicU64,
    pub requests_served: AtomicU64,
    pub requests_busy: AtomicU64,
    pub replies_unmatched: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// A snapshot of one outbound peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// Where this peer is dialled.
    pub addr: SocketAddr,
    /// An outbound connection is established and past its handshake.
    pub connected: bool,
    /// Messages waiting in the queue.
    pub queued: usize,
    /// Messages written and flushed to a connection.
    pub sent: u64,
    /// Bytes of those messages as written (frames, with any session overhead).
    pub bytes_sent: u64,
    /// Messages evicted because the queue was full (the oldest go first).
    pub dropped_full: u64,
    /// Messages lost with a connection that failed while writing them.
    pub dropped_io: u64,
    /// Messages discarded by the test fault switch.
    pub dropped_fault: u64,
    /// Messages whose encoding exceeds the frame bound (never sent).
    pub dropped_oversize: u64,
    /// Successful connections (handshake accepted); reconnects are `connects - 1`.
    pub connects: u64,
    /// Dial or handshake attempts that failed.
    pub connect_failures: u64,
}

/// A snapshot of the whole transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Current peers, by id.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Messages received and handed to the Raft core.
    pub received: u64,
    /// Received messages dropped because the core's inbound channel was full.
    pub inbound_dropped_full: u64,
    /// Received messages discarded by the test fault switch.
    pub inbound_dropped_fault: u64,
    /// Inbound connections refused before their peer was known: wrong magic, version or
    /// cluster, wrong target node, timeout, or too many handshakes at once.
    pub handshakes_rejected: u64,
    /// Inbound connections from an id not in the current peer set.
    pub unknown_peer: u64,
    /// Messages passed to `send` for an id that is not a peer (or is this node).
    pub unknown_destination: u64,
    /// Frames with a zero or oversized length (the connection is closed).
    pub frames_rejected: u64,
    /// Frames that did not decode (the connection is closed).
    pub decode_errors: u64,
    /// Messages whose `from` is not the connection's peer or whose `to` is not this node.
    pub misaddressed: u64,
    /// Handshakes refused for authentication, on either side: a wrong proof of the
    /// cluster secret, a certificate that does not name the node, or (inbound) another
    /// auth mode.
    pub auth_rejected: u64,
    /// Frames whose tag did not verify (forged, replayed, spliced; connection closed).
    pub frames_bad_tag: u64,
    /// Inbound connections closed for sending nothing within the first-byte deadline.
    pub handshakes_silent: u64,
    /// Pending silent handshakes closed to make room for a newer connection.
    pub handshakes_evicted: u64,
    /// Peers' requests handed to the request handler.
    pub requests_served: u64,
    /// Peers' requests answered `Busy` (too many in flight from that peer).
    pub requests_busy: u64,
    /// Replies that matched no waiting call (late, or from the wrong peer).
    pub replies_unmatched: u64,
    /// A peer said this node is not a member of the cluster (see
    /// [`Transport::not_a_member`](super::Transport::not_a_member)).
    pub not_a_member: bool,
}

impl PeerCounters {
    pub(crate) fn snapshot(&self, addr: SocketAddr, queued: usize) -> PeerStats {
        PeerStats {
            addr,
            connected: self.connected.load(Relaxed),
            queued,
            sent: self.sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            dropped_full: self.dropped_full.load(Relaxed),
            dropped_io: self.dropped_io.load(Relaxed),
            dropped_fault: self.dropped_fault.load(Relaxed),
            dropped_oversize: self.dropped_oversize.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
        }
    }
}

impl GlobalCounters {
    pub(crate) fn snapshot(&self, peers: BTreeMap<NodeId, PeerStats>) -> TransportStats {
        TransportStats {
            peers,
            received: self.received.load(Relaxed),
            inbound_dropped_full: self.inbound_dropped_full.load(Relaxed),
            inbound_dropped_fault: self.inbound_dropped_fault.load(Relaxed),
            handshakes_rejected: self.handshakes_rejected.load(Relaxed),
            unknown_peer: self.unknown_peer.load(Relaxed),
            unknown_destination: self.unknown_destination.load(Relaxed),
            frames_rejected: self.frames_rejected.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            misaddressed: self.misaddressed.load(Relaxed),
            auth_rejected: self.auth_rejected.load(Relaxed),
            frames_bad_tag: self.frames_bad_tag.load(Relaxed),
            handshakes_silent: self.handshakes_silent.load(Relaxed),
            handshakes_evicted: self.handshakes_evicted.load(Relaxed),
            requests_served: self.requests_served.load(Relaxed),
            requests_busy: self.requests_busy.load(Relaxed),
            replies_unmatched: self.replies_unmatched.load(Relaxed),
            not_a_member: false,
        }
    }
}
