//! Three cluster drivers, each on its own thread and runtime as in the binary, joined
//! by an in-memory network that can cut a node off: election, bootstrap from the file,
//! proposals (refused on followers with the leader's id), agreement on the state,
//! a minority that cannot commit, healing, and leader handoff on shutdown; the write
//! order (a leader's AppendEntries out before its own write, acknowledgements only
//! after the follower's); a disk without room (the batch held and written again, no
//! acknowledgement and no change taken meanwhile) and a failed write (the driver
//! stops and says so).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway::cluster::driver::{
    start_thread, ClusterHandle, Driver, DriverConfig, Outbox, ProposeFailure, StorageHealth,
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
    /// Nodes whose writes fail, and how.
    disk: Mutex<HashMap<NodeId, DiskFault>>,
}

#[derive(Clone, Copy, Debug)]
enum DiskFault {
    /// `ENOSPC`: nothing written, worth writing again.
    NoSpace,
    /// `EIO` from the write or its fsync.
    Broken,
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
        if let Some(fault) = self.net.disk.lock().unwrap().get(&self.id).copied() {
            let errno = match fault {
                DiskFault::NoSpace => 28,
                DiskFault::Broken => 5,
            };
            return Err(StorageError::Io {
                file: format!("node-{}/raft", self.id).into(),
                op: "append".into(),
                source: Arc::new(std::io::Error::from_raw_os_error(errno)),
            });
        }
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
    let config = Config::parse(include_str!("../../config.example.yaml")).unwrap();
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

#[tokio::test]
async fn a_node_without_disk_space_acknowledges_nothing_takes_no_change_and_resumes() {
    let net = Arc::new(Net::default());
    let ids = [7, 8, 9];
    let members = start(&ids, &net);
    let all: Vec<&Member> = members.iter().collect();
    eventually("a leader", || leader_of(&all).is_some()).await;
    eventually("bootstrapped everywhere", || {
        same_state(&all) && all[0].handle.view().state.is_bootstrapped()
    })
    .await;
    let full = leader_of(&all).unwrap();
    let fi = ids.iter().position(|&i| i == full).unwrap();
    net.disk.lock().unwrap().insert(full, DiskFault::NoSpace);

    // Accepted before the disk was found full; it applies once there is room, or is
    // lost to the next leader: either way every node ends with the same state.
    let first = all[fi].handle.clone();
    let pending = tokio::spawn(async move { first.propose(put("before-full", 9400)).await });
    eventually("the full node says so", || {
        matches!(all[fi].handle.view().storage, StorageHealth::Full { .. })
    })
    .await;
    match all[fi].handle.view().storage.clone() {
        StorageHealth::Full { error } => assert!(
            error.contains("No space left on device") || error.contains("os error 28"),
            "the reason names the cause: {error}"
        ),
        other => panic!("expected a full disk, got {other:?}"),
    }
    match all[fi].handle.propose(put("while-full", 9401)).await {
        Err(ProposeFailure::Unavailable(why)) => {
            assert!(why.contains("cannot write its Raft log"), "{why}")
        }
        other => panic!("a node that cannot write takes no change: {other:?}"),
    }

    // It goes quiet: the other two elect a leader and go on without it.
    let others: Vec<&Member> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != fi)
        .map(|(_, m)| *m)
        .collect();
    eventually("a new leader among the others", || {
        leader_of(&others).is_some_and(|l| l != full)
    })
    .await;
    let leader = leader_of(&others).unwrap();
    let lm = others
        .iter()
        .find(|m| m.handle.view().id == leader)
        .unwrap();
    lm.handle.propose(put("during-full", 9402)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = all[fi].handle.view().state.pool("web").unwrap().to_vec();
    assert!(
        !seen.iter().any(|u| u.id == "during-full"),
        "nothing is applied from a batch that was not written"
    );
    let acked = net.order.acked_unwritten.lock().unwrap().clone();
    assert!(acked.is_empty(), "acknowledged before written: {acked:?}");

    net.disk.lock().unwrap().clear();
    eventually("the node writes again", || {
        all[fi].handle.view().storage == StorageHealth::Writable
    })
    .await;
    eventually("all three agree again", || same_state(&all)).await;
    let web = all[fi].handle.view().state.pool("web").unwrap().to_vec();
    assert!(web.iter().any(|u| u.id == "during-full"));
    let first = pending.await.unwrap();
    let applied = web.iter().any(|u| u.id == "before-full");
    assert_eq!(
        first.is_ok(),
        applied,
        "a change acknowledged is present, one refused is not: {first:?}"
    );
    let acked = net.order.acked_unwritten.lock().unwrap().clone();
    assert!(acked.is_empty(), "acknowledged before written: {acked:?}");
}

#[tokio::test]
async fn a_failed_write_stops_the_driver_and_says_why() {
    let net = Arc::new(Net::default());
    let ids = [12, 13, 14];
    let mut members = start(&ids, &net);
    let all: Vec<&Member> = members.iter().collect();
    eventually("a leader", || leader_of(&all).is_some()).await;
    eventually("bootstrapped everywhere", || {
        same_state(&all) && all[0].handle.view().state.is_bootstrapped()
    })
    .await;
    let leader = leader_of(&all).unwrap();
    let li = ids.iter().position(|&i| i == leader).unwrap();
    let bi = (li + 1) % ids.len();
    net.disk.lock().unwrap().insert(ids[bi], DiskFault::Broken);
    all[li]
        .handle
        .propose(put("after-break", 9500))
        .await
        .unwrap();
    eventually("the broken node reports its log failed", || {
        matches!(all[bi].handle.view().storage, StorageHealth::Failed { .. })
    })
    .await;
    match all[bi].handle.view().storage.clone() {
        StorageHealth::Failed { error } => assert!(
            error.contains("Input/output error") || error.contains("os error 5"),
            "{error}"
        ),
        other => panic!("expected a failed log, got {other:?}"),
    }
    // Its driver has stopped: it takes nothing more.
    match all[bi].handle.propose(put("to-broken", 9501)).await {
        Err(ProposeFailure::Stopped) => {}
        other => panic!("a stopped driver answers Stopped: {other:?}"),
    }
    // The thread ends without being told to.
    let thread = members[bi].thread.take().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !thread.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the driver thread did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    thread.join().unwrap();
    let all: Vec<&Member> = members.iter().collect();
    all[li].handle.propose(put("two-left", 9502)).await.unwrap();
}
