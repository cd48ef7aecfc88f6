//! Peer authentication with a shared cluster secret, over real sockets on 127.0.0.1:
//! members with the secret talk; a node with another secret cannot connect either
//! way; a client without the secret cannot get a hello, a proof or an Append past
//! the handshake; and a client that does know the secret still cannot inject a frame
//! with a bad tag, replay a frame, or replay a frame from another session. Every
//! refusal is counted; the members keep working throughout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringway::cluster::transport::auth::{Session, MAC_LEN, NONCE_LEN};
use ringway::cluster::transport::wire::{
    encode_hello, push_frame, read_answer, read_verdict, AuthMode, Frame, Hello,
};
use ringway::cluster::transport::{
    PeerAddr, PeerAuth, Secret, Transport, TransportConfig, TransportStats,
};
use ringway::raft::{Entry, EntryPayload, Message, MessageBody, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Bound on every wait: far above what any step needs, so only a real hang fails.
const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: &str = "ringway-auth-test";

struct Node {
    t: Transport,
    rx: mpsc::Receiver<Message>,
}

fn secret(fill: u8) -> Secret {
    Secret::new(vec![fill; 40]).expect("secret")
}

async fn node(id: NodeId, auth: PeerAuth) -> Node {
    let (tx, rx) = mpsc::channel(4096);
    let cfg = TransportConfig {
        id,
        listen: "127.0.0.1:0".parse().expect("literal"),
        peers: HashMap::new(),
        cluster: CLUSTER.into(),
        name: format!("n{id}"),
        auth,
    };
    let t = Transport::start(cfg, tx).await.expect("transport starts");
    Node { t, rx }
}

fn link(nodes: &[&Node]) {
    for a in nodes {
        let peers: HashMap<NodeId, PeerAddr> = nodes
            .iter()
            .filter(|b| b.t.id() != a.t.id())
            .map(|b| {
                let id = b.t.id();
                (id, PeerAddr::new(format!("n{id}"), b.t.local_addr()))
            })
            .collect();
        a.t.set_peers(peers);
    }
}

fn hb(from: NodeId, to: NodeId, commit: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::Heartbeat { commit },
    }
}

/// A forged Append that would, if applied, write an entry into the receiver's log.
fn append(from: NodeId, to: NodeId) -> Message {
    Message {
        from,
        to,
        term: 99,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            commit: 1,
            entries: vec![Entry {
                term: 99,
                index: 1,
                payload: EntryPayload::Normal(b"forged".to_vec()),
            }],
        },
    }
}

async fn delivered(from: &Node, to: &mut Node, commit: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        from.t.send([hb(from.t.id(), to.t.id(), commit)]);
        let got = tokio::time::timeout(Duration::from_millis(100), to.rx.recv()).await;
        if let Ok(Some(m)) = got {
            if m.from == from.t.id() {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
    }
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hand-made dialer: sends a hello as node `from`, reads the answer and, knowing
/// `secret` (or not: `None` sends a made-up proof), completes the handshake. Returns
/// the stream, the session and the verdict.
async fn raw_dial(
    addr: SocketAddr,
    from: NodeId,
    to: NodeId,
    secret: Option<&Secret>,
) -> (TcpStream, Session, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let hello = Hello {
        from,
        to,
        cluster: CLUSTER.into(),
        name: format!("n{from}"),
        mode: AuthMode::Secret,
        nonce: [fastrand::u8(..); NONCE_LEN],
    };
    let mut transcript = encode_hello(&hello);
    s.write_all(&transcript).await.expect("hello");
    let _answer = read_answer(&mut s, &mut transcript).await.expect("answer");
    let proof = match secret {
        Some(k) => k.dialer_proof(&transcript),
        None => [7u8; MAC_LEN],
    };
    s.write_all(&proof).await.expect("proof");
    let accepted = read_verdict(&mut s).await.is_ok();
    let session = secret.unwrap_or(&self::secret(0)).session(&transcript);
    (s, session, accepted)
}

fn frame(msg: Message, session: Option<&mut Session>) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(push_frame(&mut out, &Frame::Raft(msg), session));
    out
}

/// Waits until the acceptor closes `s` (EOF or error), bounded.
async fn closed(s: &mut TcpStream) {
    let mut sink = Vec::new();
    let res = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
    assert!(res.is_ok(), "the connection was never closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_the_secret_talk_and_a_node_with_another_secret_cannot_either_way() {
    let mut one = node(1, PeerAuth::Secret(secret(1))).await;
    let mut two = node(2, PeerAuth::Secret(secret(1))).await;
    let wrong = node(3, PeerAuth::Secret(secret(2))).await;
    link(&[&one, &two, &wrong]);
    delivered(&two, &mut one, 1).await;
    delivered(&one, &mut two, 2).await;
    // The wrong-secret node keeps dialling node 1, and node 1 keeps dialling it.
    let stat = |n: &Node, f: fn(&TransportStats) -> u64| f(&n.t.stats());
    let deadline = tokio::time::Instant::now() + WAIT;
    while stat(&one, |s| s.auth_rejected) < 2 || stat(&wrong, |s| s.auth_rejected) < 1 {
        wrong.t.send([hb(3, 1, 66)]);
        one.t.send([hb(1, 3, 66)]);
        assert!(
            tokio::time::Instant::now() < deadline,
            "refusals not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!one.t.stats().peers[&3].connected);
    assert!(!wrong.t.stats().peers[&1].connected);
    while let Ok(m) = one.rx.try_recv() {
        assert_ne!(m.from, 3, "a message from the wrong-secret node got in");
    }
    delivered(&two, &mut one, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_secret_gets_nothing_in() {
    let k = secret(1);
    let mut one = node(1, PeerAuth::Secret(k.clone())).await;
    let two = node(2, PeerAuth::Secret(k.clone())).await;
    link(&[&one, &two]);
    delivered(&two, &mut one, 1).await;
    let addr = one.t.local_addr();

    // A forged hello naming a member, a made-up proof, then a forged Append.
    let (mut s, mut session, accepted) = raw_dial(addr, 2, 1, None).await;
    assert!(!accepted, "a made-up proof was accepted");
    let _ = s.write_all(&frame(append(2, 1), Some(&mut session))).await;
    closed(&mut s).await;
    eventually("forged proof counted", || one.t.stats().auth_rejected >= 1).await;

    // An untagged hello in another mode (the plain-text protocol): refused as well.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let plain = Hello {
        from: 2,
        to: 1,
        cluster: CLUSTER.into(),
        name: "n2".into(),
        mode: AuthMode::Insecure,
        nonce: [0; NONCE_LEN],
    };
    let mut bytes = encode_hello(&plain);
    bytes.extend(frame(append(2, 1), None));
    let _ = s.write_all(&bytes).await;
    closed(&mut s).await;
    eventually("plain text counted", || one.t.stats().auth_rejected >= 2).await;

    // Nothing forged reached the core; the real peer still does.
    while let Ok(m) = one.rx.try_recv() {
        assert!(
            matches!(m.body, MessageBody::Heartbeat { .. }),
            "a forged {m:?} got in"
        );
    }
    delivered(&two, &mut one, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_bound_to_their_session_and_order() {
    let k = secret(1);
    let mut one = node(1, PeerAuth::Secret(k.clone())).await;
    let two = node(2, PeerAuth::Secret(k.clone())).await;
    link(&[&one, &two]);
    delivered(&two, &mut one, 1).await;
    two.t.clone().shutdown().await;
    while one.rx.try_recv().is_ok() {}
    let addr = one.t.local_addr();

    // A correct session delivers its first frame...
    let (mut s, mut session, accepted) = raw_dial(addr, 2, 1, Some(&k)).await;
    assert!(accepted);
    let first = frame(hb(2, 1, 100), Some(&mut session));
    s.write_all(&first).await.expect("write");
    let m = tokio::time::timeout(WAIT, one.rx.recv())
        .await
        .expect("delivered");
    assert_eq!(
        m.map(|m| m.body),
        Some(MessageBody::Heartbeat { commit: 100 })
    );
    // ...but the same bytes again (a replay) close the connection.
    s.write_all(&first).await.expect("write");
    closed(&mut s).await;
    eventually("replay counted", || one.t.stats().frames_bad_tag >= 1).await;

    // A frame from that session replayed into a fresh session is refused.
    let (mut s, _fresh, accepted) = raw_dial(addr, 2, 1, Some(&k)).await;
    assert!(accepted);
    s.write_all(&first).await.expect("write");
    closed(&mut s).await;
    eventually("splice counted", || one.t.stats().frames_bad_tag >= 2).await;

    // A tampered frame is refused.
    let (mut s, mut session, _) = raw_dial(addr, 2, 1, Some(&k)).await;
    let mut bad = frame(hb(2, 1, 101), Some(&mut session));
    let at = bad.len() - MAC_LEN - 1;
    bad[at] ^= 1;
    s.write_all(&bad).await.expect("write");
    closed(&mut s).await;
    eventually("tamper counted", || one.t.stats().frames_bad_tag >= 3).await;
    assert!(one.rx.try_recv().is_err(), "a refused frame was delivered");
}

#[test]
fn secret_files_are_checked_for_length_and_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &[u8], mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    let good = write("good", &[b'x'; 32], 0o600);
    assert!(Secret::load(&good).is_ok());
    let with_newline = write("nl", b"0123456789abcdef0123456789abcdef\n", 0o400);
    assert!(Secret::load(&with_newline).is_ok());
    let short = write("short", &[b'x'; 31], 0o600);
    let e = Secret::load(&short).expect_err("short").to_string();
    assert!(e.contains("31 bytes") && e.contains("short"), "{e}");
    let open = write("open", &[b'x'; 32], 0o644);
    let e = Secret::load(&open).expect_err("world readable").to_string();
    assert!(e.contains("chmod 600") && e.contains("open"), "{e}");
    let e = Secret::load(&dir.path().join("missing"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn a_cluster_of_several_members_without_authentication_is_refused_unless_said_so() {
    use ringway::config::Config;
    let with = |extra: &str| {
        format!(
            "node: {{id: n1, data_dir: d}}\n\
             cluster:\n  address: 127.0.0.1:7001\n  peers: {{n1: 127.0.0.1:7001, n2: 127.0.0.1:7002}}\n{extra}\
             listeners: [{{address: \"127.0.0.1:1\"}}]\n\
             pools: [{{name: p, upstreams: [{{address: \"127.0.0.1:9\"}}]}}]\n"
        )
    };
    let refused = Config::parse(&with("")).expect_err("no authentication");
    let text: Vec<String> = refused
        .field_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        text.iter().any(|e| e.starts_with("cluster:")
            && e.contains("secret_file")
            && e.contains("insecure_plaintext")),
        "{text:?}"
    );
    let insecure = Config::parse(&with("  insecure_plaintext: true\n")).expect("said so");
    assert!(insecure.cluster.expect("cluster").insecure_plaintext);
    let secret = Config::parse(&with("  secret_file: ./cluster.secret\n")).expect("secret");
    assert!(secret.cluster.expect("cluster").secret_file.is_some());
    // A group of one needs neither.
    let alone = "node: {id: n1, data_dir: d}\n\
                 cluster: {address: 127.0.0.1:7001, peers: {n1: 127.0.0.1:7001}}\n\
                 listeners: [{address: \"127.0.0.1:1\"}]\n\
                 pools: [{name: p, upstreams: [{address: \"127.0.0.1:9\"}]}]\n";
    assert!(Config::parse(alone).is_ok());
}
