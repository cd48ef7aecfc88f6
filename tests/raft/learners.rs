//! Learners: members that receive the log but never vote or campaign, demotion of a
//! voter to learner, and the bound on learners. Rule tests feed crafted messages to one
//! node; the rest run on the lock-step fault-free cluster of real nodes.

use ringway::raft::sim::cluster::Cluster;
use ringway::raft::{
    ConfChange, ConfChangeError, ConfChangeKind, ConfState, Config, Entry, EntryPayload, HardState,
    Index, MemStorage, Message, MessageBody, Node, NodeId, PersistBatch, ProposeError, Role,
    Storage, Term, VoteKind, MAX_LEARNERS,
};

/// A node driven by hand, with its storage.
struct T {
    node: Node,
    storage: MemStorage,
}

fn cc(kind: ConfChangeKind, node: NodeId) -> ConfChange {
    ConfChange { kind, node }
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(vec![index as u8]),
    }
}

fn conf_entry(index: Index, term: Term, kind: ConfChangeKind, node: NodeId) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::ConfChange(cc(kind, node)),
    }
}

/// Node 4 of a group whose bootstrap configuration is `conf`, with one entry of term
/// 1 after the bootstrap snapshot (last index 2), at term 1.
fn member_4(conf: ConfState) -> T {
    let mut storage = MemStorage::new_with_conf(conf);
    let batch = PersistBatch {
        hard_state: Some(HardState {
            term: 1,
            commit: 1,
            ..HardState::default()
        }),
        entries: vec![entry(2, 1)],
        ..Default::default()
    };
    storage.persist(&batch).unwrap();
    T::open(storage)
}

fn learner_4() -> T {
    member_4(ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
    })
}

impl T {
    fn open(storage: MemStorage) -> T {
        let mut cfg = Config::try_new(4).unwrap();
        cfg.seed = 42;
        let node = Node::try_new(cfg, &storage).unwrap();
        T { node, storage }
    }

    /// The same node restarted from what its storage holds.
    fn restart(self) -> T {
        T::open(self.storage)
    }

    fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(mut rd) = self.node.ready() {
            out.extend(rd.take_early_messages());
            let mut done = rd.persist(&mut self.storage).unwrap();
            out.extend(done.take_messages());
            self.node.advance(done).unwrap();
        }
        out
    }

    fn step(&mut self, from: NodeId, term: Term, body: MessageBody) -> Vec<Message> {
        let to = self.node.id();
        self.node.step(Message {
            from,
            to,
            term,
            body,
        });
        self.drain()
    }

    /// Ticks through many election timeouts; returns every message sent.
    fn tick_a_long_time(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for _ in 0..500 {
            self.node.tick();
            out.extend(self.drain());
        }
        out
    }
}

fn vote_req(kind: VoteKind, last_index: Index, last_term: Term) -> MessageBody {
    MessageBody::Vote {
        kind,
        last_index,
        last_term,
        transfer: false,
        life: 0,
    }
}

fn granted(msgs: &[Message]) -> Option<bool> {
    msgs.iter().find_map(|m| match m.body {
        MessageBody::VoteResponse { granted, .. } => Some(granted),
        _ => None,
    })
}

fn assert_never_stood(t: &T, out: &[Message]) {
    let asked = out
        .iter()
        .any(|m| matches!(m.body, MessageBody::Vote { .. }));
    assert!(!asked, "a learner asked for votes: {out:?}");
    assert_eq!(t.node.role(), Role::Follower);
    assert_eq!(t.node.term(), 1, "a learner raised its term on its own");
    assert_eq!(t.node.status().vote, 0, "a learner voted for itself");
}

// ---- Campaigning ---------------------------------------------------------------------

#[test]
fn a_learner_never_campaigns() {
    let mut t = learner_4();
    let out = t.tick_a_long_time();
    assert_never_stood(&t, &out);
    // The same configuration with node 4 a voter campaigns within those ticks: the
    // silence above comes from the learner rule, not from too few ticks.
    let mut v = member_4(ConfState::with_voters(&[1, 2, 3, 4]));
    let out = v.tick_a_long_time();
    assert!(out
        .iter()
        .any(|m| matches!(m.body, MessageBody::Vote { .. })));
}

#[test]
fn a_learner_restarted_from_its_storage_never_campaigns() {
    let mut t = learner_4();
    // It learns entries from the leader, then restarts from what it wrote.
    t.step(1, 1, MessageBody::Heartbeat { commit: 2 });
    let out = t.step(
        1,
        1,
        MessageBody::Append {
            prev_index: 2,
            prev_term: 1,
            commit: 2,
            entries: vec![entry(3, 1)],
        },
    );
    assert!(!out.is_empty());
    let mut t = t.restart();
    assert!(t.node.conf().is_learner(4));
    let out = t.tick_a_long_time();
    assert_never_stood(&t, &out);
}

#[test]
fn a_demotion_counts_once_appended_not_yet_committed_and_across_a_restart() {
    let mut t = member_4(ConfState::with_voters(&[1, 2, 3, 4]));
    let demote = conf_entry(3, 1, ConfChangeKind::DemoteVoter, 4);
    let body = MessageBody::Append {
        prev_index: 2,
        prev_term: 1,
        commit: 1,
        entries: vec![demote],
    };
    t.step(1, 1, body);
    assert_eq!(t.node.commit_index(), 1, "the demotion is not committed");
    assert!(t.node.conf().is_learner(4));
    let mut t = t.restart();
    assert_eq!(t.node.commit_index(), 1);
    assert!(t.node.conf().is_learner(4));
    let out = t.tick_a_long_time();
    assert_never_stood(&t, &out);
}

#[test]
fn a_learner_ignores_timeout_now() {
    let mut t = learner_4();
    t.step(1, 1, MessageBody::Heartbeat { commit: 2 });
    let before = t.node.stats().dropped_wrong_role;
    let out = t.step(1, 1, MessageBody::TimeoutNow);
    assert_never_stood(&t, &out);
    assert_eq!(t.node.stats().dropped_wrong_role, before + 1);
}

// ---- Voting ----------------------------------------------------------------------------

#[test]
fn a_learner_refuses_a_candidate_whose_log_is_not_ahead_of_its_own() {
    for kind in [VoteKind::PreVote, VoteKind::Vote] {
        let mut t = learner_4();
        // Same last entry (2, term 1): that candidate holds the same configuration,
        // which makes node 4 a learner, so the request is stray.
        let out = t.step(2, 2, vote_req(kind, 2, 1));
        assert_eq!(granted(&out), Some(false), "{kind:?}");
        assert_eq!(t.node.stats().refused_votes_as_learner, 1);
        assert_eq!(t.node.stats().votes_granted, 0);
        assert_eq!(t.storage.hard_state().vote, 0, "no vote was written");
    }
    // A voter with the same log grants it: the refusal above is the learner rule.
    let mut v = member_4(ConfState::with_voters(&[1, 2, 3, 4]));
    let out = v.step(2, 2, vote_req(VoteKind::Vote, 2, 1));
    assert_eq!(granted(&out), Some(true));
}

#[test]
fn a_learner_votes_for_a_candidate_that_holds_its_promotion() {
    // Voters 1..3 commit node 4's promotion on {1, 2, 3} before node 4 receives it;
    // 1 fails. Voters 2 and 3 need node 4's vote (3 of 4) to elect anyone, and node
    // 4 cannot learn its promotion without a leader: it must answer.
    let mut t = learner_4();
    let out = t.step(2, 2, vote_req(VoteKind::Vote, 3, 1));
    assert_eq!(granted(&out), Some(true));
    assert_eq!(t.storage.hard_state().vote, 2);
    // It still never stands itself.
    assert!(t.node.conf().is_learner(4));
}

#[test]
fn a_candidate_never_counts_a_learners_grant() {
    let mut c = Cluster::new(3, |cfg| cfg.pre_vote_check_quorum = false);
    c.elect(1);
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, 4))
        .unwrap();
    c.settle();
    // Node 2 stands alone; a grant from learner 4 is not counted.
    c.isolated.extend([1, 3]);
    for _ in 0..100 {
        c.node(2).tick();
        if c.node(2).role() == Role::Candidate {
            break;
        }
    }
    assert_eq!(c.node(2).role(), Role::Candidate);
    let term = c.node(2).term();
    let before = c.node(2).stats().dropped_unknown_peer;
    c.node(2).step(Message {
        from: 4,
        to: 2,
        term,
        body: MessageBody::VoteResponse {
            kind: VoteKind::Vote,
            granted: true,
            life: 0,
        },
    });
    assert_eq!(c.node(2).role(), Role::Candidate);
    assert_eq!(c.node(2).stats().dropped_unknown_peer, before + 1);
}

// ---- Demotion and the bound ----------------------------------------------------------

/// Three voters led by 1, with node 4 added as a learner (a real node).
fn cluster_with_learner_4() -> Cluster {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
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
    c
}

#[test]
fn a_learner_is_promoted_and_demoted_back() {
    let mut c = cluster_with_learner_4();
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::PromoteLearner, 4))
        .unwrap();
    c.settle();
    assert_eq!(c.node(4).conf().voters, vec![1, 2, 3, 4]);
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 4))
        .unwrap();
    c.settle();
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    for id in 1..=4 {
        let conf = c.node(id).conf().clone();
        assert_eq!(conf.voters, vec![1, 2, 3], "node {id}");
        assert_eq!(conf.learners, vec![4], "node {id}");
    }
    assert_eq!(c.node(4).commit_index(), c.node(1).commit_index());
    // Demoted, it keeps receiving the log.
    c.node(1).propose(b"after".to_vec()).unwrap();
    c.settle();
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    assert_eq!(c.node(4).commit_index(), c.node(1).commit_index());
    let last = c.applied[&4].last().map(|e| e.payload.clone());
    assert_eq!(last, Some(EntryPayload::Normal(b"after".to_vec())));
}

#[test]
fn a_leader_that_demotes_itself_hands_over_and_never_stands_again() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 1))
        .unwrap();
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader);
    let l = c.leader().expect("a successor was elected via TimeoutNow");
    assert_ne!(l, 1);
    assert_eq!(c.node(l).conf().learners, vec![1]);
    // The new leader stops; node 1 (a learner now) never stands, the other voter does.
    c.isolated.insert(l);
    for _ in 0..300 {
        c.tick_all();
        c.settle();
        assert_ne!(c.node(1).role(), Role::Candidate);
        assert_ne!(c.node(1).role(), Role::PreCandidate);
        assert_ne!(c.node(1).role(), Role::Leader);
    }
    assert!(c.node(1).conf().is_learner(1));
}

#[test]
fn a_voter_that_lacks_its_committed_demotion_cannot_win() {
    // Voters 1..4; 4 is cut off while 1 demotes it (committed by 1, 2, 3: the new
    // configuration's voters). Then 1 fails and 4 is back, still a voter in its own
    // eyes. It may stand, but 2 and 3 hold the demotion and a longer log, and it
    // cannot win without one of them; one of them wins and 4 learns its demotion.
    let mut c = Cluster::new(4, |_| {});
    c.elect(1);
    c.isolated.insert(4);
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 4))
        .unwrap();
    c.settle();
    c.node(1).tick();
    c.node(1).tick();
    c.settle();
    let demoted_at = c.node(1).last_index();
    assert!(c.node(2).commit_index() >= demoted_at);
    assert!(
        c.node(4).conf().is_voter(4),
        "4 has not received its demotion"
    );
    c.isolated.clear();
    c.isolated.insert(1);
    let new_leader = |c: &mut Cluster| (2..=4).find(|&i| c.node(i).role() == Role::Leader);
    for _ in 0..400 {
        c.tick_all();
        c.settle();
        assert_ne!(c.node(4).role(), Role::Leader, "the demoted voter won");
        if c.node(4).conf().is_learner(4) && new_leader(&mut c).is_some() {
            break;
        }
    }
    let l = new_leader(&mut c).expect("2 or 3 leads");
    assert!(l == 2 || l == 3, "leader {l}");
    assert!(c.node(4).conf().is_learner(4));
}

#[test]
fn demotion_needs_a_voter_and_keeps_one() {
    let mut c = cluster_with_learner_4();
    let r = c
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 4));
    assert_eq!(
        r,
        Err(ProposeError::InvalidConfChange(ConfChangeError::NotAVoter))
    );
    let mut solo = Cluster::new(1, |_| {});
    solo.elect(1);
    let r = solo
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 1));
    assert_eq!(
        r,
        Err(ProposeError::InvalidConfChange(ConfChangeError::LastVoter))
    );
}

#[test]
fn the_leader_feeds_at_most_max_learners() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let first = 100;
    for n in 0..MAX_LEARNERS as NodeId {
        c.node(1)
            .propose_conf_change(cc(ConfChangeKind::AddLearner, first + n))
            .unwrap();
        c.settle();
    }
    assert_eq!(c.node(1).conf().learners.len(), MAX_LEARNERS);
    let over = first + MAX_LEARNERS as NodeId;
    let r = c
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, over));
    assert_eq!(r, Err(ProposeError::TooManyLearners { max: MAX_LEARNERS }));
    let r = c
        .node(1)
        .propose_conf_change(cc(ConfChangeKind::DemoteVoter, 3));
    assert_eq!(r, Err(ProposeError::TooManyLearners { max: MAX_LEARNERS }));
    // Below the bound again, the same change goes through; removing a learner is
    // always allowed.
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::RemoveNode, first))
        .unwrap();
    c.settle();
    c.node(1)
        .propose_conf_change(cc(ConfChangeKind::AddLearner, over))
        .unwrap();
}
