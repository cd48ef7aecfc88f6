//! Inbound side: the accept loop, the acceptor's half of the handshake, and one
//! reader task per accepted connection that decodes frames into the Raft core's
//! inbound channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tracing::{debug, warn};

use super::conn::BoxStream;
use super::peer::Peer;
use super::stats::bump;
use super::wire::{encode_verdict, read_frame, read_hello, FrameError, HandshakeError, Verdict};
use super::{Shared, HANDSHAKE_TIMEOUT};
use crate::raft::Message;

/// Connections allowed in their handshake at once: a flood of idle or garbage clients
/// is refused beyond this instead of each holding a task for the handshake timeout.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Pause after a failed `accept` (typically out of file descriptors) before retrying,
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Read buffer per inbound connection: many small frames are decoded per syscall.
const READ_BUF_BYTES: usize = 64 * 1024;

/// Accepts peer connections until `stop` fires (or its sender is dropped), then
/// closes the listener and every connection it accepted.
pub(crate) async fn run_acceptor(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = listener.accept() => match res {
                Ok((tcp, remote)) => admit(&shared, &permits, &mut conns, tcp, remote),
                Err(e) => {
                    warn!(error = %e, "accepting peer connection failed");
                    sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Resolves once the transport stops (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn admit(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    conns: &mut JoinSet<()>,
    tcp: TcpStream,
    remote: SocketAddr,
) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        bump(&shared.counters.handshakes_rejected);
        warn!(%remote, "too many peer handshakes in progress; connection refused");
        return;
    };
    conns.spawn(handle_conn(shared.clone(), tcp, remote, permit));
}

async fn handle_conn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let res = timeout(HANDSHAKE_TIMEOUT, handshake(&shared, tcp, remote)).await;
    drop(permit);
    match res {
        Ok(Ok((stream, peer))) => read_loop(&shared, stream, &peer, remote).await,
        Ok(Err(rejection)) => reject(&shared, remote, rejection),
        Err(_) => reject(&shared, remote, Rejection::Timeout),
    }
}

/// Why an inbound connection was refused during its handshake.
#[derive(Debug)]
enum Rejection {
    Handshake(HandshakeError),
    Verdict { verdict: Verdict, from: u64 },
    Timeout,
}

/// Counts and logs a refused connection.
fn reject(shared: &Shared, remote: SocketAddr, why: Rejection) {
    let counters = &shared.counters;
    match why {
        Rejection::Verdict {
            verdict: Verdict::UnknownPeer,
            from,
        } => {
            bump(&counters.unknown_peer);
            warn!(%remote, from, "peer connection refused: node id not in the peer set");
        }
        Rejection::Handshake(HandshakeError::Io(e)) => {
            bump(&counters.handshakes_rejected);
            debug!(%remote, error = %e, "peer connection closed during handshake");
        }
        other => {
            bump(&counters.handshakes_rejected);
            warn!(%remote, reason = ?other, "peer connection refused");
        }
    }
}

/// Runs the acceptor's half of the handshake; on success the connection belongs to `Peer`.
async fn handshake(
    shared: &Shared,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<(BoxStream, Arc<Peer>), Rejection> {
    let mut stream = shared
        .acceptor
        .accept(tcp, remote)
        .await
        .map_err(|e| Rejection::Handshake(HandshakeError::Io(e)))?;
    let hello = match read_hello(&mut stream).await {
        Ok(hello) => hello,
        Err(e @ HandshakeError::BadVersion { .. }) => {
            answer(&mut stream, Verdict::BadVersion).await;
            return Err(Rejection::Handshake(e));
        }
        Err(e) => return Err(Rejection::Handshake(e)),
    };
    match judge(shared, &hello) {
        Ok(peer) => {
            answer(&mut stream, Verdict::Accepted).await;
            Ok((stream, peer))
        }
        Err(verdict) => {
            answer(&mut stream, verdict).await;
            Err(Rejection::Verdict {
                verdict,
                from: hello.from,
            })
        }
    }
}

/// Tells the dialer the verdict; a failed write surfaces on the next read or not at all.
async fn answer(stream: &mut BoxStream, verdict: Verdict) {
    let sent = stream.write_all(&encode_verdict(verdict)).await;
    if sent.is_ok() {
        let _ = stream.flush().await;
    }
}

/// Accepts a hello from a current peer of this cluster addressed to this node.
fn judge(shared: &Shared, hello: &super::wire::Hello) -> Result<Arc<Peer>, Verdict> {
    if hello.cluster != shared.cluster {
        return Err(Verdict::WrongCluster);
    }
    if hello.to != shared.id {
        return Err(Verdict::WrongNode);
    }
    shared.peer(hello.from).ok_or(Verdict::UnknownPeer)
}

/// Reads frames until the connection fails, the peer is removed, or the transport stops.
/// Any malformed frame closes the connection: framing cannot be trusted after it.
async fn read_loop(shared: &Shared, stream: BoxStream, peer: &Peer, remote: SocketAddr) {
    let mut rd = BufReader::with_capacity(READ_BUF_BYTES, stream);
    let mut buf = Vec::new();
    let stopped = peer.stopped();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut rd, &mut buf) => frame,
            _ = &mut stopped => return,
        };
        let msg = match frame {
            Ok(msg) => msg,
            Err(e) => return frame_failed(shared, peer, remote, e),
        };
        if !deliver(shared, peer, msg) {
            return;
        }
    }
}

/// Counts and logs why a connection's frames stopped.
fn frame_failed(shared: &Shared, peer: &Peer, remote: SocketAddr, e: FrameError) {
    let counters = &shared.counters;
    match e {
        FrameError::Closed => debug!(peer = peer.id, %remote, "peer closed its connection"),
        FrameError::Io(e) => debug!(peer = peer.id, %remote, error = %e, "peer connection failed"),
        FrameError::BadLength(len) => {
            bump(&counters.frames_rejected);
            warn!(peer = peer.id, %remote, len, "frame length out of bounds; connection closed");
        }
        FrameError::Decode(e) => {
            bump(&counters.decode_errors);
            warn!(peer = peer.id, %remote, error = %e, "undecodable frame; connection closed");
        }
    }
}

/// Hands `msg` to the core without waiting; returns false once the core is gone.
fn deliver(shared: &Shared, peer: &Peer, msg: Message) -> bool {
    let counters = &shared.counters;
    if msg.from != peer.id || msg.to != shared.id {
        bump(&counters.misaddressed);
        debug!(
            peer = peer.id,
            from = msg.from,
            to = msg.to,
            "misaddressed message dropped"
        );
        return true;
    }
    if shared.faults.blocks_inbound(peer.id) {
        bump(&counters.inbound_dropped_fault);
        return true;
    }
    match shared.inbound.try_send(msg) {
        Ok(()) => bump(&counters.received),
        Err(TrySendError::Full(_)) => bump(&counters.inbound_dropped_full),
        Err(TrySendError::Closed(_)) => return false,
    }
    true
}
