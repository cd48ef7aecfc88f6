//! Requests between peers: the asker's table of calls waiting for a reply, and the
//! answering side that runs the [`RequestHandler`] and queues the reply on its own
//! connection to the asker. Both sides are bounded per peer and in time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::debug;

use super::conn::BoxFuture;
use super::peer::Peer;
use super::stats::bump;
use super::wire::{Frame, ReplyStatus, MAX_CALL_PAYLOAD_BYTES};
use super::Shared;
use crate::raft::NodeId;

/// Calls one node may have waiting on one peer, and requests from one peer one node
/// serves at once. Forwarded changes are few (an operator, a reload, breaker reports),
/// and the leader's proposal queue is bounded anyway; a peer past this is broken or
/// hostile and is answered `Busy` at once.
pub const MAX_CALLS_IN_FLIGHT_PER_PEER: usize = 64;
/// Longest a handler may take to answer a request before the transport answers
/// `TimedOut` for it: above the proposer's own wait for a commit, so a handler that
/// answers at all answers first.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers requests from peers (the leader's side of forwarding).
pub trait RequestHandler: Send + Sync + 'static {
    /// The answer to `payload` from peer `from` (named `name`). The transport bounds it
    /// by [`SERVE_TIMEOUT`].
    fn handle(&self, from: NodeId, name: &str, payload: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    // The messages leave the node out: the caller knows its name, and says it.
    #[error("not a peer")]
    UnknownPeer(NodeId),
    #[error("too many requests already waiting on it")]
    Busy(NodeId),
    #[error("it serves no requests")]
    NotServing(NodeId),
    #[error("no answer in time")]
    TimedOut(NodeId),
    /// Its connection to this node closed while the call waited: the request may or
    /// may not have been served.
    #[error("its connection closed before it answered")]
    Disconnected(NodeId),
    #[error("request of {0} bytes exceeds the bound of {MAX_CALL_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error("the transport has stopped")]
    Stopped,
}

type Waiter = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// Calls waiting for their reply, by call id.
#[derive(Default)]
pub(crate) struct Calls {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (NodeId, Waiter)>>,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (NodeId, Waiter)>> {
        // Inserts and removals cannot leave the map inconsistent.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a call's entry however the call ends (answered, timed out, dropped).
struct Pending<'a> {
    calls: &'a Calls,
    peer: &'a Peer,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
        self.peer.calls_in_flight.fetch_sub(1, Relaxed);
    }
}

pub(crate) async fn call(
    shared: &Shared,
    to: NodeId,
    payload: Vec<u8>,
    wait: Duration,
) -> Result<Vec<u8>, CallError> {
    if payload.len() > MAX_CALL_PAYLOAD_BYTES {
        return Err(CallError::TooLarge(payload.len()));
    }
    let peer = shared.peer(to).ok_or(CallError::UnknownPeer(to))?;
    if peer.calls_in_flight.fetch_add(1, Relaxed) >= MAX_CALLS_IN_FLIGHT_PER_PEER {
        peer.calls_in_flight.fetch_sub(1, Relaxed);
        return Err(CallError::Busy(to));
    }
    let id = shared.calls.next.fetch_add(1, Relaxed);
    let (tx, rx) = oneshot::channel();
    shared.calls.lock().insert(id, (to, tx));
    let _pending = Pending {
        calls: &shared.calls,
        peer: &peer,
        id,
    };
    peer.enqueue(Frame::Request { id, payload });
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(CallError::Stopped),
        Err(_) => Err(CallError::TimedOut(to)),
    }
}

/// The connection peer `from` answers on has closed (the peer died or redials): every
/// call waiting on it fails now rather than at its deadline, so a caller can turn to
/// another node (a new leader) at once.
pub(crate) fn connection_lost(shared: &Shared, from: NodeId) {
    let lost: Vec<Waiter> = {
        let mut waiting = shared.calls.lock();
        let ids: Vec<u64> = waiting
            .iter()
            .filter(|(_, (to, _))| *to == from)
            .map(|(&id, _)| id)
            .collect();
        ids.into_iter()
            .filter_map(|id| waiting.remove(&id).map(|(_, w)| w))
            .collect()
    };
    for waiter in lost {
        let _ = waiter.send(Err(CallError::Disconnected(from)));
    }
}

/// A reply from `from` arrived: hands it to its call (if still waiting and addressed
/// by that peer; anything else is counted and dropped).
pub(crate) fn on_reply(
    shared: &Shared,
    from: NodeId,
    id: u64,
    status: ReplyStatus,
    payload: Vec<u8>,
) {
    let mut waiting = shared.calls.lock();
    match waiting.get(&id) {
        Some((to, _)) if *to == from => {}
        _ => {
            drop(waiting);
            bump(&shared.counters.replies_unmatched);
            let name = shared.peer(from).map(|p| p.name.clone());
            debug!(peer = ?name, id, "reply to no waiting call dropped");
            return;
        }
    }
    let Some((_, waiter)) = waiting.remove(&id) else {
        return;
    };
    drop(waiting);
    let answer = match status {
        ReplyStatus::Answered => Ok(payload),
        ReplyStatus::Busy => Err(CallError::Busy(from)),
        ReplyStatus::NotServing => Err(CallError::NotServing(from)),
        ReplyStatus::TimedOut => Err(CallError::TimedOut(from)),
    };
    let _ = waiter.send(answer);
}

/// A request from `peer` arrived: runs the handler on its own task (bounded per peer
/// and by [`SERVE_TIMEOUT`]) and queues the reply to that peer.
pub(crate) fn on_request(shared: &Arc<Shared>, peer: &Arc<Peer>, id: u64, payload: Vec<u8>) {
    let reply = move |status, payload| Frame::Reply {
        id,
        status,
        payload,
    };
    let Some(handler) = shared.handler.get().cloned() else {
        peer.enqueue(reply(ReplyStatus::NotServing, Vec::new()));
        return;
    };
    if peer.served_in_flight.fetch_add(1, Relaxed) >= MAX_CALLS_IN_FLIGHT_PER_PEER {
        peer.served_in_flight.fetch_sub(1, Relaxed);
        bump(&shared.counters.requests_busy);
        peer.enqueue(reply(ReplyStatus::Busy, Vec::new()));
        return;
    }
    bump(&shared.counters.requests_served);
    let peer = peer.clone();
    tokio::spawn(async move {
        let answered =
            tokio::time::timeout(SERVE_TIMEOUT, handler.handle(peer.id, &peer.name, payload)).await;
        peer.served_in_flight.fetch_sub(1, Relaxed);
        peer.enqueue(match answered {
            Ok(answer) => reply(ReplyStatus::Answered, answer),
            Err(_) => reply(ReplyStatus::TimedOut, Vec::new()),
        });
    });
}
