//! One path to propose: three cluster members, each a real driver (own thread and
//! runtime, as in the binary) over real transports on 127.0.0.1 authenticated with a
//! shared secret. A change proposed on a follower is forwarded to the leader and
//! applies once on every member; a once-only change retried is answered with its
//! first index and never applied twice; a leader stopped during a forwarded change
//! leaves it committed once or refused with a clear error. Every wait is bounded;
//! nothing asserts on timing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ringway::cluster::driver::{start_thread, ClusterHandle, Driver, DriverConfig, ProposeFailure};
use ringway::cluster::forward::{ForwardServer, Proposer};
use ringway::cluster::raft_id;
use ringway::cluster::state::{ChangeId, ClusterState, Command, Refused, UpstreamSpec};
use ringway::cluster::transport::{PeerAuth, Secret, Transport, TransportConfig};
use ringway::raft::{ConfChange, ConfChangeKind, ConfState, MemStorage, NodeId, Role};
use tokio::sync::{mpsc, oneshot};

/// Every wait in these tests ends here at the latest.
const PATIENCE: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

struct Member {
    id: NodeId,
    handle: ClusterHandle,
    transport: Arc<OnceLock<Transport>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("cluster thread");
        }
    }

    fn proposer(&self) -> Proposer {
        Proposer::new(self.handle.clone(), self.transport.clone())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    l.local_addr().expect("local addr")
}

fn bootstrap() -> Command {
    Command::Bootstrap {
        pools: BTreeMap::from([("web".to_string(), vec![spec("a", 9001)])]),
        peers: BTreeMap::new(),
    }
}

fn spec(id: &str, port: u16) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        address: format!("127.0.0.1:{port}"),
        weight: 1,
        draining: false,
    }
}

fn put(id: &str, port: u16) -> Command {
    Command::PutUpstream {
        pool: "web".into(),
        upstream: spec(id, port),
    }
}

fn start() -> Vec<Member> {
    let secret = Secret::new(b"a cluster secret of at least 32 bytes".to_vec()).expect("secret");
    let addrs: BTreeMap<String, SocketAddr> =
        NAMES.iter().map(|n| (n.to_string(), free_addr())).collect();
    let ids: Vec<NodeId> = NAMES.iter().map(|n| raft_id(n)).collect();
    NAMES
        .iter()
        .map(|name| {
            let id = raft_id(name);
            let storage = MemStorage::new_with_conf(ConfState::with_voters(&ids));
            let mut cfg = DriverConfig::from_timeouts(
                id,
                Duration::from_millis(50),
                Duration::from_millis(500),
            );
            cfg.bootstrap = Some(bootstrap());
            cfg.file_peers = addrs.clone();
            let (driver, handle) = Driver::new(cfg, storage).expect("driver");
            let tcfg = TransportConfig {
                id,
                listen: addrs[*name],
                peers: Default::default(),
                cluster: "ringway-forward-test".into(),
                name: name.to_string(),
                auth: PeerAuth::Secret(secret.clone()),
            };
            let transport = Arc::new(OnceLock::new());
            let slot = transport.clone();
            let server = ForwardServer::new(handle.clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = start_thread("cluster", move || async move {
                let (tx, rx) = mpsc::channel(4096);
                let t = Transport::start(tcfg, tx).await.expect("transport starts");
                t.serve_requests(Arc::new(server));
                let _ = slot.set(t.clone());
                driver
                    .run(rx, t.clone(), async {
                        let _ = stopped.await;
                    })
                    .await;
                t.shutdown().await;
            })
            .expect("thread");
            Member {
                id,
                handle,
                transport,
                stop: Some(stop),
                thread: Some(thread),
            }
        })
        .collect()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leader every running member agrees on, once bootstrapped.
fn agreed_leader(members: &[&Member]) -> Option<NodeId> {
    let views: Vec<_> = members.iter().map(|m| m.handle.view()).collect();
    let leader = views.iter().find(|v| v.role == Role::Leader)?.id;
    let agreed = views
        .iter()
        .all(|v| v.leader == Some(leader) && v.state.is_bootstrapped());
    agreed.then_some(leader)
}

fn has(m: &Member, id: &str) -> bool {
    m.handle
        .view()
        .state
        .pool("web")
        .is_some_and(|l| l.iter().any(|u| u.id == id))
}

fn state(m: &Member) -> Arc<ClusterState> {
    m.handle.view().state.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_proposed_on_a_follower_is_forwarded_and_applies_once_everywhere() {
    let members = start();
    let all: Vec<&Member> = members.iter().collect();
    let leader = eventually("a leader", || agreed_leader(&all)).await;
    let follower = members.iter().find(|m| m.id != leader).expect("a follower");
    let proposer = follower.proposer();

    let id = proposer.next_id();
    let index = proposer
        .propose_once(id, put("b", 9002))
        .await
        .expect("forwarded change applies");
    for m in &members {
        eventually("b everywhere", || has(m, "b").then_some(())).await;
        eventually("the id recorded at its index", || {
            (state(m).applied_change(&id) == Some(index)).then_some(())
        })
        .await;
    }
    // The same change again (as a retry after a lost answer would send it): answered
    // with the first index, and the state remembers that index, not a second one.
    let again = proposer.propose_once(id, put("b", 9002)).await;
    assert_eq!(again, Ok(index));
    // Proposing it on the leader directly shows the state machine's refusal.
    let leader_member = members.iter().find(|m| m.id == leader).expect("leader");
    let direct = leader_member
        .handle
        .propose(Command::Once {
            id,
            command: Box::new(put("b", 9002)),
        })
        .await;
    assert_eq!(
        direct,
        Err(ProposeFailure::Refused(Refused::Duplicate { index }))
    );
    for m in &members {
        assert_eq!(state(m).applied_change(&id), Some(index));
    }
    // A refusal travels back typed.
    let refused = proposer
        .propose(Command::DeleteUpstream {
            pool: "nope".into(),
            id: "x".into(),
        })
        .await;
    assert_eq!(
        refused,
        Err(ProposeFailure::Refused(Refused::UnknownPool("nope".into())))
    );
    // And a membership step forwarded from a follower reaches the leader's Raft.
    let step = proposer
        .change_membership(ConfChange {
            kind: ConfChangeKind::AddLearner,
            node: follower.id,
        })
        .await;
    assert!(
        matches!(step, Err(ProposeFailure::Refused(Refused::Invalid(ref why))) if why.contains("already a member")),
        "{step:?}"
    );
    // Every transport kept working: nothing was refused for authentication.
    for m in &members {
        let stats = m.transport.get().expect("transport").stats();
        assert_eq!((stats.auth_rejected, stats.frames_bad_tag), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_during_a_forwarded_change_leaves_it_applied_once_or_refused_clearly() {
    let mut members = start();
    let leader = {
        let all: Vec<&Member> = members.iter().collect();
        eventually("a leader", || agreed_leader(&all)).await
    };
    let at = members.iter().position(|m| m.id == leader).expect("leader");
    let follower = members.iter().find(|m| m.id != leader).expect("a follower");
    let proposer = follower.proposer();
    let ids: Vec<ChangeId> = (0..5).map(|_| proposer.next_id()).collect();
    let changes: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let p = proposer.clone();
            tokio::spawn(async move {
                p.propose_once(id, put(&format!("k{i}"), 9100 + i as u16))
                    .await
            })
        })
        .collect();
    // Stop the leader while those are in flight (some may have applied already).
    let mut old = members.remove(at);
    tokio::task::spawn_blocking(move || old.stop())
        .await
        .expect("leader stops");
    let mut results = Vec::new();
    for c in changes {
        results.push(c.await.expect("proposal task"));
    }
    let survivors: Vec<&Member> = members.iter().collect();
    eventually("a new leader", || agreed_leader(&survivors)).await;
    for (i, (id, res)) in ids.iter().zip(&results).enumerate() {
        match res {
            Ok(index) => {
                for m in &members {
                    eventually("applied on every survivor", || {
                        (has(m, &format!("k{i}")) && state(m).applied_change(id) == Some(*index))
                            .then_some(())
                    })
                    .await;
                }
            }
            Err(e) => {
                // A clear, typed failure; if it applied after all, it applied once.
                assert!(
                    matches!(
                        e,
                        ProposeFailure::Unavailable(_)
                            | ProposeFailure::NotLeader { .. }
                            | ProposeFailure::Lost
                            | ProposeFailure::NotYet(_)
                            | ProposeFailure::Busy
                    ),
                    "{e:?}"
                );
            }
        }
    }
    // Proposing each once more with its id never applies a second copy: a change that
    // applied answers with its first index.
    for (id, res) in ids.iter().zip(&results) {
        let again = proposer.propose_once(*id, put("again", 9200)).await;
        if let Ok(first) = res {
            assert_eq!(again, Ok(*first), "retry of an applied change");
        }
    }
}
