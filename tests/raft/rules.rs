//! One claim per test: the rules of the Raft paper's Figure 2 and ringway's additions
//! (PreVote, CheckQuorum, batching, pipelining, membership, transfer), checked on real
//! nodes fed crafted messages.

use ringway::raft::{
    ConfChange, ConfChangeKind, ConfState, Config, Entry, EntryPayload, FounderVote, HardState,
    Index, MemStorage, Message, MessageBody, Node, NodeId, PersistBatch, ProposeError, Role,
    Snapshot, SnapshotMeta, Storage, Term, VoteKind, BOOTSTRAP_INDEX,
};

/// A node with its storage, driven by hand.
struct T {
    node: Node,
    storage: MemStorage,
}

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(vec![index as u8, term as u8]),
    }
}

/// Node `id` of voters 1..=3 whose log after the bootstrap snapshot has `terms`, at `term`.
fn node_with_log(id: NodeId, terms: &[Term], term: Term, tweak: impl Fn(&mut Config)) -> T {
    let mut storage = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(BOOTSTRAP_INDEX + 1 + i as Index, t))
        .collect();
    let hs = HardState {
        term,
        vote: 0,
        commit: BOOTSTRAP_INDEX,
        ..HardState::default()
    };
    let batch = PersistBatch {
        hard_state: Some(hs),
        entries,
        ..Default::default()
    };
    storage.persist(&batch).unwrap();
    let mut cfg = Config::try_new(id).unwrap();
    cfg.seed = 42;
    tweak(&mut cfg);
    let node = Node::try_new(cfg, &storage).unwrap();
    T { node, storage }
}

fn plain(id: NodeId, terms: &[Term], term: Term) -> T {
    node_with_log(id, terms, term, |_| {})
}

impl T {
    /// Runs the driver cycle once; returns the messages that went out.
    fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(rd) = self.node.ready() {
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

    fn tick_until_campaign(&mut self) -> Vec<Message> {
        for _ in 0..100 {
            self.node.tick();
            let out = self.drain();
            if !out.is_empty() {
                return out;
            }
        }
        panic!("node never campaigned");
    }

    /// A pre-candidate gets the pre-votes of nodes 2 and 3 (as many as it needs).
    fn win_pre_vote(&mut self) {
        let pre = MessageBody::VoteResponse {
            kind: VoteKind::PreVote,
            granted: true,
            life: 0,
        };
        for from in [2, 3] {
            if self.node.role() == Role::PreCandidate {
                self.step(from, self.node.term() + 1, pre.clone());
            }
        }
    }

    /// Wins PreVote and Vote with the help of node 2 (and node 3 when the election is
    /// the group's first, which is unanimous); returns the leader's first messages.
    fn become_leader(&mut self) -> Vec<Message> {
        self.tick_until_campaign();
        self.win_pre_vote();
        let vote = MessageBody::VoteResponse {
            kind: VoteKind::Vote,
            granted: true,
            life: 0,
        };
        let mut out = Vec::new();
        for from in [2, 3] {
            if self.node.role() == Role::Candidate {
                out = self.step(from, self.node.term(), vote.clone());
            }
        }
        assert_eq!(self.node.role(), Role::Leader);
        out
    }
}

fn vote_req(last_index: Index, last_term: Term) -> MessageBody {
    MessageBody::Vote {
        kind: VoteKind::Vote,
        last_index,
        last_term,
        transfer: false,
        life: 0,
    }
}

fn granted(msgs: &[Message], to: NodeId) -> Option<bool> {
    msgs.iter().find_map(|m| match m.body {
        MessageBody::VoteResponse { granted, .. } if m.to == to => Some(granted),
        _ => None,
    })
}

fn append(prev_index: Index, prev_term: Term, commit: Index, entries: Vec<Entry>) -> MessageBody {
    MessageBody::Append {
        prev_index,
        prev_term,
        commit,
        entries,
    }
}

fn append_response(msgs: &[Message]) -> (bool, Index, Index, Term) {
    msgs.iter()
        .find_map(|m| match m.body {
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => Some((success, index, hint_index, hint_term)),
            _ => None,
        })
        .expect("an AppendResponse")
}

fn appends_to(msgs: &[Message], to: NodeId) -> Vec<Vec<Entry>> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.clone()),
            _ => None,
        })
        .collect()
}

// ---- RequestVote rules -------------------------------------------------------------

#[test]
fn vote_granted_to_candidate_with_up_to_date_log() {
    let mut f = plain(1, &[1, 2], 2);
    let out = f.step(2, 3, vote_req(3, 2));
    assert_eq!(granted(&out, 2), Some(true));
}

#[test]
fn vote_granted_at_most_once_per_term() {
    let mut f = plain(1, &[1, 2], 2);
    f.step(2, 3, vote_req(3, 2));
    let out = f.step(3, 3, vote_req(3, 2));
    assert_eq!(granted(&out, 3), Some(false));
}

#[test]
fn vote_refused_to_shorter_log_with_same_last_term() {
    let mut f = plain(1, &[1, 2, 2], 2);
    let out = f.step(2, 3, vote_req(3, 2));
    assert_eq!(granted(&out, 2), Some(false));
}

#[test]
fn vote_refused_to_longer_log_with_older_last_term() {
    let mut f = plain(1, &[1, 2], 2);
    let out = f.step(2, 3, vote_req(10, 1));
    assert_eq!(granted(&out, 2), Some(false));
}

#[test]
fn vote_granted_to_shorter_log_with_newer_last_term() {
    let mut f = plain(1, &[1, 1, 1], 3);
    let out = f.step(2, 4, vote_req(2, 2));
    assert_eq!(granted(&out, 2), Some(true));
}

#[test]
fn vote_is_in_the_same_persist_batch_as_the_grant() {
    let mut f = plain(1, &[1], 1);
    f.node.step(Message {
        from: 2,
        to: 1,
        term: 2,
        body: vote_req(2, 1),
    });
    let rd = f.node.ready().unwrap();
    assert_eq!(
        rd.batch().hard_state.map(|h| (h.term, h.vote)),
        Some((2, 2))
    );
    let mut done = rd.persist(&mut f.storage).unwrap();
    assert_eq!(granted(&done.take_messages(), 2), Some(true));
    assert_eq!(f.storage.hard_state().vote, 2);
    f.node.advance(done).unwrap();
}

#[test]
fn vote_survives_restart() {
    let mut f = plain(1, &[1], 1);
    f.step(2, 2, vote_req(2, 1));
    let cfg = Config::try_new(1).unwrap();
    let mut restarted = T {
        node: Node::try_new(cfg, &f.storage).unwrap(),
        storage: f.storage.clone(),
    };
    let out = restarted.step(3, 2, vote_req(2, 1));
    assert_eq!(granted(&out, 3), Some(false));
}

// ---- Terms ---------------------------------------------------------------------------

#[test]
fn leader_seeing_higher_term_steps_down() {
    let mut l = plain(1, &[], 1);
    l.become_leader();
    let t = l.node.term();
    l.step(3, t + 5, MessageBody::HeartbeatResponse);
    assert_eq!(l.node.role(), Role::Follower);
    assert_eq!(l.node.term(), t + 5);
}

#[test]
fn stale_term_message_is_dropped_counted_and_answered_with_our_term() {
    let mut f = plain(1, &[1], 5);
    let out = f.step(2, 3, append(2, 1, 2, vec![entry(3, 3)]));
    assert_eq!(f.node.stats().dropped_stale_term, 1);
    assert_eq!(f.node.status().last_index, 2);
    assert!(out.iter().all(|m| m.term == 5));
}

// ---- AppendEntries: log matching ----------------------------------------------------

#[test]
fn append_rejected_when_prev_index_is_missing_with_length_hint() {
    let mut f = plain(1, &[1], 1);
    let out = f.step(2, 1, append(5, 1, 1, vec![entry(6, 1)]));
    assert_eq!(append_response(&out), (false, 5, 3, 0));
}

#[test]
fn append_rejected_on_prev_term_mismatch_with_conflict_term_hint() {
    let mut f = plain(1, &[1, 2, 2, 2], 3);
    let out = f.step(2, 3, append(5, 3, 1, vec![]));
    // Our term at 5 is 2, and term 2 starts at index 3.
    assert_eq!(append_response(&out), (false, 5, 3, 2));
}

#[test]
fn append_truncates_conflicting_suffix_and_appends_new_entries() {
    let mut f = plain(1, &[1, 2, 2], 3);
    let out = f.step(2, 3, append(2, 1, 1, vec![entry(3, 3)]));
    assert!(append_response(&out).0);
    assert_eq!(f.node.status().last_index, 3);
    assert_eq!(f.node.term_at(3), Some(3));
    assert_eq!(f.storage.last_index(), 3);
}

#[test]
fn stale_shorter_append_does_not_truncate_matching_entries() {
    let mut f = plain(1, &[1, 1, 1], 1);
    let out = f.step(2, 1, append(2, 1, 1, vec![entry(3, 1)]));
    assert_eq!(append_response(&out), (true, 3, 0, 0));
    assert_eq!(f.node.status().last_index, 4);
}

#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut f = plain(1, &[1, 1, 1], 1);
    f.step(2, 1, append(2, 1, 100, vec![entry(3, 1)]));
    assert_eq!(f.node.commit_index(), 3);
}

#[test]
fn leader_ignores_append_of_its_own_term_and_keeps_its_log() {
    let mut l = plain(1, &[1], 1);
    l.become_leader();
    let (t, last) = (l.node.term(), l.node.status().last_index);
    let before: Vec<_> = (2..=last).map(|i| l.node.term_at(i)).collect();
    l.step(2, t, append(1, 1, 1, vec![entry(2, t)]));
    let after: Vec<_> = (2..=last).map(|i| l.node.term_at(i)).collect();
    assert_eq!(before, after);
    assert_eq!(l.node.stats().dropped_wrong_role, 1);
}

// ---- Leader rules ---------------------------------------------------------------------

#[test]
fn new_leader_appends_an_entry_of_its_term_at_once() {
    let mut l = plain(1, &[1, 1], 1);
    l.become_leader();
    let st = l.node.status();
    assert_eq!(st.last_term, st.term);
    assert_eq!(
        l.node.entry(st.last_index).map(|e| e.payload.clone()),
        Some(EntryPayload::Empty)
    );
}

#[test]
fn old_term_entry_is_not_committed_by_counting_replicas() {
    let mut l = plain(1, &[1, 2], 2);
    l.become_leader(); // term 3, empty entry at index 4
    let t = l.node.term();
    let ack = |index| MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
    };
    l.step(2, t, ack(3));
    assert_eq!(
        l.node.commit_index(),
        BOOTSTRAP_INDEX,
        "index 3 (term 2) is on a majority but not committed"
    );
    l.step(2, t, ack(4));
    assert_eq!(
        l.node.commit_index(),
        4,
        "committing the term-3 entry commits index 3 with it"
    );
}

#[test]
fn follower_refuses_proposal_naming_the_leader() {
    let mut f = plain(1, &[1], 1);
    f.step(2, 1, MessageBody::Heartbeat { commit: 1 });
    assert_eq!(
        f.node.propose(b"x".to_vec()),
        Err(ProposeError::NotLeader { leader: Some(2) })
    );
}

#[test]
fn append_batches_are_bounded_by_max_entries() {
    let mut l = node_with_log(1, &[], 1, |c| c.max_entries_per_msg = 3);
    l.become_leader();
    let t = l.node.term();
    let ack = MessageBody::AppendResponse {
        success: true,
        index: 2,
        hint_index: 0,
        hint_term: 0,
    };
    l.step(2, t, ack);
    for i in 0..10u8 {
        l.node.propose(vec![i]).unwrap();
    }
    let out = l.drain();
    let batches = appends_to(&out, 2);
    assert!(batches.iter().all(|b| b.len() <= 3) && batches.iter().any(|b| b.len() == 3));
}

#[test]
fn in_flight_appends_are_bounded_by_the_window() {
    let mut l = node_with_log(1, &[], 1, |c| {
        c.max_entries_per_msg = 1;
        c.max_inflight_msgs = 2;
    });
    l.become_leader();
    let t = l.node.term();
    let ack = MessageBody::AppendResponse {
        success: true,
        index: 2,
        hint_index: 0,
        hint_term: 0,
    };
    l.step(2, t, ack);
    for i in 0..10u8 {
        l.node.propose(vec![i]).unwrap();
    }
    let out = l.drain();
    assert_eq!(
        appends_to(&out, 2).iter().filter(|b| !b.is_empty()).count(),
        2
    );
}

#[test]
fn fast_backtracking_skips_a_whole_conflicting_term() {
    // Leader of term 4: entries 2..=5 of term 1, then its own entry at 6.
    let mut l = plain(1, &[1, 1, 1, 1], 3);
    l.become_leader();
    let t = l.node.term();
    // The follower holds a run of term 3 (a term the leader never saw) at 3..=5 and
    // rejects the probe at 5, naming that term and where its run starts.
    let reject = MessageBody::AppendResponse {
        success: false,
        index: 5,
        hint_index: 3,
        hint_term: 3,
    };
    let out = l.step(2, t, reject);
    let next_prev = out.iter().find_map(|m| match m.body {
        MessageBody::Append { prev_index, .. } if m.to == 2 => Some(prev_index),
        _ => None,
    });
    assert_eq!(next_prev, Some(2), "one round trip skips indexes 3..=5");
}

// ---- PreVote and CheckQuorum ---------------------------------------------------------

#[test]
fn prevote_round_does_not_raise_the_term() {
    let mut f = plain(1, &[1], 4);
    let out = f.tick_until_campaign();
    assert!(out.iter().all(|m| matches!(
        m.body,
        MessageBody::Vote {
            kind: VoteKind::PreVote,
            ..
        }
    )));
    assert!(out.iter().all(|m| m.term == 5));
    assert_eq!(f.node.term(), 4);
    assert_eq!(f.node.role(), Role::PreCandidate);
}

#[test]
fn vote_request_ignored_while_leader_is_heard() {
    let mut f = plain(1, &[1], 1);
    f.step(2, 1, MessageBody::Heartbeat { commit: 1 });
    let out = f.step(3, 2, vote_req(10, 1));
    assert!(out.is_empty());
    assert_eq!(f.node.term(), 1);
    assert_eq!(f.node.stats().dropped_in_lease, 1);
}

#[test]
fn leader_without_quorum_contact_steps_down() {
    let mut l = plain(1, &[], 1);
    l.become_leader();
    for _ in 0..ringway::raft::DEFAULT_ELECTION_TICK {
        l.node.tick();
    }
    assert_eq!(l.node.role(), Role::Follower);
}

#[test]
fn election_timeouts_are_randomized_per_node() {
    let ticks_until_campaign = |seed: u64| {
        let mut t = node_with_log(1, &[], 1, |c| c.seed = seed);
        let mut n = 0;
        while t.node.role() == Role::Follower {
            t.node.tick();
            n += 1;
        }
        n
    };
    let seen: std::collections::BTreeSet<u32> = (0..20).map(ticks_until_campaign).collect();
    assert!(seen.len() > 3, "timeouts vary: {seen:?}");
    assert!(seen.iter().all(|&t| (10..20).contains(&t)));
}

// ---- Robustness ------------------------------------------------------------------------

#[test]
fn malformed_append_is_dropped_and_counted() {
    let mut f = plain(1, &[1], 1);
    let out = f.step(2, 1, append(2, 1, 1, vec![entry(3, 1), entry(5, 1)]));
    assert!(out.is_empty());
    assert_eq!(f.node.stats().dropped_malformed, 1);
    assert_eq!(f.node.status().last_index, 2);
}

#[test]
fn misrouted_message_is_dropped_and_counted() {
    let mut f = plain(1, &[1], 1);
    f.node.step(Message {
        from: 2,
        to: 9,
        term: 1,
        body: MessageBody::TimeoutNow,
    });
    assert_eq!(f.node.stats().dropped_misrouted, 1);
}

// ---- Membership guard --------------------------------------------------------------

#[test]
fn conf_change_refused_before_leader_commits_its_own_term() {
    let mut l = plain(1, &[], 1);
    l.become_leader();
    let r = l.node.propose_conf_change(ConfChange {
        kind: ConfChangeKind::AddLearner,
        node: 4,
    });
    assert_eq!(r, Err(ProposeError::OwnTermNotCommitted));
}

fn conf_entry(index: Index, term: Term, kind: ConfChangeKind, node: NodeId) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::ConfChange(ConfChange { kind, node }),
    }
}

#[test]
fn configuration_takes_effect_when_appended_not_when_committed() {
    let mut f = plain(1, &[1], 1);
    let removal = conf_entry(3, 1, ConfChangeKind::RemoveNode, 3);
    f.step(2, 1, append(2, 1, 1, vec![removal]));
    assert_eq!(f.node.commit_index(), 1);
    assert_eq!(f.node.conf().voters, vec![1, 2]);
}

#[test]
fn truncated_configuration_entry_is_rolled_back() {
    let mut f = plain(1, &[1], 1);
    let removal = conf_entry(3, 1, ConfChangeKind::RemoveNode, 3);
    f.step(2, 1, append(2, 1, 1, vec![removal]));
    f.step(3, 2, append(2, 1, 1, vec![entry(3, 2)]));
    assert_eq!(f.node.conf().voters, vec![1, 2, 3]);
}

#[test]
fn restart_restores_the_newest_configuration_in_the_log() {
    let mut f = plain(1, &[1], 1);
    let removal = conf_entry(3, 1, ConfChangeKind::RemoveNode, 3);
    f.step(2, 1, append(2, 1, 1, vec![removal]));
    let restarted = Node::try_new(Config::try_new(1).unwrap(), &f.storage).unwrap();
    assert_eq!(restarted.conf().voters, vec![1, 2]);
}

fn ack(index: Index) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
    }
}

/// A leader with a new entry of its term at index 3 whose `Ready` (entry, AppendEntries)
/// is taken but not yet written; returns the `Ready` and the early messages.
fn leader_with_unwritten_entry(
    tweak: impl Fn(&mut Config),
) -> (T, ringway::raft::Ready, Vec<Message>) {
    let mut l = node_with_log(1, &[], 1, tweak);
    l.become_leader(); // empty entry at index 2
    let t = l.node.term();
    l.step(2, t, ack(2));
    assert_eq!(l.node.commit_index(), 2);
    let p = l.node.propose(b"x".to_vec()).unwrap();
    assert_eq!(p.index, 3);
    let mut rd = l.node.ready().unwrap();
    assert_eq!(rd.batch().entries.last().map(|e| e.index), Some(3));
    let early = rd.take_early_messages();
    (l, rd, early)
}

#[test]
fn leader_sends_appends_before_its_write_but_counts_itself_only_once_written() {
    let (mut l, rd, early) = leader_with_unwritten_entry(|_| {});
    let t = l.node.term();
    assert!(
        appends_to(&early, 2)
            .iter()
            .any(|b| b.iter().any(|e| e.index == 3)),
        "the entry goes to followers before the leader's write: {early:?}"
    );
    // A follower's ack arrives while the leader's own write is under way: one durable
    // copy of three is not a majority.
    l.node.step(Message {
        from: 2,
        to: 1,
        term: t,
        body: ack(3),
    });
    assert_eq!(l.node.progress(1).map(|p| p.matched), Some(2));
    assert_eq!(
        l.node.commit_index(),
        2,
        "committed before the leader wrote it"
    );
    let mut done = rd.persist(&mut l.storage).unwrap();
    let _ = done.take_messages();
    l.node.advance(done).unwrap();
    assert_eq!(l.node.progress(1).map(|p| p.matched), Some(3));
    assert_eq!(l.node.commit_index(), 3, "written on the leader and node 2");
}

#[test]
fn counting_own_entries_before_the_write_is_the_bug_the_rule_prevents() {
    let (mut l, _rd, _) = leader_with_unwritten_entry(|c| {
        c.bugs.count_own_entries_before_durable = true;
    });
    let t = l.node.term();
    l.node.step(Message {
        from: 2,
        to: 1,
        term: t,
        body: ack(3),
    });
    assert_eq!(l.node.commit_index(), 3);
}

#[test]
fn leader_alone_commits_its_entry_only_after_writing_it() {
    let mut storage = MemStorage::new_with_conf(ConfState::with_voters(&[1]));
    storage
        .persist(&PersistBatch {
            hard_state: Some(HardState {
                term: 1,
                commit: BOOTSTRAP_INDEX,
                ..HardState::default()
            }),
            ..Default::default()
        })
        .unwrap();
    let mut l = T {
        node: Node::try_new(Config::try_new(1).unwrap(), &storage).unwrap(),
        storage,
    };
    for _ in 0..100 {
        if l.node.role() == Role::Leader {
            break;
        }
        l.node.tick();
        l.drain();
    }
    assert_eq!(l.node.role(), Role::Leader);
    let p = l.node.propose(b"x".to_vec()).unwrap();
    let rd = l.node.ready().unwrap();
    assert!(rd.committed_entries().iter().all(|e| e.index < p.index));
    assert!(l.node.commit_index() < p.index);
    let done = rd.persist(&mut l.storage).unwrap();
    l.node.advance(done).unwrap();
    assert_eq!(l.node.commit_index(), p.index);
}

#[test]
fn follower_ack_and_vote_are_released_only_by_the_write() {
    let mut f = plain(2, &[1], 1);
    f.node.step(Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::Append {
            prev_index: 2,
            prev_term: 1,
            commit: 1,
            entries: vec![entry(3, 2)],
        },
    });
    let mut rd = f.node.ready().unwrap();
    assert!(rd.take_early_messages().is_empty());
    let mut done = rd.persist(&mut f.storage).unwrap();
    assert_eq!(append_response(&done.take_messages()), (true, 3, 0, 0));
    f.node.advance(done).unwrap();

    let mut v = plain(2, &[1], 1);
    v.node.step(Message {
        from: 3,
        to: 2,
        term: 2,
        body: vote_req(2, 1),
    });
    let mut rd = v.node.ready().unwrap();
    assert!(rd.take_early_messages().is_empty());
    assert_eq!(rd.batch().hard_state.map(|h| h.vote), Some(3));
    let mut done = rd.persist(&mut v.storage).unwrap();
    assert_eq!(granted(&done.take_messages(), 3), Some(true));
}

#[test]
fn a_leader_elected_in_the_same_batch_sends_nothing_before_its_term_is_written() {
    let conf = ConfState {
        voters: vec![1],
        learners: vec![2],
    };
    let storage = MemStorage::new_with_conf(conf);
    let mut node = Node::try_new(Config::try_new(1).unwrap(), &storage).unwrap();
    let mut storage = storage;
    let mut rd = loop {
        node.tick();
        if let Some(rd) = node.ready() {
            break rd;
        }
    };
    assert_eq!(node.role(), Role::Leader, "a group of one wins at once");
    assert!(rd.batch().hard_state.is_some_and(|h| h.vote == 1));
    assert!(rd.take_early_messages().is_empty());
    let mut done = rd.persist(&mut storage).unwrap();
    assert!(!appends_to(&done.take_messages(), 2).is_empty());
}

// ---- Bookkeeping: votes, acknowledgements, snapshots, follower commit ---------------
//
// Each rule is checked on the correct core and, through its `BugInjection` switch, shown
// to fail when the rule is broken (so the test can fail).

fn vote(granted: bool) -> MessageBody {
    MessageBody::VoteResponse {
        kind: VoteKind::Vote,
        granted,
        life: 0,
    }
}

/// Node 1 of voters 1..=3 (not the group's first election), campaigning in classic mode.
fn candidate(tweak: impl Fn(&mut Config)) -> T {
    let mut c = node_with_log(1, &[1], 1, |c| {
        c.pre_vote_check_quorum = false;
        tweak(c);
    });
    c.tick_until_campaign();
    assert_eq!(c.node.role(), Role::Candidate);
    c
}

/// A denial from node 2, then a grant from node 3: the candidate's role after each.
fn denial_then_grant(tweak: impl Fn(&mut Config)) -> (Role, Role) {
    let mut c = candidate(tweak);
    let t = c.node.term();
    c.step(2, t, vote(false));
    let after_denial = c.node.role();
    c.step(3, t, vote(true));
    (after_denial, c.node.role())
}

#[test]
fn a_denied_vote_is_never_counted_as_a_vote() {
    assert_eq!(
        denial_then_grant(|_| {}),
        (Role::Candidate, Role::Leader),
        "own vote + one denial is no majority; own vote + node 3's grant is"
    );
    let (buggy, _) = denial_then_grant(|c| c.bugs.count_denied_vote = true);
    assert_eq!(buggy, Role::Leader, "the switch breaks exactly this rule");
}

/// A grant node 2 sent in the candidate's previous term, delivered once the candidate
/// campaigns again: its role after that grant.
fn stale_grant(tweak: impl Fn(&mut Config)) -> Role {
    let mut c = candidate(tweak);
    let old = c.node.term();
    for _ in 0..100 {
        c.node.tick();
        c.drain();
        if c.node.term() > old {
            break;
        }
    }
    assert_eq!(c.node.term(), old + 1, "a second election");
    c.step(2, old, vote(true));
    c.node.role()
}

#[test]
fn a_grant_from_an_older_term_is_never_counted_as_a_vote() {
    assert_eq!(stale_grant(|_| {}), Role::Candidate);
    assert_eq!(
        stale_grant(|c| c.bugs.count_stale_vote_grant = true),
        Role::Leader,
        "the switch breaks exactly this rule"
    );
}

/// A leader of term 3 whose log (index 3, term 2) is at index 4; node 2 answers
/// "success through 4" with the term-2 label of the previous leader's log. Returns node
/// 2's match index and the commit index afterwards.
fn stale_term_ack(tweak: impl Fn(&mut Config)) -> (Index, Index) {
    let mut l = node_with_log(1, &[1, 2], 2, tweak);
    l.become_leader();
    let t = l.node.term();
    assert_eq!((t, l.node.last_index()), (3, 4));
    l.step(2, t - 1, ack(4));
    let matched = l.node.progress(2).map_or(0, |p| p.matched);
    (matched, l.node.commit_index())
}

#[test]
fn a_stale_term_acknowledgement_never_moves_a_match_index() {
    assert_eq!(stale_term_ack(|_| {}), (0, BOOTSTRAP_INDEX));
    assert_eq!(
        stale_term_ack(|c| c.bugs.accept_stale_term_ack = true),
        (4, 4),
        "the switch breaks exactly this rule (and commits on it)"
    );
}

#[test]
fn an_acknowledgement_of_the_current_term_moves_the_match_index() {
    let mut l = plain(1, &[1, 2], 2);
    l.become_leader();
    let t = l.node.term();
    l.step(2, t, ack(4));
    assert_eq!(l.node.progress(2).map(|p| p.matched), Some(4));
    assert_eq!(l.node.commit_index(), 4);
}

/// A follower holding indices 2..=5 of term 1 (commit 1) receives a snapshot at index
/// 3, term 1: returns its last index, commit index and the index it acknowledged.
fn snapshot_over_matching_log(tweak: impl Fn(&mut Config)) -> (Index, Index, Index) {
    let mut f = node_with_log(1, &[1, 1, 1, 1], 1, tweak);
    let snapshot = ringway::raft::Snapshot {
        meta: ringway::raft::SnapshotMeta {
            index: 3,
            term: 1,
            conf: ConfState::with_voters(&[1, 2, 3]),
        },
        data: b"image".to_vec(),
    };
    let out = f.step(2, 1, MessageBody::Snapshot { snapshot });
    let (ok, acked, _, _) = append_response(&out);
    assert!(ok);
    (f.node.last_index(), f.node.commit_index(), acked)
}

#[test]
fn a_snapshot_keeps_the_entries_after_it_when_the_log_matches() {
    assert_eq!(snapshot_over_matching_log(|_| {}), (5, 3, 3));
    let (last, _, _) =
        snapshot_over_matching_log(|c| c.bugs.discard_log_on_matching_snapshot = true);
    assert_eq!(last, 3, "the switch breaks exactly this rule");
}

/// A follower at term 3 holding index 3 (term 1) and a stale suffix 4..=5 of term 2
/// receives, from the leader of term 3, an AppendEntries verifying only index 3 while
/// the leader's commit index is 4 (its own term-3 entry there): returns the commit index.
fn commit_with_stale_suffix(tweak: impl Fn(&mut Config)) -> Index {
    let mut f = node_with_log(1, &[1, 1, 2, 2], 3, tweak);
    let out = f.step(2, 3, append(2, 1, 4, vec![entry(3, 1)]));
    assert_eq!(append_response(&out), (true, 3, 0, 0));
    assert_eq!(
        f.node.term_at(4),
        Some(2),
        "the stale suffix is still there"
    );
    f.node.commit_index()
}

#[test]
fn follower_commit_is_bounded_by_the_last_verified_entry_not_its_stale_suffix() {
    assert_eq!(commit_with_stale_suffix(|_| {}), 3);
    assert_eq!(
        commit_with_stale_suffix(|c| c.bugs.commit_past_verified = true),
        4,
        "the switch commits the stale (index 4, term 2)"
    );
}

// ---- Lost state: a founder back from an empty data dir -------------------------------

/// Founder `id` of voters 1..=3 as bootstrapping leaves it: log at the bootstrap
/// snapshot, `fresh_founder` set.
fn fresh_founder(id: NodeId) -> T {
    let storage = MemStorage::new_with_conf(ConfState::with_voters(&[1, 2, 3]));
    let mut cfg = Config::try_new(id).unwrap();
    cfg.seed = 42;
    let node = Node::try_new(cfg, &storage).unwrap();
    assert!(node.fresh_founder());
    T { node, storage }
}

/// Founder 1 back from an empty data dir, campaigning into the first leader's term (a
/// candidate that voted for itself there).
fn wiped_founder_campaigning() -> T {
    let mut n = fresh_founder(1);
    n.tick_until_campaign();
    n.win_pre_vote();
    n
}

/// A wiped founder that campaigns into the first leader's term votes for itself there.
/// That vote is no proof it took part: the first election needed its vote, so the first
/// leader was a life of its own it forgot, or got a vote it no longer remembers. It must
/// mark itself lost and refuse the vote, not grant it to a candidate that may lack
/// entries it acknowledged before the wipe.
#[test]
fn founder_that_voted_for_itself_in_the_first_leaders_term_has_lost_state() {
    let mut n = wiped_founder_campaigning();
    assert_eq!(n.node.role(), Role::Candidate);
    let t = n.node.term();
    assert_eq!(n.storage.hard_state().vote, 1);
    // Node 3 campaigns later holding the first leader's entry 2, written in term `t`.
    let out = n.step(3, t + 1, vote_req(BOOTSTRAP_INDEX + 1, t));
    assert!(n.node.lost_data(), "a self-vote was taken as proof");
    assert_eq!(granted(&out, 3), Some(false));
    assert!(n.storage.hard_state().lost_data, "lost state is persisted");
}

/// What founder 1 granted node `to`: the life its response names.
fn granted_life(msgs: &[Message], to: NodeId) -> u64 {
    msgs.iter()
        .find_map(|m| match m.body {
            MessageBody::VoteResponse {
                granted: true,
                life,
                ..
            } if m.to == to => Some(life),
            _ => None,
        })
        .expect("a granted vote")
}

/// Fresh founder 1 after granting node 2 its vote in the group's first election (term
/// `t`), with the life it named.
fn founder_that_voted_for_2() -> (T, Term, u64) {
    let mut n = fresh_founder(1);
    let t = n.node.term() + 1;
    let out = n.step(2, t, vote_req(BOOTSTRAP_INDEX, n.node.term()));
    let life = granted_life(&out, 2);
    assert_ne!(
        life, 0,
        "a fresh founder's first-election grant names its life"
    );
    assert_eq!(n.storage.hard_state().life, life, "the life is durable");
    (n, t, life)
}

fn formed(lives: &[(NodeId, u64)], term: Term) -> Entry {
    let votes = lives
        .iter()
        .map(|&(node, life)| FounderVote { node, life })
        .collect();
    Entry {
        term,
        index: BOOTSTRAP_INDEX + 1,
        payload: EntryPayload::Formed(votes),
    }
}

fn vote_req_naming(last_index: Index, last_term: Term, life: u64) -> MessageBody {
    MessageBody::Vote {
        kind: VoteKind::Vote,
        last_index,
        last_term,
        transfer: false,
        life,
    }
}

/// The soak's seed 987,949. A founder's vote in the first leader's term is no proof it
/// took part: after a wipe, a delayed copy of the first election's request gets the same
/// grant again. What tells the lives apart is entry 2, where the first leader recorded the
/// life of each vote that elected it; a candidate holding it names ours.
#[test]
fn a_grant_from_a_replayed_first_election_request_is_no_proof() {
    let (mut n, t, life) = founder_that_voted_for_2();
    // Node 4 holds entry 2 of term `t`, which recorded an earlier life of node 1.
    let out = n.step(4, t + 3, vote_req_naming(BOOTSTRAP_INDEX + 1, t, life ^ 1));
    assert!(n.node.lost_data(), "another life elected the first leader");
    assert_eq!(granted(&out, 4), Some(false));
}

#[test]
fn a_candidate_naming_our_life_proves_we_took_part() {
    let (mut n, t, life) = founder_that_voted_for_2();
    let out = n.step(3, t + 1, vote_req_naming(BOOTSTRAP_INDEX + 1, t, life));
    assert!(!n.node.lost_data());
    assert!(!n.node.fresh_founder());
    assert_eq!(granted(&out, 3), Some(true));
}

/// A candidate with entries that cannot name our life (entry 2 compacted away, or not
/// listing us) leaves nothing that could prove we took part.
#[test]
fn a_candidate_with_entries_naming_no_life_marks_a_fresh_founder_lost() {
    let (mut n, t, _) = founder_that_voted_for_2();
    let out = n.step(3, t + 1, vote_req(BOOTSTRAP_INDEX + 5, t));
    assert!(n.node.lost_data());
    assert_eq!(granted(&out, 3), Some(false));
}

/// A leader's heartbeats and appends past entry 2 only make a founder that granted a
/// first-election vote wait (acknowledging nothing); entry 2 decides.
#[test]
fn a_leaders_entry_2_decides_a_waiting_founder() {
    for ours in [true, false] {
        let (mut n, t, life) = founder_that_voted_for_2();
        let lt = t + 1;
        n.step(3, lt, MessageBody::Heartbeat { commit: 0 });
        let out = n.step(3, lt, append(4, t, 4, vec![entry(5, lt)]));
        assert!(n.node.fresh_founder() && !n.node.lost_data(), "it waits");
        assert!(!append_response(&out).0, "a log at the bootstrap snapshot");
        let recorded = if ours { life } else { life.wrapping_add(7) };
        let out = n.step(
            3,
            lt,
            append(
                BOOTSTRAP_INDEX,
                1,
                BOOTSTRAP_INDEX + 1,
                vec![formed(&[(1, recorded), (3, 99)], t), entry(3, t)],
            ),
        );
        assert_eq!(n.node.lost_data(), !ours, "ours={ours}");
        assert!(!n.node.fresh_founder());
        assert_eq!(n.node.last_index(), 3, "the entries are taken either way");
        let acks = out
            .iter()
            .filter(|m| matches!(m.body, MessageBody::AppendResponse { success: true, .. }))
            .count();
        assert_eq!(acks, usize::from(ours), "ours={ours}: {out:?}");
    }
}

/// A snapshot past entry 2 no longer shows the record.
#[test]
fn a_snapshot_past_entry_2_marks_a_waiting_founder_lost() {
    let (mut n, t, _) = founder_that_voted_for_2();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 9,
            term: t,
            conf: ConfState::with_voters(&[1, 2, 3]),
        },
        data: Vec::new(),
    };
    n.step(2, t, MessageBody::Snapshot { snapshot });
    assert!(n.node.lost_data());
}

/// The group's first leader writes the lives its votes came with into entry 2; a
/// candidate holding entry 2 names each voter's recorded life in its requests.
#[test]
fn the_first_leader_records_the_founders_lives_in_entry_2() {
    let mut n = fresh_founder(1);
    n.tick_until_campaign();
    n.win_pre_vote();
    let t = n.node.term();
    let mut out = Vec::new();
    for (from, life) in [(3, 33), (2, 22)] {
        let vote = MessageBody::VoteResponse {
            kind: VoteKind::Vote,
            granted: true,
            life,
        };
        out = n.step(from, t, vote);
    }
    assert_eq!(n.node.role(), Role::Leader);
    let sent = appends_to(&out, 2);
    assert_eq!(
        sent.first().and_then(|e| e.first()),
        Some(&formed(&[(2, 22), (3, 33)], t))
    );
    // Deposed, it campaigns again naming each founder's recorded life.
    n.step(2, t + 1, MessageBody::HeartbeatResponse);
    let out = n.tick_until_campaign();
    let named: Vec<(NodeId, u64)> = out
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Vote { life, .. } => Some((m.to, life)),
            _ => None,
        })
        .collect();
    assert_eq!(named, [(2, 22), (3, 33)]);
}

/// A node that knows it lost state still takes a leader's entries, but acknowledges
/// none: its earlier acknowledgements were counted in quorums it no longer remembers,
/// and a new one could complete a quorum for a leader the group has since deposed (the
/// soak's seed 685988: a cut-off leader of an older term committed over a newer
/// committed entry with such an acknowledgement).
#[test]
fn a_node_that_lost_state_acknowledges_no_append() {
    let mut n = wiped_founder_campaigning();
    let t = n.node.term();
    n.step(3, t + 1, vote_req(BOOTSTRAP_INDEX + 1, t));
    assert!(n.node.lost_data());
    let leader_term = n.node.term();
    let out = n.step(
        2,
        leader_term,
        append(
            BOOTSTRAP_INDEX,
            1,
            BOOTSTRAP_INDEX,
            vec![entry(BOOTSTRAP_INDEX + 1, leader_term)],
        ),
    );
    assert_eq!(
        n.node.last_index(),
        BOOTSTRAP_INDEX + 1,
        "it still takes the entries"
    );
    let acks = out
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendResponse { success: true, .. }))
        .count();
    assert_eq!(acks, 0, "a lost node acknowledged an append: {out:?}");
}
