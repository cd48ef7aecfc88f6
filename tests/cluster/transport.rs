//! The cluster transport over real sockets on 127.0.0.1: delivery and ordering between
//! three nodes, dead and restarting peers, hostile input on the listener, the fault
//! switch, and membership changes. Every wait is bounded; nothing asserts on timing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use proptest::prelude::*;
use ringway::cluster::transport::wire::{encode_hello, AuthMode, Hello, MAGIC, TRANSPORT_VERSION};
use ringway::cluster::transport::{
    PeerAddr, PeerAuth, Transport, TransportConfig, TransportStats, MAX_FRAME_BYTES, PEER_QUEUE_LEN,
};
use ringway::raft::codec::{encode, WIRE_VERSION};
use ringway::raft::{ConfState, Message, MessageBody, NodeId, Snapshot, SnapshotMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bound on every wait: far above what any step needs, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(20);
/// Inbound channel size for test nodes: large enough that the tests' bursts never hit it.
const INBOUND_CAP: usize = 8192;
const CLUSTER: &str = "ringway-test";

struct Node {
    t: Transport,
    rx: mpsc::Receiver<Message>,
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

fn hb(from: NodeId, to: NodeId, commit: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::Heartbeat { commit },
    }
}

fn commit_of(m: &Message) -> u64 {
    match m.body {
        MessageBody::Heartbeat { commit } => commit,
        _ => panic!("unexpected message {m:?}"),
    }
}

async fn start_on(
    id: NodeId,
    listen: SocketAddr,
    peers: HashMap<NodeId, SocketAddr>,
    cap: usize,
) -> Node {
    let (tx, rx) = mpsc::channel(cap);
    let cfg = TransportConfig {
        id,
        listen,
        peers: named(peers),
        cluster: CLUSTER.into(),
        name: format!("n{id}"),
        auth: PeerAuth::Insecure,
    };
    let t = Transport::start(cfg, tx).await.expect("transport starts");
    Node { t, rx }
}

/// Peers named as the tests name nodes (`n<id>`).
fn named(peers: HashMap<NodeId, SocketAddr>) -> HashMap<NodeId, PeerAddr> {
    peers
        .into_iter()
        .map(|(id, addr)| (id, PeerAddr::new(format!("n{id}"), addr)))
        .collect()
}

async fn start(id: NodeId) -> Node {
    start_on(id, any_port(), HashMap::new(), INBOUND_CAP).await
}

/// Nodes 1..=n, each with all the others as peers.
async fn cluster(n: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(start(id).await);
    }
    let addrs: HashMap<NodeId, SocketAddr> =
        nodes.iter().map(|n| (n.t.id(), n.t.local_addr())).collect();
    for node in &nodes {
        let mut peers = addrs.clone();
        peers.remove(&node.t.id());
        node.t.set_peers(named(peers));
    }
    nodes
}

async fn recv(node: &mut Node) -> Message {
    tokio::time::timeout(WAIT, node.rx.recv())
        .await
        .expect("message within the wait bound")
        .expect("inbound channel open")
}

/// Polls `cond` until it holds; panics after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `from -> to` heartbeats until one arrives (connections may still be forming
/// or re-forming, and Raft-style loss is allowed meanwhile). Returns it.
async fn send_until_received(sender: &Transport, receiver: &mut Node, commit: u64) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (from, to) = (sender.id(), receiver.t.id());
    loop {
        sender.send([hb(from, to, commit)]);
        let got = tokio::time::timeout(Duration::from_millis(100), receiver.rx.recv()).await;
        if let Ok(Some(m)) = got {
            if m.from == from && commit_of(&m) == commit {
                return m;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{from} -> {to} never delivered"
        );
    }
}

fn drain(node: &mut Node) -> Vec<Message> {
    std::iter::from_fn(|| node.rx.try_recv().ok()).collect()
}

/// Set by a panic anywhere in the process (the transport's tasks included).
static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_in_all_directions_in_order() {
    const PER_PAIR: u64 = 300;
    let mut nodes = cluster(3).await;
    for node in &nodes {
        let id = node.t.id();
        let msgs = (1..=3u64)
            .filter(|&to| to != id)
            .flat_map(|to| (0..PER_PAIR).map(move |c| hb(id, to, c)));
        node.t.send(msgs);
    }
    for node in &mut nodes {
        let mut next: HashMap<NodeId, u64> = HashMap::new();
        for _ in 0..2 * PER_PAIR {
            let m = recv(node).await;
            assert_eq!(m.to, node.t.id());
            let expected = next.entry(m.from).or_insert(0);
            assert_eq!(commit_of(&m), *expected, "order from {}", m.from);
            *expected += 1;
        }
    }
    for node in &nodes {
        eventually("counters settle", || {
            let stats = node.t.stats();
            stats.received == 2 * PER_PAIR
                && stats
                    .peers
                    .values()
                    .all(|p| p.sent == PER_PAIR && p.connected)
        })
        .await;
    }
    for node in nodes {
        node.t.shutdown().await;
    }
}

/// An address with nothing listening (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind(any_port()).await.expect("bind");
    l.local_addr().expect("local addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_does_not_block_live_one_and_is_reached_when_it_comes_up() {
    const BURST: u64 = PEER_QUEUE_LEN as u64 * 3;
    let mut live = start(2).await;
    let dead = dead_addr().await;
    let peers = HashMap::from([(2, live.t.local_addr()), (3, dead)]);
    let one = start_on(1, any_port(), peers, INBOUND_CAP).await;
    live.t
        .set_peers(named(HashMap::from([(1, one.t.local_addr())])));

    // Fewer messages for the live peer than its queue holds, so none may be dropped
    // however the writer is scheduled; the dead peer's queue overflows.
    const LIVE_EVERY: u64 = 6;
    for c in 0..BURST {
        one.t.send([hb(1, 3, c)]);
        if c % LIVE_EVERY == 0 {
            one.t.send([hb(1, 2, c)]);
        }
    }
    for c in (0..BURST).step_by(LIVE_EVERY as usize) {
        assert_eq!(commit_of(&recv(&mut live).await), c);
    }
    assert_eq!(one.t.stats().peers[&2].dropped_full, 0);
    let s = one.t.stats();
    assert_eq!(s.peers[&3].queued, PEER_QUEUE_LEN);
    assert_eq!(s.peers[&3].dropped_full, BURST - PEER_QUEUE_LEN as u64);
    assert!(!s.peers[&3].connected);

    // The dead peer comes up: the queued (newest) messages are delivered, in order.
    let mut late = start_on(
        3,
        dead,
        HashMap::from([(1, one.t.local_addr())]),
        INBOUND_CAP,
    )
    .await;
    let first = recv(&mut late).await;
    assert_eq!(
        commit_of(&first),
        BURST - PEER_QUEUE_LEN as u64,
        "oldest dropped"
    );
    for c in commit_of(&first) + 1..BURST {
        assert_eq!(commit_of(&recv(&mut late).await), c);
    }
    let s = one.t.stats();
    assert!(s.peers[&3].connect_failures >= 1 && s.peers[&3].connects == 1);
    for t in [one.t, live.t, late.t] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reconnected_to() {
    let mut nodes = cluster(2).await;
    let mut two = nodes.pop().expect("node 2");
    let mut one = nodes.pop().expect("node 1");
    send_until_received(&one.t, &mut two, 1).await;

    let addr = two.t.local_addr();
    two.t.shutdown().await;
    let mut two = start_on(
        2,
        addr,
        HashMap::from([(1, one.t.local_addr())]),
        INBOUND_CAP,
    )
    .await;
    send_until_received(&one.t, &mut two, 2).await;
    send_until_received(&two.t, &mut one, 3).await;
    assert!(one.t.stats().peers[&2].connects >= 2);

    // Dropping the last handle (no shutdown) also releases the port, in the background.
    drop(two);
    let mut two = restart_when_port_is_free(2, addr, one.t.local_addr()).await;
    send_until_received(&one.t, &mut two, 4).await;
    assert!(one.t.stats().peers[&2].connects >= 3);
    one.t.shutdown().await;
    two.t.shutdown().await;
}

async fn restart_when_port_is_free(id: NodeId, addr: SocketAddr, peer: SocketAddr) -> Node {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (tx, rx) = mpsc::channel(INBOUND_CAP);
        let cfg = TransportConfig {
            id,
            listen: addr,
            peers: named(HashMap::from([(1, peer)])),
            cluster: CLUSTER.into(),
            name: format!("n{id}"),
            auth: PeerAuth::Insecure,
        };
        match Transport::start(cfg, tx).await {
            Ok(t) => return Node { t, rx },
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "rebind: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_sized_messages_cross_in_order() {
    const IMAGE_BYTES: usize = 5 * 1024 * 1024;
    let mut nodes = cluster(2).await;
    let mut two = nodes.pop().expect("node 2");
    let one = nodes.pop().expect("node 1");
    let image: Vec<u8> = (0..IMAGE_BYTES).map(|i| i as u8).collect();
    let snapshot = Message {
        body: MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 2,
                    conf: ConfState {
                        voters: vec![1, 2],
                        learners: vec![],
                    },
                },
                data: image,
            },
        },
        ..hb(1, 2, 0)
    };
    one.t.send([hb(1, 2, 1), snapshot.clone(), hb(1, 2, 2)]);
    assert_eq!(commit_of(&recv(&mut two).await), 1);
    assert_eq!(recv(&mut two).await, snapshot);
    assert_eq!(commit_of(&recv(&mut two).await), 2);
    one.t.shutdown().await;
    two.t.shutdown().await;
}

/// Writes `bytes` on a raw connection to `addr`, half-closes, and waits for the server
/// to close (or for the wait bound; an ignored client is also acceptable).
async fn raw_client(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    // The server may close before reading everything; write errors are expected then.
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
}

fn hello(from: NodeId, to: NodeId, cluster: &str) -> Vec<u8> {
    encode_hello(&Hello {
        from,
        to,
        cluster: cluster.into(),
        name: format!("n{from}"),
        mode: AuthMode::Insecure,
        nonce: [0; 32],
    })
}

/// A hello with the given versions, built from the documented layout.
fn hello_raw(transport: u8, codec: u8, from: NodeId, to: NodeId) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend([transport, codec]);
    b.extend(from.to_be_bytes());
    b.extend(to.to_be_bytes());
    b.push(CLUSTER.len() as u8);
    b.extend(CLUSTER.as_bytes());
    b.push(2);
    b.extend(b"n2");
    b.push(0);
    b.extend([0; 32]);
    b
}

/// A Raft frame (kind 1) around an encoded message, untagged.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut b = (body.len() as u32 + 1).to_be_bytes().to_vec();
    b.push(1);
    b.extend(body);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_counted_while_peers_keep_working() {
    watch_panics();
    let mut nodes = cluster(2).await;
    let two = nodes.pop().expect("node 2");
    let mut one = nodes.pop().expect("node 1");
    send_until_received(&two.t, &mut one, 0).await;
    let addr = one.t.local_addr();
    let stat = |f: fn(&TransportStats) -> u64| f(&one.t.stats());

    let random: Vec<u8> = (0..256).map(|_| fastrand::u8(..)).collect();
    let mut wrong_magic = hello(2, 1, CLUSTER);
    wrong_magic[0] ^= 0xFF;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("wrong magic", wrong_magic),
        (
            "wrong transport version",
            hello_raw(TRANSPORT_VERSION + 1, WIRE_VERSION, 2, 1),
        ),
        (
            "wrong codec version",
            hello_raw(TRANSPORT_VERSION, WIRE_VERSION + 1, 2, 1),
        ),
        ("wrong cluster", hello(2, 1, "other-cluster")),
        ("wrong target node", hello(2, 9, CLUSTER)),
        ("truncated hello", hello(2, 1, CLUSTER)[..10].to_vec()),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        raw_client(addr, bytes).await;
        let want = i as u64 + 1;
        eventually(what, || stat(|s| s.handshakes_rejected) == want).await;
    }

    raw_client(addr, &hello(77, 1, CLUSTER)).await;
    eventually("unknown id", || stat(|s| s.unknown_peer) == 1).await;

    let mut oversized = hello(2, 1, CLUSTER);
    oversized.extend((MAX_FRAME_BYTES as u32 + 2).to_be_bytes());
    raw_client(addr, &oversized).await;
    let mut empty = hello(2, 1, CLUSTER);
    empty.extend(0u32.to_be_bytes());
    raw_client(addr, &empty).await;
    eventually("bad lengths", || stat(|s| s.frames_rejected) == 2).await;

    let mut undecodable = hello(2, 1, CLUSTER);
    undecodable.extend(framed(&[WIRE_VERSION, 0xFF, 0xFF]));
    raw_client(addr, &undecodable).await;
    eventually("undecodable", || stat(|s| s.decode_errors) == 1).await;

    // A message claiming another sender, or for another node, is dropped, not delivered.
    let mut spoofed = hello(2, 1, CLUSTER);
    spoofed.extend(framed(&encode(&hb(3, 1, 99))));
    spoofed.extend(framed(&encode(&hb(2, 5, 99))));
    raw_client(addr, &spoofed).await;
    eventually("misaddressed", || stat(|s| s.misaddressed) == 2).await;

    // A well-formed raw peer is delivered, and the real peer still is too.
    let mut good = hello(2, 1, CLUSTER);
    good.extend(framed(&encode(&hb(2, 1, 42))));
    raw_client(addr, &good).await;
    let m = recv(&mut one).await;
    assert_eq!((m.from, commit_of(&m)), (2, 42));
    send_until_received(&two.t, &mut one, 43).await;
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
    one.t.shutdown().await;
    two.t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_switch_cuts_both_ways_and_heals() {
    let mut nodes = cluster(3).await;
    let mut three = nodes.pop().expect("node 3");
    let mut two = nodes.pop().expect("node 2");
    let mut one = nodes.pop().expect("node 1");
    send_until_received(&one.t, &mut two, 0).await;
    send_until_received(&two.t, &mut one, 0).await;

    one.t.faults().block(2);
    one.t.send([hb(1, 2, 1)]);
    two.t.send([hb(2, 1, 1)]);
    eventually("inbound fault drop", || {
        one.t.stats().inbound_dropped_fault >= 1
    })
    .await;
    assert!(one.t.stats().peers[&2].dropped_fault >= 1);
    // Node 1 still talks to node 3 both ways.
    send_until_received(&one.t, &mut three, 5).await;
    send_until_received(&three.t, &mut one, 5).await;
    // Earlier retries may still arrive; the blocked messages (commit 1) never do.
    let blocked = |m: &Message| commit_of(m) == 1;
    assert!(!drain(&mut one).iter().any(|m| m.from == 2 && blocked(m)));
    assert!(!drain(&mut two).iter().any(blocked));

    // One way: node 1 still hears node 2 but cannot reach it.
    one.t.faults().unblock(2);
    one.t.faults().block_outbound(2);
    send_until_received(&two.t, &mut one, 6).await;
    one.t.send([hb(1, 2, 6)]);
    assert!(one.t.stats().peers[&2].dropped_fault >= 2);

    one.t.faults().heal();
    send_until_received(&one.t, &mut two, 7).await;
    send_until_received(&two.t, &mut one, 8).await;
    for t in [one.t, two.t, three.t] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_add_and_remove_peers() {
    let mut one = start(1).await;
    let two = start(2).await;
    let mut three = start(3).await;
    let (a1, a2, a3) = (one.t.local_addr(), two.t.local_addr(), three.t.local_addr());
    one.t.set_peers(named(HashMap::from([(2, a2)])));
    two.t.set_peers(named(HashMap::from([(1, a1)])));
    three.t.set_peers(named(HashMap::from([(1, a1)])));

    // Node 1 does not know node 3 yet: refused inbound, unroutable outbound.
    eventually("3 refused", || one.t.stats().unknown_peer >= 1).await;
    one.t.send([hb(1, 3, 0)]);
    assert_eq!(one.t.stats().unknown_destination, 1);

    one.t.set_peers(named(HashMap::from([(2, a2), (3, a3)])));
    send_until_received(&three.t, &mut one, 1).await;
    send_until_received(&one.t, &mut three, 1).await;

    // Removing node 3 closes its connections; its redials are refused.
    let refused = one.t.stats().unknown_peer;
    one.t.set_peers(named(HashMap::from([(2, a2)])));
    assert!(!one.t.stats().peers.contains_key(&3));
    eventually("3 refused again", || one.t.stats().unknown_peer > refused).await;
    drain(&mut one);
    three.t.send([hb(3, 1, 2)]);
    one.t.send([hb(1, 3, 2)]);
    assert_eq!(one.t.stats().unknown_destination, 2);
    send_until_received(&two.t, &mut one, 3).await;
    assert!(!drain(&mut one)
        .iter()
        .any(|m| m.from == 3 && commit_of(m) == 2));
    assert!(!drain(&mut three).iter().any(|m| commit_of(m) == 2));
    for t in [one.t, two.t, three.t] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbound_channel_drops_and_counts() {
    const BURST: u64 = 50;
    let one = start_on(1, any_port(), HashMap::new(), 1).await;
    let two = start(2).await;
    one.t
        .set_peers(named(HashMap::from([(2, two.t.local_addr())])));
    two.t
        .set_peers(named(HashMap::from([(1, one.t.local_addr())])));
    two.t.send((0..BURST).map(|c| hb(2, 1, c)));
    eventually("all accounted for", || {
        let s = one.t.stats();
        s.received + s.inbound_dropped_full == BURST
    })
    .await;
    assert_eq!(one.t.stats().received, 1);
    one.t.shutdown().await;
    two.t.shutdown().await;
}

#[test]
fn random_byte_streams_never_break_the_listener() {
    watch_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut nodes = rt.block_on(cluster(2));
    let two = nodes.pop().expect("node 2");
    let mut one = nodes.pop().expect("node 1");
    let addr = one.t.local_addr();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(valid_hello in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..512))| {
        let mut bytes = if valid_hello { hello(2, 1, CLUSTER) } else { Vec::new() };
        bytes.extend(tail);
        rt.block_on(raw_client(addr, &bytes));
    });
    rt.block_on(async {
        drain(&mut one);
        send_until_received(&two.t, &mut one, 1).await;
        one.t.shutdown().await;
        two.t.shutdown().await;
    });
    assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
}

// ---------------------------------------------------------------------------------
// Requests between peers, membership verdicts, and handshake floods
// ---------------------------------------------------------------------------------

/// Answers every request with its payload reversed; or never, when `stall`.
struct Echo {
    stall: bool,
}

impl ringway::cluster::transport::RequestHandler for Echo {
    fn handle(
        &self,
        _from: NodeId,
        _name: &str,
        mut payload: Vec<u8>,
    ) -> ringway::cluster::transport::BoxFuture<'static, Vec<u8>> {
        let stall = self.stall;
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            payload.reverse();
            payload
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_on_the_peers_own_connection_and_bounded() {
    use ringway::cluster::transport::{CallError, MAX_CALLS_IN_FLIGHT_PER_PEER};
    let nodes = cluster(3).await;
    let (one, two, three) = (&nodes[0].t, &nodes[1].t, &nodes[2].t);
    two.serve_requests(std::sync::Arc::new(Echo { stall: false }));
    three.serve_requests(std::sync::Arc::new(Echo { stall: true }));
    let answer = one.call(2, b"abc".to_vec(), WAIT).await;
    assert_eq!(answer, Ok(b"cba".to_vec()));
    assert_eq!(two.stats().requests_served, 1);
    // No handler: told so, not left waiting.
    assert_eq!(
        two.call(1, b"x".to_vec(), WAIT).await,
        Err(CallError::NotServing(1))
    );
    assert_eq!(
        one.call(9, Vec::new(), WAIT).await,
        Err(CallError::UnknownPeer(9))
    );
    // A handler that never answers: each call ends at its own wait, and beyond the
    // bound of calls in flight the next one fails at once.
    let stalled: Vec<_> = (0..MAX_CALLS_IN_FLIGHT_PER_PEER)
        .map(|_| {
            let t = one.clone();
            tokio::spawn(async move { t.call(3, b"s".to_vec(), Duration::from_secs(3)).await })
        })
        .collect();
    eventually("every stalled call is being served", || {
        three.stats().requests_served == MAX_CALLS_IN_FLIGHT_PER_PEER as u64
    })
    .await;
    assert_eq!(one.call(3, Vec::new(), WAIT).await, Err(CallError::Busy(3)));
    for c in stalled {
        assert_eq!(c.await.expect("task"), Err(CallError::TimedOut(3)));
    }
    // Calls are allowed again once those ended.
    assert_eq!(one.call(2, b"ok".to_vec(), WAIT).await, Ok(b"ko".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fails_as_soon_as_the_callee_goes_away_not_at_its_deadline() {
    use ringway::cluster::transport::CallError;
    let nodes = cluster(2).await;
    let (one, two) = (nodes[0].t.clone(), nodes[1].t.clone());
    two.serve_requests(std::sync::Arc::new(Echo { stall: true }));
    let long = Duration::from_secs(60);
    let t = one.clone();
    let waiting = tokio::spawn(async move { t.call(2, b"s".to_vec(), long).await });
    eventually("the call is being served", || {
        two.stats().requests_served == 1
    })
    .await;
    assert_eq!(one.peer_connected(2), Some(true));
    let gone = std::time::Instant::now();
    two.shutdown().await;
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the call ends well before its own wait")
        .expect("task");
    assert_eq!(
        answer,
        Err(CallError::Disconnected(2)),
        "after {:?}",
        gone.elapsed()
    );
    eventually("the connection seen down", || {
        one.peer_connected(2) == Some(false)
    })
    .await;
    assert_eq!(one.peer_connected(9), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_member_is_told_so_and_it_clears_once_added() {
    let one = start(1).await;
    let mut two = start(2).await;
    // Node 2 dials node 1, which does not list it.
    two.t
        .set_peers(named(HashMap::from([(1, one.t.local_addr())])));
    eventually("told not a member", || two.t.not_a_member()).await;
    assert!(two.t.stats().not_a_member);
    assert!(one.t.stats().unknown_peer >= 1);
    // Added: the next connection is accepted and the flag clears.
    one.t
        .set_peers(named(HashMap::from([(2, two.t.local_addr())])));
    let mut one = one;
    send_until_received(&two.t, &mut one, 5).await;
    eventually("flag cleared", || !two.t.not_a_member()).await;
    drain(&mut two);
}

/// Opens `n` connections to `addr` from `source` that never send a byte, reopening
/// each as soon as the server closes it, until `stop` is set.
fn silent_flood(
    addr: SocketAddr,
    source: std::net::IpAddr,
    n: usize,
    stop: std::sync::Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut opened = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                    if socket.bind(SocketAddr::new(source, 0)).is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let Ok(mut s) = socket.connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    opened += 1;
                    let mut b = [0u8; 16];
                    // Held open until the server closes it (or the flood stops).
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
                }
                opened
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_peer_reconnects_during_a_silent_connection_flood() {
    use ringway::cluster::transport::MAX_PENDING_HANDSHAKES;
    let mut nodes = cluster(2).await;
    let two = nodes.pop().expect("node 2");
    let mut one = nodes.pop().expect("node 1");
    send_until_received(&two.t, &mut one, 1).await;
    let addr = one.t.local_addr();
    let (two_addr, two_id) = (two.t.local_addr(), two.t.id());
    two.t.shutdown().await;

    // More silent connections than there are handshake slots, from ten other loopback
    // addresses and from 127.0.0.1 itself (the real peer's own address).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for last in 2..12u8 {
        let source = std::net::IpAddr::from([127, 0, 0, last]);
        flood.extend(silent_flood(addr, source, 7, stop.clone()));
    }
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    flood.extend(silent_flood(addr, local, 20, stop.clone()));
    assert!(flood.len() > MAX_PENDING_HANDSHAKES);
    eventually("the flood fills the handshake table", || {
        let s = one.t.stats();
        s.handshakes_evicted + s.handshakes_silent + s.handshakes_rejected >= 50
    })
    .await;

    // The real peer comes back while the flood goes on, and its messages flow.
    let two = restart_when_port_is_free(two_id, two_addr, addr).await;
    send_until_received(&two.t, &mut one, 2).await;
    send_until_received(&two.t, &mut one, 3).await;
    stop.store(true, Ordering::Relaxed);
    let mut opened = 0;
    for f in flood {
        opened += f.await.expect("flood task");
    }
    assert!(
        opened as usize > MAX_PENDING_HANDSHAKES,
        "the flood was real: {opened}"
    );
    let s = one.t.stats();
    assert!(s.handshakes_evicted + s.handshakes_silent > 0, "{s:?}");
    two.t.shutdown().await;
    one.t.shutdown().await;
}
