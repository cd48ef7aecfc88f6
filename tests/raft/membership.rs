//! Membership changes, learners, leader transfer, self-removal and snapshot catch-up,
//! checked on a lock-step fault-free cluster of real nodes.

use ringway::raft::sim::cluster::Cluster;
use ringway::raft::{
    ConfChange, ConfChangeKind, Config, MemStorage, Node, NodeId, ProposeError, Role,
};

fn cluster3() -> Cluster {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    assert_eq!(c.leader(), Some(1));
    c
}

fn cc(kind: ConfChangeKind, node: NodeId) -> ConfChange {
    ConfChange { kind, node }
}

#[test]
fn only_one_conf_change_in_flight() {
    let mut c = cluster3();
    c.isolated.insert(2);
    c.isolated.insert(3);
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    let r = c
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 5));
    assert!(matches!(r, Err(ProposeError::ConfChangePending { .. })));
}

#[test]
fn learner_promotion_refused_until_caught_up() {
    let mut c = cluster3();
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    c.settle();
    for i in 0..100u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    let r = c
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4));
    assert!(matches!(r, Err(ProposeError::LearnerBehind { .. })));
}

#[test]
fn leader_transfer_hands_leadership_to_the_target() {
    let mut c = cluster3();
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.settle();
    c.node(1).transfer_leader(3).unwrap();
    c.settle();
    assert_eq!(c.leader(), Some(3));
}

#[test]
fn proposals_refused_during_transfer() {
    let mut c = cluster3();
    c.isolated.insert(3);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.settle();
    c.node(1).transfer_leader(3).unwrap();
    assert!(matches!(
        c.node(1).propose(b"b".to_vec()),
        Err(ProposeError::TransferInProgress { to: 3 })
    ));
}

#[test]
fn leader_removing_itself_steps_down_and_a_successor_takes_over() {
    let mut c = cluster3();
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::RemoveNode, 1))
        .unwrap();
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader);
    let l = c.leader().expect("a successor was elected via TimeoutNow");
    assert_ne!(l, 1);
    assert_eq!(c.node(l).conf().voters, vec![2, 3]);
}

#[test]
fn lagging_follower_is_caught_up_by_snapshot() {
    let mut c = cluster3();
    c.isolated.insert(3);
    for i in 0..20u8 {
        c.node(1).propose(vec![i]).unwrap();
        c.settle();
    }
    let applied = c.node(1).applied_index();
    c.node(1).compact(applied, b"image".to_vec()).unwrap();
    c.isolated.clear();
    for _ in 0..3 {
        c.node(1).tick();
        c.node(1).tick();
        c.settle();
    }
    assert_eq!(c.node(3).snapshot_index(), applied);
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    assert_eq!(c.storages[&3].snapshot().data, b"image".to_vec());
}

#[test]
fn added_learner_receives_the_log_and_can_be_promoted() {
    let mut c = cluster3();
    let storage = MemStorage::new();
    let node = Node::try_new(Config::try_new(4).unwrap(), &storage).unwrap();
    c.nodes.insert(4, node);
    c.storages.insert(4, storage);
    c.applied.insert(4, Vec::new());
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    c.settle();
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4))
        .unwrap();
    c.settle();
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    assert_eq!(c.node(4).conf().voters, vec![1, 2, 3, 4]);
    assert_eq!(c.node(4).commit_index(), c.node(1).commit_index());
}
