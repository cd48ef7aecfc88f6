//! Inbound side: the accept loop, the acceptor's half of the handshake, and one
//! reader task per accepted connection that decodes frames: Raft messages into the
//! core's inbound channel, requests to the request handler, replies to their calls.
//!
//! Handshakes in progress are bounded in number, overall and per source address, and
//! in time: a connection that sends nothing within [`FIRST_BYTE_TIMEOUT`] is closed,
//! and the whole handshake must end within [`HANDSHAKE_TIMEOUT`]. When the table (or
//! a source's share of it) is full, a newcomer evicts the oldest connection that has
//! not yet sent a complete hello, so a flood of silent or trickling connections
//! cannot keep a real peer out; only when every pending handshake has sent its hello
//! is the newcomer refused.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep, timeout};
use tracing::{debug, warn};

use super::auth::{tags_equal, PeerAuth, Session, MAC_LEN, NONCE_LEN};
use super::calls;
use super::conn::{BoxStream, Connected, PeerIdentity};
use super::peer::{mode_of, Peer};
use super::stats::bump;
use super::wire::{
    encode_answer_head, encode_hello, encode_verdict, read_frame, read_hello, Frame, FrameError,
    HandshakeError, Hello, Verdict,
};
use super::{Shared, HANDSHAKE_TIMEOUT};
use crate::raft::Message;

/// Connections allowed in their handshake at once: a flood of idle or garbage clients
/// is bounded by this instead of each holding a task for the handshake timeout. Room
/// for every peer of a large cluster reconnecting at once.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Handshakes one source address may have pending: a real peer dials once per
/// connection it needs (one), so a few cover reconnect races; one address flooding
/// holds at most this many slots.
pub const MAX_PENDING_HANDSHAKES_PER_IP: usize = 8;
/// A new connection must send its first byte within this: a peer writes its hello (or
/// TLS client hello) as soon as it connects, so only a silent client waits longer.
/// Generous for a loaded machine, short enough that a silent client pins little.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one WARN line per this interval for refused connections (the rest are
/// counted and summed into the next line), so a flood cannot flood the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (typically out of file descriptors) before retrying,
/// so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Read buffer per inbound connection: many small frames are decoded per syscall.
const READ_BUF_BYTES: usize = 64 * 1024;

/// Rate limit for WARN lines about refused connections.
#[derive(Default)]
pub(crate) struct RateLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    /// Whether to log now, and how many refusals were suppressed since the last line.
    fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < REFUSAL_LOG_INTERVAL => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// One handshake in progress.
struct Slot {
    seq: u64,
    ip: IpAddr,
    /// Its complete hello has arrived: no longer evictable.
    heard: Arc<AtomicBool>,
    abort: AbortHandle,
}

/// The table of handshakes in progress, oldest first.
#[derive(Default)]
struct Slots {
    next: u64,
    list: VecDeque<Slot>,
}

type SharedSlots = Arc<Mutex<Slots>>;

fn lock(slots: &SharedSlots) -> std::sync::MutexGuard<'_, Slots> {
    // Pushes and removals cannot leave the list inconsistent.
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts peer connections until `stop` fires (or its sender is dropped), then
/// closes the listener and every connection it accepted.
pub(crate) async fn run_acceptor(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let slots = SharedSlots::default();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = listener.accept() => match res {
                Ok((tcp, remote)) => admit(&shared, &slots, &mut conns, tcp, remote),
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

/// Gives `tcp` a handshake slot, evicting the oldest silent one if the table or the
/// source's share is full; refuses it when nothing can be evicted.
fn admit(
    shared: &Arc<Shared>,
    slots: &SharedSlots,
    conns: &mut JoinSet<()>,
    tcp: TcpStream,
    remote: SocketAddr,
) {
    let ip = remote.ip();
    let mut table = lock(slots);
    let from_ip = table.list.iter().filter(|s| s.ip == ip).count();
    if from_ip >= MAX_PENDING_HANDSHAKES_PER_IP || table.list.len() >= MAX_PENDING_HANDSHAKES {
        let same_ip_only = from_ip >= MAX_PENDING_HANDSHAKES_PER_IP;
        let victim = table
            .list
            .iter()
            .position(|s| !s.heard.load(Ordering::Relaxed) && (!same_ip_only || s.ip == ip));
        match victim.and_then(|i| table.list.remove(i)) {
            Some(old) => {
                old.abort.abort();
                bump(&shared.counters.handshakes_evicted);
            }
            None => {
                drop(table);
                bump(&shared.counters.handshakes_rejected);
                log_refusal(shared, remote, "too many peer handshakes in progress");
                return;
            }
        }
    }
    let seq = table.next;
    table.next += 1;
    let heard = Arc::new(AtomicBool::new(false));
    // Spawned under the lock, so the task cannot look for its slot before it is listed.
    let abort = conns.spawn(handle_conn(
        shared.clone(),
        tcp,
        remote,
        (slots.clone(), seq),
        heard.clone(),
    ));
    table.list.push_back(Slot {
        seq,
        ip,
        heard,
        abort,
    });
}

/// Removes handshake `seq` from the table; false if it was evicted meanwhile.
fn release(slots: &SharedSlots, seq: u64) -> bool {
    let mut table = lock(slots);
    match table.list.iter().position(|s| s.seq == seq) {
        Some(i) => {
            table.list.remove(i);
            true
        }
        None => false,
    }
}

async fn handle_conn(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    (slots, seq): (SharedSlots, u64),
    heard: Arc<AtomicBool>,
) {
    let res = timeout(HANDSHAKE_TIMEOUT, handshake(&shared, tcp, remote, &heard)).await;
    if !release(&slots, seq) {
        return;
    }
    match res {
        Ok(Ok(accepted)) => read_loop(&shared, accepted, remote).await,
        Ok(Err(rejection)) => reject(&shared, remote, rejection),
        Err(_) => reject(&shared, remote, Rejection::Timeout),
    }
}

/// Why an inbound connection was refused during its handshake.
#[derive(Debug)]
enum Rejection {
    /// Nothing arrived within [`FIRST_BYTE_TIMEOUT`].
    Silent,
    Handshake(HandshakeError),
    Verdict {
        verdict: Verdict,
        from: u64,
        name: String,
    },
    Timeout,
}

/// Logs a refusal at WARN, at most once per [`REFUSAL_LOG_INTERVAL`].
fn log_refusal(shared: &Shared, remote: SocketAddr, why: &str) {
    if let Some(suppressed) = shared.refusal_log.admit() {
        warn!(%remote, suppressed, "peer connection refused: {why}");
    } else {
        debug!(%remote, "peer connection refused: {why}");
    }
}

/// Counts and logs a refused connection.
fn reject(shared: &Shared, remote: SocketAddr, why: Rejection) {
    let counters = &shared.counters;
    match why {
        Rejection::Verdict {
            verdict: Verdict::NotAMember,
            from,
            name,
        } => {
            bump(&counters.unknown_peer);
            let why = format!("node {name:?} (id {from}) is not a member");
            log_refusal(shared, remote, &why);
        }
        Rejection::Verdict {
            verdict: verdict @ (Verdict::NotAuthenticated | Verdict::AuthMismatch),
            name,
            ..
        } => {
            bump(&counters.auth_rejected);
            let why = match verdict {
                Verdict::AuthMismatch => format!("node {name:?} authenticates another way (cluster secret, TLS or none) than this node"),
                _ => format!("node {name:?} failed authentication (wrong cluster secret, or its certificate does not name it)"),
            };
            log_refusal(shared, remote, &why);
        }
        Rejection::Silent => {
            bump(&counters.handshakes_silent);
            debug!(%remote, "peer connection closed: nothing sent");
        }
        Rejection::Handshake(HandshakeError::Io(e)) => {
            bump(&counters.handshakes_rejected);
            debug!(%remote, error = %e, "peer connection closed during handshake");
        }
        other => {
            bump(&counters.handshakes_rejected);
            log_refusal(shared, remote, &format!("{other:?}"));
        }
    }
}

/// An accepted connection: the stream, its peer, and the session tagging its frames.
struct Accepted {
    stream: BoxStream,
    peer: Arc<Peer>,
    session: Option<Session>,
}

/// Runs the acceptor's half of the handshake; on success the connection belongs to `Peer`.
async fn handshake(
    shared: &Shared,
    tcp: TcpStream,
    remote: SocketAddr,
    heard: &AtomicBool,
) -> Result<Accepted, Rejection> {
    let io = |e: std::io::Error| Rejection::Handshake(HandshakeError::Io(e));
    let mut first = [0u8; 1];
    match timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut first)).await {
        Err(_) => return Err(Rejection::Silent),
        Ok(Ok(0)) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(Err(e)) => return Err(io(e)),
        Ok(Ok(_)) => {}
    }
    let Connected {
        mut stream,
        identity,
    } = shared.acceptor.accept(tcp, remote).await.map_err(io)?;
    let hello = match read_hello(&mut stream).await {
        Ok(hello) => hello,
        Err(e @ HandshakeError::BadVersion { .. }) => {
            answer(&mut stream, Verdict::BadVersion).await;
            return Err(Rejection::Handshake(e));
        }
        Err(e) => return Err(Rejection::Handshake(e)),
    };
    heard.store(true, Ordering::Relaxed);
    let refuse = |verdict| Rejection::Verdict {
        verdict,
        from: hello.from,
        name: hello.name.clone(),
    };
    let peer = match judge(shared, &hello, identity.as_deref()) {
        Ok(peer) => peer,
        Err(verdict) => {
            answer(&mut stream, verdict).await;
            return Err(refuse(verdict));
        }
    };
    let mut nonce = [0u8; NONCE_LEN];
    super::auth::fill_random(&mut nonce).map_err(io)?;
    let mut transcript = encode_hello(&hello);
    let head = encode_answer_head(&shared.name, &nonce);
    transcript.extend_from_slice(&head);
    let secret = match &shared.auth {
        PeerAuth::Secret(secret) => Some(secret),
        _ => None,
    };
    let proof = secret.map_or([0; MAC_LEN], |s| s.acceptor_proof(&transcript));
    stream.write_all(&head).await.map_err(io)?;
    stream.write_all(&proof).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let Some(secret) = secret else {
        return Ok(Accepted {
            stream,
            peer,
            session: None,
        });
    };
    let mut theirs = [0u8; MAC_LEN];
    stream.read_exact(&mut theirs).await.map_err(io)?;
    if !tags_equal(&secret.dialer_proof(&transcript), &theirs) {
        answer(&mut stream, Verdict::NotAuthenticated).await;
        return Err(refuse(Verdict::NotAuthenticated));
    }
    answer(&mut stream, Verdict::Accepted).await;
    Ok(Accepted {
        stream,
        peer,
        session: Some(secret.session(&transcript)),
    })
}

/// Tells the dialer the verdict; a failed write surfaces on the next read or not at all.
async fn answer(stream: &mut BoxStream, verdict: Verdict) {
    let sent = stream.write_all(&encode_verdict(verdict)).await;
    if sent.is_ok() {
        let _ = stream.flush().await;
    }
}

/// Accepts a hello from a current member of this cluster addressed to this node,
/// authenticating the way this node does; with certificates the announced name must
/// be in the certificate and derive the announced id.
fn judge(
    shared: &Shared,
    hello: &Hello,
    identity: Option<&dyn PeerIdentity>,
) -> Result<Arc<Peer>, Verdict> {
    if hello.cluster != shared.cluster {
        return Err(Verdict::WrongCluster);
    }
    if hello.to != shared.id {
        return Err(Verdict::WrongNode);
    }
    if hello.mode != mode_of(&shared.auth) {
        return Err(Verdict::AuthMismatch);
    }
    if matches!(shared.auth, PeerAuth::Certificates) {
        let named = identity.is_some_and(|i| i.has_name(&hello.name));
        if !named || crate::cluster::raft_id(&hello.name) != hello.from {
            return Err(Verdict::NotAuthenticated);
        }
    }
    shared.peer(hello.from).ok_or(Verdict::NotAMember)
}

/// Reads frames until the connection fails, the peer is removed, or the transport stops.
/// Any malformed or badly tagged frame closes the connection: framing cannot be
/// trusted after it.
async fn read_loop(shared: &Arc<Shared>, accepted: Accepted, remote: SocketAddr) {
    let Accepted {
        stream,
        peer,
        mut session,
    } = accepted;
    let mut rd = BufReader::with_capacity(READ_BUF_BYTES, stream);
    let mut buf = Vec::new();
    let stopped = peer.stopped();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut rd, &mut buf, session.as_mut()) => frame,
            _ = &mut stopped => return,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                calls::connection_lost(shared, peer.id);
                return frame_failed(shared, &peer, remote, e);
            }
        };
        match frame {
            Frame::Raft(msg) => {
                if !deliver(shared, &peer, msg) {
                    return;
                }
            }
            Frame::Request { id, payload } => calls::on_request(shared, &peer, id, payload),
            Frame::Reply {
                id,
                status,
                payload,
            } => calls::on_reply(shared, peer.id, id, status, payload),
        }
    }
}

/// Counts and logs why a connection's frames stopped.
fn frame_failed(shared: &Shared, peer: &Peer, remote: SocketAddr, e: FrameError) {
    let counters = &shared.counters;
    match e {
        FrameError::Closed => debug!(peer = %peer.name, %remote, "peer closed its connection"),
        FrameError::Io(e) => {
            debug!(peer = %peer.name, %remote, error = %e, "peer connection failed")
        }
        FrameError::BadLength(len) => {
            bump(&counters.frames_rejected);
            warn!(peer = %peer.name, %remote, len, "frame length out of bounds; connection closed");
        }
        FrameError::BadKind(kind) => {
            bump(&counters.frames_rejected);
            warn!(peer = %peer.name, %remote, kind, "unknown or short frame; connection closed");
        }
        FrameError::BadTag => {
            bump(&counters.frames_bad_tag);
            log_refusal(
                shared,
                remote,
                "frame with a bad tag (forged, replayed or corrupted); connection closed",
            );
        }
        FrameError::Decode(e) => {
            bump(&counters.decode_errors);
            warn!(peer = %peer.name, %remote, error = %e, "undecodable frame; connection closed");
        }
    }
}

/// Hands `msg` to the core without waiting; returns false once the core is gone.
fn deliver(shared: &Shared, peer: &Peer, msg: Message) -> bool {
    let counters = &shared.counters;
    if msg.from != peer.id || msg.to != shared.id {
        bump(&counters.misaddressed);
        debug!(
            peer = %peer.name,
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
