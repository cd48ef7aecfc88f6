//! Three cluster drivers, each on its own thread and runtime as in the binary, joined
//! by an in-memory network that can cut a node off: election, bootstrap from the file,
//! proposals (refused on followers with the leader's id), agreement on the state,
//! a minority that cannot commit, healing, and leader handoff on shutdown; the write
//! order (a leader's AppendEntries out before its own write, acknowledgements only
//! after the follower's).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway::cluster::driver::{
    start_thread, ClusterHandle, Driver, DriverConfig, Outbox, ProposeFailure,
};
use ringway::cluster::state::{ClusterState, Command, UpstreamSpec};
use ringway::config::Config;
use ringway::raft::{
    ConfState, Index, InitialState, MemStorage, Message, MessageBody, NodeId, PersistBatch, Role,
    Storage, StorageError,
};
use tokio::sync::{mpsc, oneshot};

/// Every wait in these tests ends here at the latest.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Net {
    inboxes: Mutex<HashMap<NodeId, mpsc::Sender<Message>>>,
    cut: Mutex<HashSet<NodeId>>,
    order: WriteOrder,
}

/// What went out and what was written, to check the order of the two.
#[derive(Default)]
struct WriteOrder {
    /// (sender, index) of every entry sent in an AppendEntries.
    sent: Mutex<HashSet<(NodeId, Index)>>,
    /// Each node's last written index.
    written: Mutex<HashMap<NodeId, Index>>,
    /// Indexes a node wrote after it had already sent them to a follower.
    sent_before_written: Mutex<Vec<(NodeId, Index)>>,
    /// Acknowledgements of entries their sender had not written yet.
    acked_unwritten: Mutex<Vec<Message>>,
}

impl WriteOrder {
    fn on_send(&self, m: &Message) {
        match &m.body {
            MessageBody::Append { entries, .. } => {
                let mut sent = self.sent.lock().unwrap();
                sent.extend(entries.iter().map(|e| (m.from, e.index)));
            }
            MessageBody::AppendResponse {
                success: true,
                index,
                ..
            } => {
                let written = self.written.lock().unwrap().get(&m.from).copied();
                if written.is_none_or(|w| w < *index) {
                    self.acked_unwritten.lock().unwrap().push(m.clone());
                }
            }
            _ => {}
        }
    }
}

/// `MemStorage` that reports its writes to the [`WriteOrder`].
struct Watched {
    id: NodeId,
    inner: MemStorage,
    net: Arc<Net>,
}

impl Storage for Watched {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.inner.initial_state()
    }

    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        let order = &self.net.order;
        {
            let sent = order.sent.lock().unwrap();
            let early = batch
                .entries
                .iter()
                .filter(|e| sent.contains(&(self.id, e.index)))
                .map(|e| (self.id, e.index));
            order.sent_before_written.lock().unwrap().extend(early);
        }
        self.inner.persist(batch)?;
        let last = self.inner.last_index();
        order.written.lock().unwrap().insert(self.id, last);
        Ok(())
    }
}

struct NetOutbox {
    net: Arc<Net>,
}

impl Outbox for NetOutbox {
    fn send(&self, msgs: Vec<Message>) {
        let cut = self.net.cut.lock().unwrap().clone();
        let inboxes = self.net.inboxes.lock().unwrap();
        for m in msgs {
            if cut.contains(&m.from) || cut.contains(&m.to) {
                continue;
            }
            self.net.order.on_send(&m);
            if let Some(tx) = inboxes.get(&m.to) {
                let _ = tx.try_send(m);
            }
        }
    }
}

struct Member {
    handle: ClusterHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bootstrap() -> Command {
    let config = Config::parse(include_str!("../config.example.yaml")).unwrap();
    ClusterState::bootstrap_command(&config)
}

fn start(ids: &[NodeId], net: &Arc<Net>) -> Vec<Member> {
    ids.iter()
        .map(|&id| {
            let storage = Watched {
                id,
                inner: MemStorage::new_with_conf(ConfState::with_voters(ids)),
                net: net.clone(),
            };
            let mut cfg = DriverConfig::from_timeouts(
                id,
                Duration::from_millis(20),
                Duration::from_millis(200),
            );
            cfg.bootstrap = Some(bootstrap());
            let (driver, handle) = Driver::new(cfg, storage).unwrap();
            let (tx, rx) = mpsc::channel(1024);
            net.inboxes.lock().unwrap().insert(id, tx);
            let (stop, stopped) = oneshot::channel::<()>();
            let outbox = NetOutbox { net: net.clone() };
            let thread = start_thread("cluster", move || async move {
                driver
                    .run(rx, outbox, async {
                        let _ = stopped.await;
                    })
                    .await
            })
            .unwrap();
            Member {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }
        })
        .collect()
}

/// Waits until `pred` holds, polling every 10 ms, or panics after [`PATIENCE`].
async fn eventually(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !pred() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn leader_of(members: &[&Member]) -> Option<NodeId> {
    let views: Vec<_> = members.iter().map(|m| m.handle.view()).collect();
    let leader = views.iter().find(|v| v.role == Role::Leader)?.id;
    views
        .iter()
        .all(|v| v.leader == Some(leader))
        .then_some(leader)
}

fn put(id: &str, port: u16) -> Command {
    Command::PutUpstream {
        pool: "web".into(),
        upstream: UpstreamSpec {
            id: id.into(),
            address: format!("127.0.0.1:{port}"),
            weight: 1,
            draining: false,
        },
    }
}

fn same_state(members: &[&Member]) -> bool {
    let states: Vec<_> = members
        .iter()
        .map(|m| m.handle.view().state.encode())
        .collect();
    states.windows(2).all(|w| w[0] == w[1])
}

#[tokio::test]
async fn three_drivers_elect_bootstrap_agree_and_hand_off() {
    let net = Arc::new(Net::default());
    let ids = [11, 22, 33];
    let mut members = start(&ids, &net);
    let all: Vec<&Member> = members.iter().collect();

    eventually("one leader every node knows", || leader_of(&all).is_some()).await;
    eventually("the file's pools bootstrapped everywhere", || {
        all.iter().all(|m| m.handle.view().state.is_bootstrapped()) && same_state(&all)
    })
    .await;
    assert_eq!(all[0].handle.view().state.pool("web").unwrap().len(), 3);

    // A follower refuses with the leader's id; the leader commits and answers only
    // once the change is applied.
    let leader = leader_of(&all).unwrap();
    let li = ids.iter().position(|&i| i == leader).unwrap();
    let follower = &all[(li + 1) % 3];
    match follower.handle.propose(put("extra", 9100)).await {
        Err(ProposeFailure::NotLeader { leader: Some(l) }) => assert_eq!(l, leader),
        other => panic!("follower answered {other:?}"),
    }
    let index = all[li].handle.propose(put("extra", 9100)).await.unwrap();
    assert!(all[li].handle.view().applied >= index);
    eventually("every node applies the change", || same_state(&all)).await;
    assert_eq!(follower.handle.view().state.pool("web").unwrap().len(), 4);

    // An invalid change is refused before it reaches the log.
    let bad = Command::DeleteUpstream {
        pool: "web".into(),
        id: String::new(),
    };
    assert!(matches!(
        all[li].handle.propose(bad).await,
        Err(ProposeFailure::Refused(_))
    ));
    // A change the state machine refuses commits as a no-op, identically everywhere.
    let unknown = Command::DeleteUpstream {
        pool: "nope".into(),
        id: "x".into(),
    };
    assert!(matches!(
        all[li].handle.propose(unknown).await,
        Err(ProposeFailure::Refused(_))
    ));

    // Shutting the leader down hands leadership to another voter, and the remaining
    // two keep committing.
    drop(all);
    members[li].stop();
    let rest: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, m)| m)
        .collect();
    eventually("a new leader among the remaining two", || {
        leader_of(&rest).is_some_and(|l| l != leader)
    })
    .await;
    let new_leader = leader_of(&rest).unwrap();
    let nl = rest
        .iter()
        .find(|m| m.handle.view().id == new_leader)
        .unwrap();
    nl.handle.propose(put("after", 9101)).await.unwrap();
    eventually("both apply it", || same_state(&rest)).await;
}

#[tokio::test]
async fn a_cut_off_node_cannot_commit_and_catches_up_after_healing() {
    let net = Arc::new(Net::default());
    let ids = [1, 2, 3];
    let members = start(&ids, &net);
    let all: Vec<&Member> = members.iter().collect();
    eventually("a leader", || leader_of(&all).is_some()).await;
    eventually("bootstrapped everywhere", || {
        same_state(&all) && all[0].handle.view().state.is_bootstrapped()
    })
    .await;

    // Cut the leader off: it loses leadership (CheckQuorum), the majority elects anew.
    let old = leader_of(&all).unwrap();
    net.cut.lock().unwrap().insert(old);
    let oi = ids.iter().position(|&i| i == old).unwrap();
    let majority: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != oi)
        .map(|(_, m)| m)
        .collect();
    eventually("a new leader in the majority", || {
        leader_of(&majority).is_some_and(|l| l != old)
    })
    .await;
    eventually("the cut-off node stops leading", || {
        all[oi].handle.view().role != Role::Leader
    })
    .await;
    let cut_applied = all[oi].handle.view().applied;
    assert!(
        all[oi].handle.propose(put("minority", 9200)).await.is_err(),
        "a minority cannot commit"
    );

    let leader = leader_of(&majority).unwrap();
    let lm = majority
        .iter()
        .find(|m| m.handle.view().id == leader)
        .unwrap();
    lm.handle.propose(put("majority", 9201)).await.unwrap();
    assert_eq!(
        all[oi].handle.view().applied,
        cut_applied,
        "nothing reaches the cut-off node"
    );

    net.cut.lock().unwrap().clear();
    eventually("all three agree again", || same_state(&all)).await;
    let web = all[oi].handle.view().state.pool("web").unwrap().to_vec();
    assert!(web.iter().any(|u| u.id == "majority"));
    assert!(!web.iter().any(|u| u.id == "minority"));
}

#[tokio::test]
async fn leader_sends_before_its_write_and_followers_ack_only_after_theirs() {
    let net = Arc::new(Net::default());
    let ids = [4, 5, 6];
    let members = start(&ids, &net);
    let all: Vec<&Member> = members.iter().collect();
    eventually("a leader", || leader_of(&all).is_some()).await;
    eventually("bootstrapped everywhere", || {
        same_state(&all) && all[0].handle.view().state.is_bootstrapped()
    })
    .await;
    let leader = leader_of(&all).unwrap();
    let li = ids.iter().position(|&i| i == leader).unwrap();
    let index = all[li].handle.propose(put("early", 9300)).await.unwrap();
    eventually("every node applies the change", || same_state(&all)).await;

    let early = net.order.sent_before_written.lock().unwrap().clone();
    assert!(
        early.contains(&(leader, index)),
        "the leader wrote entry {index} before sending it: {early:?}"
    );
    let acked = net.order.acked_unwritten.lock().unwrap().clone();
    assert!(acked.is_empty(), "acknowledged before written: {acked:?}");
}
