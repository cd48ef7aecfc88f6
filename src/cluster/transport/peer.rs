//! Outbound side: one bounded queue and one writer task per peer. The writer dials
//! (with backoff), runs the dialer's half of the handshake (authenticating the
//! acceptor too), then drains the queue in batches, each written in one buffered
//! write and a flush. Requests and replies share the queue with Raft messages.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

use super::auth::{tags_equal, PeerAuth, Session, MAC_LEN, NONCE_LEN};
use super::conn::{BoxStream, Connected};
use super::stats::{bump, PeerCounters, PeerStats};
use super::wire::{
    encode_hello, push_frame, read_answer, read_verdict, AuthMode, Frame, HandshakeError, Hello,
    Verdict,
};
use super::Shared;
use crate::raft::{Entry, MessageBody, NodeId};

/// Messages queued per peer. Raft keeps at most a few dozen appends in flight per
/// follower plus heartbeats and votes, so this absorbs bursts and short outages
/// while bounding what a dead peer can pin.
pub const PEER_QUEUE_LEN: usize = 1024;
/// Approximate bytes queued per peer: room for one largest snapshot plus ordinary
/// traffic, so a dead peer never pins more than this.
pub const PEER_QUEUE_BYTES: usize = 2 * super::wire::MAX_FRAME_BYTES;
/// Messages taken from the queue per batch: large enough to amortise a flush,
/// small enough that the queue lock is held only briefly.
pub const MAX_BATCH_MSGS: usize = 256;
/// Encoded bytes buffered before a write, so a batch of big appends is streamed in
/// chunks instead of doubling its memory as one buffer.
pub const WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// First reconnect delay: short, so a restarted peer is reached within a heartbeat or two.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay: a dead peer costs at most one dial per this interval,
/// and a recovered one is reached well within an election timeout's order of magnitude.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Limit on one dial: a blackholed address otherwise waits for the kernel's SYN retries (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Limit on writing one batch: a peer that stops reading is treated as dead and
/// redialled. Generous enough for a largest snapshot on a slow link.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Fixed part of a message's size estimate (header varints, tags).
const MESSAGE_OVERHEAD_BYTES: usize = 64;
/// Bytes one encoded node id may take (a 64-bit varint).
const ID_BYTES: usize = 10;
/// Write buffers above this are released after a batch (one snapshot should not pin them).
const WRITE_BUF_KEEP_BYTES: usize = 1024 * 1024;

/// A frame and its estimated encoded size.
type Queued = (Frame, usize);

/// The per-peer queue: bounded in messages and bytes; when full, the oldest go first.
struct Queue {
    msgs: VecDeque<Queued>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::with_bounds(PEER_QUEUE_LEN, PEER_QUEUE_BYTES)
    }
}

impl Queue {
    fn with_bounds(max_len: usize, max_bytes: usize) -> Queue {
        Queue {
            msgs: VecDeque::new(),
            bytes: 0,
            max_len,
            max_bytes,
        }
    }

    /// Appends `msg`, evicting from the front to stay within bounds; returns how many went.
    fn push(&mut self, msg: Frame) -> u64 {
        let size = approx_size(&msg);
        self.msgs.push_back((msg, size));
        self.bytes += size;
        let mut evicted = 0;
        while self.msgs.len() > self.max_len || (self.bytes > self.max_bytes && self.msgs.len() > 1)
        {
            if let Some((_, size)) = self.msgs.pop_front() {
                self.bytes -= size;
                evicted += 1;
            }
        }
        evicted
    }

    fn take_batch(&mut self, out: &mut Vec<Frame>) {
        let n = self.msgs.len().min(MAX_BATCH_MSGS);
        for (msg, size) in self.msgs.drain(..n) {
            self.bytes -= size;
            out.push(msg);
        }
    }
}

/// Estimated encoded size: cheap (no encoding), good enough to bound memory.
fn approx_size(frame: &Frame) -> usize {
    let m = match frame {
        Frame::Raft(m) => m,
        Frame::Request { payload, .. } | Frame::Reply { payload, .. } => {
            return MESSAGE_OVERHEAD_BYTES + payload.len()
        }
    };
    MESSAGE_OVERHEAD_BYTES
        + match &m.body {
            MessageBody::Append { entries, .. } => entries.iter().map(Entry::size_hint).sum(),
            MessageBody::Snapshot { snapshot } => {
                let conf = &snapshot.meta.conf;
                snapshot.data.len() + ID_BYTES * (conf.voters.len() + conf.learners.len())
            }
            _ => 0,
        }
}

/// One outbound peer: its address, queue, counters and stop signal. Inbound readers
/// of the same peer watch the stop signal too, so removing a peer closes both ways.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    /// The member's name (`node.id`), for logs.
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    queue: Mutex<Queue>,
    wake: Notify,
    stop: watch::Sender<bool>,
    pub(crate) counters: PeerCounters,
    /// Calls this node has waiting on the peer.
    pub(crate) calls_in_flight: AtomicUsize,
    /// The peer's requests this node is answering.
    pub(crate) served_in_flight: AtomicUsize,
}

impl Peer {
    pub(crate) fn new(id: NodeId, entry: super::PeerAddr) -> Arc<Peer> {
        Arc::new(Peer {
            id,
            name: entry.name,
            addr: entry.addr,
            queue: Mutex::default(),
            wake: Notify::new(),
            stop: watch::channel(false).0,
            counters: PeerCounters::default(),
            calls_in_flight: AtomicUsize::new(0),
            served_in_flight: AtomicUsize::new(0),
        })
    }

    /// Queues `msg` for the writer; never blocks beyond a short uncontended lock.
    pub(crate) fn enqueue(&self, msg: Frame) {
        let evicted = self.lock().push(msg);
        if evicted > 0 {
            self.counters
                .dropped_full
                .fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    /// Stops the writer and the readers of this peer.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once the peer is stopped.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // The sender lives in `self`, so the only outcome is the flag turning true.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    pub(crate) fn snapshot(&self) -> PeerStats {
        let queued = self.lock().msgs.len();
        self.counters.snapshot(self.addr, queued)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Queue operations cannot leave it inconsistent, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_batch(&self, out: &mut Vec<Frame>) {
        self.lock().take_batch(out);
    }
}

/// Exponential reconnect delay with equal jitter, so peers restarted together do not
/// redial in lockstep.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(BACKOFF_MAX);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// The writer task of one peer; runs until the peer is stopped.
pub(crate) async fn run_writer(shared: Arc<Shared>, peer: Arc<Peer>) {
    tokio::select! {
        _ = peer.stopped() => debug!(peer = %peer.name, "peer writer stopped"),
        _ = connect_loop(&shared, &peer) => {}
    }
    peer.counters
        .connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

async fn connect_loop(shared: &Shared, peer: &Peer) {
    let mut backoff = Backoff::new();
    let mut failures_in_row = 0u64;
    loop {
        match connect(shared, peer).await {
            Ok((stream, session)) => {
                backoff.reset();
                failures_in_row = 0;
                on_connected(peer, true);
                shared.not_a_member.store(false, Ordering::Relaxed);
                info!(peer = %peer.name, addr = %peer.addr, "connected to peer");
                let why = serve(shared, peer, stream, session).await;
                on_connected(peer, false);
                info!(peer = %peer.name, addr = %peer.addr, reason = %why, "peer connection closed");
            }
            Err(e) => {
                bump(&peer.counters.connect_failures);
                failures_in_row += 1;
                if matches!(e, HandshakeError::Rejected(Verdict::NotAMember)) {
                    told_not_a_member(shared, peer);
                }
                log_connect_failure(peer, &e, failures_in_row);
            }
        }
        sleep(backoff.next_delay()).await;
    }
}

fn on_connected(peer: &Peer, up: bool) {
    if up {
        bump(&peer.counters.connects);
    }
    peer.counters
        .connected
        .store(up, std::sync::atomic::Ordering::Relaxed);
}

/// A peer said this node is not a member: warned once (until a peer accepts it again).
fn told_not_a_member(shared: &Shared, peer: &Peer) {
    if !shared.not_a_member.swap(true, Ordering::Relaxed) {
        warn!(
            peer = %peer.name,
            addr = %peer.addr,
            "a peer says this node is not a member of the cluster (never added, or removed)"
        );
    }
}

/// Warns on the first failure of a streak; a peer that stays down is only traced.
fn log_connect_failure(peer: &Peer, e: &HandshakeError, failures_in_row: u64) {
    if failures_in_row == 1 {
        warn!(peer = %peer.name, addr = %peer.addr, error = %e, "cannot connect to peer; retrying with backoff");
    } else {
        debug!(peer = %peer.name, addr = %peer.addr, error = %e, failures_in_row, "peer still unreachable");
    }
}

/// Dials `peer` and completes the handshake; in secret mode also returns the session
/// that tags this connection's frames.
async fn connect(
    shared: &Shared,
    peer: &Peer,
) -> Result<(BoxStream, Option<Session>), HandshakeError> {
    let timed_out = |what: &str| {
        HandshakeError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out"),
        ))
    };
    let dial = shared.dialer.dial(peer.id, peer.addr);
    let connected = timeout(CONNECT_TIMEOUT, dial)
        .await
        .map_err(|_| timed_out("dial"))??;
    timeout(super::HANDSHAKE_TIMEOUT, handshake(shared, peer, connected))
        .await
        .map_err(|_| timed_out("handshake"))?
}

/// The dialer's half of the handshake (see [`super::wire`]).
async fn handshake(
    shared: &Shared,
    peer: &Peer,
    connected: Connected,
) -> Result<(BoxStream, Option<Session>), HandshakeError> {
    let Connected {
        mut stream,
        identity,
    } = connected;
    let mut nonce = [0u8; NONCE_LEN];
    super::auth::fill_random(&mut nonce)?;
    let hello = Hello {
        from: shared.id,
        to: peer.id,
        cluster: shared.cluster.clone(),
        name: shared.name.clone(),
        mode: mode_of(&shared.auth),
        nonce,
    };
    let mut transcript = encode_hello(&hello);
    stream.write_all(&transcript).await?;
    stream.flush().await?;
    let answer = read_answer(&mut stream, &mut transcript).await?;
    let session = match &shared.auth {
        PeerAuth::Insecure => None,
        PeerAuth::Certificates => {
            let named = identity.is_some_and(|i| i.has_name(&answer.name));
            if !named || crate::cluster::raft_id(&answer.name) != peer.id {
                bump(&shared.counters.auth_rejected);
                return Err(HandshakeError::AcceptorNotThePeer(format!(
                    "it calls itself {:?}, which its certificate or the node dialled does not match",
                    answer.name
                )));
            }
            None
        }
        PeerAuth::Secret(secret) => {
            // Our proof goes first, so an acceptor with another secret refuses (and
            // counts) us, whichever side is wrong.
            stream.write_all(&secret.dialer_proof(&transcript)).await?;
            stream.flush().await?;
            if !tags_equal(&secret.acceptor_proof(&transcript), &answer.proof) {
                bump(&shared.counters.auth_rejected);
                return Err(HandshakeError::AcceptorNotAuthenticated);
            }
            read_verdict(&mut stream).await?;
            Some(secret.session(&transcript))
        }
    };
    debug_assert_eq!(answer.proof.len(), MAC_LEN);
    Ok((stream, session))
}

/// The mode a hello announces.
pub(crate) fn mode_of(auth: &PeerAuth) -> AuthMode {
    match auth {
        PeerAuth::Insecure => AuthMode::Insecure,
        PeerAuth::Secret(_) => AuthMode::Secret,
        PeerAuth::Certificates => AuthMode::Certificates,
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Closed {
    Io(std::io::Error),
    WriteTimeout,
    /// The acceptor closed (EOF) or wrote after the handshake, which it never does.
    ByPeer,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Io(e) => write!(f, "{e}"),
            Closed::WriteTimeout => write!(f, "write timed out"),
            Closed::ByPeer => write!(f, "closed by peer"),
        }
    }
}

/// Drains the queue onto `stream` until the connection fails. While idle it watches
/// the read side, so a peer that goes away is noticed before the next batch is lost.
async fn serve(
    shared: &Shared,
    peer: &Peer,
    stream: BoxStream,
    mut session: Option<Session>,
) -> Closed {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (mut batch, mut buf) = (Vec::new(), Vec::new());
    loop {
        peer.take_batch(&mut batch);
        if batch.is_empty() {
            if let Some(closed) = idle(peer, &mut rd).await {
                return closed;
            }
            continue;
        }
        let out = Out {
            wr: &mut wr,
            buf: &mut buf,
            session: session.as_mut(),
        };
        if let Err(closed) = write_batch(shared, peer, out, &mut batch).await {
            return closed;
        }
    }
}

/// Waits for queued messages; returns why the connection ended if it did meanwhile.
async fn idle<R: AsyncRead + Unpin>(peer: &Peer, rd: &mut R) -> Option<Closed> {
    let mut probe = [0u8; 1];
    tokio::select! {
        _ = peer.wake.notified() => None,
        res = rd.read(&mut probe) => Some(match res {
            Err(e) => Closed::Io(e),
            Ok(_) => Closed::ByPeer,
        }),
    }
}

/// Where a batch is written: the stream, a reusable buffer and the session (if any).
struct Out<'a, W> {
    wr: &'a mut W,
    buf: &'a mut Vec<u8>,
    session: Option<&'a mut Session>,
}

/// Frames and writes `batch` (emptying it), then flushes. Frames are counted as
/// sent once flushed, or as lost if the connection fails.
async fn write_batch<W: AsyncWrite + Unpin>(
    shared: &Shared,
    peer: &Peer,
    out: Out<'_, W>,
    batch: &mut Vec<Frame>,
) -> Result<(), Closed> {
    let Out {
        wr,
        buf,
        mut session,
    } = out;
    let counters = &peer.counters;
    let add = |c: &std::sync::atomic::AtomicU64, n: usize| {
        c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed)
    };
    if shared.faults.blocks_outbound(peer.id) {
        add(&counters.dropped_fault, batch.len());
        batch.clear();
        return Ok(());
    }
    let mut framed = 0;
    let mut bytes = 0;
    let res = timeout(WRITE_TIMEOUT, async {
        buf.clear();
        for msg in batch.drain(..) {
            if !push_frame(buf, &msg, session.as_deref_mut()) {
                bump(&counters.dropped_oversize);
                warn!(
                    peer = %peer.name,
                    kind = msg.kind(),
                    "message exceeds the frame bound; dropped"
                );
                continue;
            }
            framed += 1;
            if buf.len() >= WRITE_CHUNK_BYTES {
                bytes += buf.len();
                wr.write_all(buf).await?;
                buf.clear();
            }
        }
        bytes += buf.len();
        wr.write_all(buf).await?;
        wr.flush().await
    })
    .await;
    batch.clear();
    if buf.capacity() > WRITE_BUF_KEEP_BYTES {
        *buf = Vec::new();
    }
    match res {
        Ok(Ok(())) => {
            add(&counters.sent, framed);
            add(&counters.bytes_sent, bytes);
            Ok(())
        }
        Ok(Err(e)) => {
            add(&counters.dropped_io, framed);
            Err(Closed::Io(e))
        }
        Err(_) => {
            add(&counters.dropped_io, framed);
            Err(Closed::WriteTimeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(commit: u64) -> Frame {
        Frame::Raft(heartbeat_msg(commit))
    }

    fn heartbeat_msg(commit: u64) -> crate::raft::Message {
        crate::raft::Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Heartbeat { commit },
        }
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = Queue::default();
        let evicted: u64 = (0..PEER_QUEUE_LEN as u64 + 5)
            .map(|i| q.push(heartbeat(i)))
            .sum();
        assert_eq!(evicted, 5);
        let mut out = Vec::new();
        q.take_batch(&mut out);
        assert_eq!(out.len(), MAX_BATCH_MSGS);
        assert_eq!(out[0], heartbeat(5));
    }

    #[test]
    fn queue_bytes_are_bounded() {
        let mut q = Queue::with_bounds(PEER_QUEUE_LEN, 3000);
        let big = Frame::Raft(crate::raft::Message {
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                commit: 0,
                entries: vec![Entry {
                    term: 1,
                    index: 1,
                    payload: crate::raft::EntryPayload::Normal(vec![0; 1000]),
                }],
            },
            ..heartbeat_msg(0)
        });
        let evicted: u64 = (0..4).map(|_| q.push(big.clone())).sum();
        assert_eq!(evicted, 2);
        assert!(q.bytes <= 3000);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
