//! The Raft state machine: roles, terms, ticks, and the term rules applied to every
//! incoming message before it is dispatched to the role's handler.

use std::collections::BTreeMap;

use super::config::Config;
use super::log::RaftLog;
use super::message::{Message, MessageBody, VoteKind};
use super::progress::Progress;
use super::rng::SplitMix64;
use super::stats::Stats;
use super::storage::InitialState;
use super::types::{ConfState, EntryPayload, HardState, Index, NodeId, Snapshot, Term, NO_NODE};

/// Ticks a follower may spend in Snapshot state before the leader assumes the
/// snapshot was lost and probes again. Two default election timeouts: long enough
/// for a snapshot to cross a slow link, short enough that a lost one costs seconds.
pub const SNAPSHOT_RETRY_TICKS: u32 = 20;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Running a PreVote round; term and vote unchanged.
    PreCandidate,
    Candidate,
    Leader,
}

/// The consensus state of one node. Driven through `Node`.
#[derive(Debug)]
pub(crate) struct Raft {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) leader: NodeId,
    pub(crate) role: Role,
    pub(crate) log: RaftLog,
    /// Membership in effect: the newest configuration in the log, committed or not
    /// (Raft thesis 4.1). It reverts if that entry is truncated away.
    pub(crate) conf: ConfState,
    /// Leader only: every member's progress, this node included.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate/pre-candidate only: answers received.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_timeout: u32,
    /// Candidate only: this election was asked for by a leader transfer.
    pub(crate) campaign_transfer: bool,
    /// Leader only: the voter leadership is being handed to.
    pub(crate) transferee: NodeId,
    /// Leader only: index of the entry that opened this term.
    pub(crate) term_start: Index,
    /// Index of the newest configuration entry in the log (0 if it is in the snapshot).
    /// While it is above the commit index, no further change may be proposed.
    pub(crate) pending_conf: Index,
    rng: SplitMix64,
    /// Messages that may go out only once the state they vouch for is durable
    /// (acknowledgements, votes, and anything else not in `early_msgs`).
    pub(crate) msgs: Vec<Message>,
    /// A leader's AppendEntries, heartbeats and snapshots: they may go out before the
    /// leader's own write of the same `Ready` completes (see `Ready::take_early_messages`).
    pub(crate) early_msgs: Vec<Message>,
    /// Leader only: proposals were appended since the last flush of AppendEntries.
    pub(crate) pending_flush: bool,
    pub(crate) stats: Stats,
    /// A snapshot installed from the leader, not yet handed out in a `Ready`.
    pub(crate) pending_snapshot: Option<Snapshot>,
    /// A local compaction not yet handed out in a `Ready`.
    pub(crate) pending_compaction: Option<Snapshot>,
    /// See [`HardState::fresh_founder`].
    pub(crate) fresh_founder: bool,
    /// See [`HardState::lost_data`].
    pub(crate) lost_data: bool,
    /// See [`HardState::life`].
    pub(crate) life: u64,
    /// Candidate in the group's first election only: the lives the founders granted
    /// their votes with, written into entry 2 if it wins.
    pub(crate) founder_votes: Vec<super::types::FounderVote>,
    /// Events for the driver, bounded by [`super::lost::MAX_PENDING_EVENTS`].
    pub(crate) events: Vec<super::lost::Event>,
}

impl Raft {
    /// A node restarted (or started) from durable state.
    pub(crate) fn restore(cfg: Config, init: InitialState) -> Raft {
        let mut hs = init.hard_state;
        if cfg.bugs.forget_vote_on_restart() {
            hs.vote = NO_NODE;
        }
        let log = RaftLog::restore_from(init.snapshot, init.entries, hs.commit);
        let conf = conf_at(&log, log.snapshot_meta().conf.clone(), log.last_index());
        let pending_conf = last_conf_index(&log);
        let rng = SplitMix64::for_stream(cfg.seed, cfg.id);
        let mut raft = Raft {
            id: cfg.id,
            cfg,
            term: hs.term,
            vote: hs.vote,
            leader: NO_NODE,
            role: Role::Follower,
            log,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            transferee: NO_NODE,
            campaign_transfer: false,
            term_start: 0,
            pending_conf,
            rng,
            msgs: Vec::new(),
            early_msgs: Vec::new(),
            pending_flush: false,
            stats: Stats::default(),
            pending_snapshot: None,
            pending_compaction: None,
            fresh_founder: hs.fresh_founder,
            lost_data: hs.lost_data,
            life: hs.life,
            founder_votes: Vec::new(),
            events: Vec::new(),
        };
        raft.reset_election_timer();
        raft
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
            fresh_founder: self.fresh_founder,
            lost_data: self.lost_data,
            life: self.life,
        }
    }

    /// Only voters of the current configuration campaign, and only if they have not
    /// lost state they acknowledged.
    pub(crate) fn promotable(&self) -> bool {
        self.conf.is_voter(self.id) && !self.lost_data
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = u64::from(self.cfg.election_tick);
        self.randomized_timeout = self.rng.range(e, 2 * e) as u32;
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let replication = matches!(
            body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        );
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if self.role == Role::Leader && replication && term == self.term {
            self.early_msgs.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        if term > self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transferee = NO_NODE;
        self.progress.clear();
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Adopts a higher term seen in a vote request. Unless we were leading, the election
    /// timer keeps running (Figure 2 resets it only on hearing the leader or granting a
    /// vote): otherwise a candidate whose log is too stale to win could, by campaigning
    /// again and again, keep the up-to-date voters from ever timing out.
    fn adopt_term_keeping_timer(&mut self, term: Term) {
        let timer = (self.election_elapsed, self.randomized_timeout);
        let was_leader = self.role == Role::Leader;
        self.become_follower(term, NO_NODE);
        if !was_leader {
            (self.election_elapsed, self.randomized_timeout) = timer;
        }
    }

    pub(crate) fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        let retry = self
            .election_elapsed
            .is_multiple_of(self.cfg.heartbeat_tick);
        if retry && matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.resend_vote_requests();
        }
        if self.promotable() && self.election_elapsed >= self.randomized_timeout {
            let kind = if self.cfg.pre_vote_check_quorum {
                VoteKind::PreVote
            } else {
                VoteKind::Vote
            };
            self.campaign(kind, false);
        }
    }

    fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        self.heartbeat_elapsed += 1;
        self.tick_snapshot_progress();
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.pre_vote_check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, NO_NODE);
                return;
            }
            self.transferee = NO_NODE;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// CheckQuorum: did a majority of voters (us included) answer since the last round?
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let mut active = 0;
        for (&peer, pr) in self.progress.iter_mut() {
            if self.conf.is_voter(peer) && (pr.recent_active || peer == id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.conf.quorum()
    }

    fn tick_snapshot_progress(&mut self) {
        for pr in self.progress.values_mut() {
            if matches!(pr.state, super::progress::ProgressState::Snapshot { .. }) {
                pr.snapshot_ticks += 1;
                if pr.snapshot_ticks >= SNAPSHOT_RETRY_TICKS {
                    pr.become_probe();
                }
            }
        }
    }

    /// Entry point for every peer message: validate, apply the term rules, dispatch.
    pub(crate) fn step(&mut self, m: Message) {
        self.stats.stepped += 1;
        if m.to != self.id || m.from == NO_NODE || m.from == self.id {
            self.stats.dropped_misrouted += 1;
            return;
        }
        if !well_formed(&m) {
            self.stats.dropped_malformed += 1;
            return;
        }
        self.screen_for_lost_state(&m);
        if m.term > self.term && !self.on_higher_term(&m) {
            return;
        }
        if m.term < self.term && !self.bug_takes_stale_response(&m) {
            self.on_lower_term(&m);
            return;
        }
        self.dispatch(m);
    }

    /// Planted bugs only: a response from an earlier term that a switch lets through
    /// the term rule (an append acknowledgement to a leader, a vote grant to a candidate).
    fn bug_takes_stale_response(&self, m: &Message) -> bool {
        let bugs = self.cfg.bugs;
        match m.body {
            MessageBody::AppendResponse { success: true, .. } => {
                bugs.accept_stale_term_ack() && self.role == Role::Leader
            }
            MessageBody::VoteResponse {
                kind: VoteKind::Vote,
                granted: true,
                ..
            } => bugs.count_stale_vote_grant() && self.role == Role::Candidate,
            _ => false,
        }
    }

    /// Leader lease: within an election timeout of hearing from a leader, vote requests
    /// are ignored (thesis 4.2.3). Nodes removed from the group, which never hear the
    /// leader, would otherwise depose it by campaigning at ever higher terms. Applies in
    /// every mode; with CheckQuorum a leader that lost its majority also steps down.
    fn in_lease(&self) -> bool {
        self.leader != NO_NODE && self.election_elapsed < self.cfg.election_tick
    }

    /// Returns whether the message should still be dispatched.
    fn on_higher_term(&mut self, m: &Message) -> bool {
        match &m.body {
            MessageBody::Vote { transfer, kind, .. } => {
                if self.in_lease() && !transfer {
                    self.stats.dropped_in_lease += 1;
                    return false;
                }
                if *kind == VoteKind::Vote {
                    self.adopt_term_keeping_timer(m.term);
                }
            }
            MessageBody::VoteResponse {
                kind: VoteKind::PreVote,
                granted: true,
                ..
            } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => self.become_follower(m.term, m.from),
            _ => self.become_follower(m.term, NO_NODE),
        }
        true
    }

    fn on_lower_term(&mut self, m: &Message) {
        self.stats.dropped_stale_term += 1;
        match &m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                // A leader cut off from us kept its old term: tell it ours so it steps down.
                self.send(m.from, MessageBody::HeartbeatResponse);
            }
            MessageBody::Vote { kind, .. } => {
                // The rejection carries our term, so a candidate behind us catches up.
                let body = MessageBody::VoteResponse {
                    kind: *kind,
                    granted: false,
                    life: 0,
                };
                self.send(m.from, body);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::Vote {
                kind,
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(from, m.term, kind, last_index, last_term),
            MessageBody::VoteResponse {
                kind,
                granted,
                life,
            } => self.handle_vote_response(from, m.term, kind, granted, life),
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::Append {
                prev_index,
                prev_term,
                commit,
                entries,
            } => self.handle_append(from, prev_index, prev_term, commit, entries),
            MessageBody::Heartbeat { commit } => self.handle_heartbeat(from, commit),
            MessageBody::Snapshot { snapshot } => self.handle_snapshot(from, snapshot),
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, success, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse => self.handle_heartbeat_response(from),
        }
    }

    /// Advances the commit index; a leader whose own removal just committed steps down.
    pub(crate) fn commit_to(&mut self, index: Index) {
        if index <= self.log.commit {
            return;
        }
        self.log.commit = index;
        let removed = !self.conf.is_voter(self.id) && self.pending_conf <= index;
        if self.role == Role::Leader && removed {
            self.step_down_removed();
        }
    }

    /// Recomputes the configuration from the log after entries were replaced.
    pub(crate) fn refresh_conf(&mut self) {
        let base = self.log.snapshot_meta().conf.clone();
        self.conf = conf_at(&self.log, base, self.log.last_index());
        self.pending_conf = last_conf_index(&self.log);
        if !self.promotable() && matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, NO_NODE);
        }
    }
}

/// Index of the newest configuration entry after the snapshot, or 0.
pub(crate) fn last_conf_index(log: &RaftLog) -> Index {
    log.range(log.snapshot_meta().index, log.last_index())
        .filter(|e| matches!(e.payload, EntryPayload::ConfChange(_)))
        .map(|e| e.index)
        .last()
        .unwrap_or(0)
}

/// The configuration after applying the configuration entries in `(base, upto]` to `conf`.
pub(crate) fn conf_at(log: &RaftLog, mut conf: ConfState, upto: Index) -> ConfState {
    for e in log.range(log.snapshot_meta().index, upto) {
        if let EntryPayload::ConfChange(cc) = &e.payload {
            if let Ok(next) = conf.apply(cc) {
                conf = next;
            }
        }
    }
    conf
}

/// Largest term or index accepted from a peer. Real values never come near it; the
/// headroom guarantees `term + 1`, `index + 1` and `index + len` cannot overflow.
pub const MAX_WIRE_VALUE: u64 = 1 << 62;

/// Structural checks on peer input; anything failing is dropped and counted.
fn well_formed(m: &Message) -> bool {
    if m.term > MAX_WIRE_VALUE || !numbers_in_range(&m.body) {
        return false;
    }
    match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => entries_well_formed(m.term, *prev_index, *prev_term, entries),
        MessageBody::Vote { last_term, .. } => *last_term <= m.term,
        MessageBody::Snapshot { snapshot } => {
            let meta = &snapshot.meta;
            meta.index > 0 && meta.term > 0 && meta.term <= m.term && conf_well_formed(&meta.conf)
        }
        _ => true,
    }
}

fn numbers_in_range(body: &MessageBody) -> bool {
    let ok = |v: u64| v <= MAX_WIRE_VALUE;
    match body {
        MessageBody::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        } => {
            ok(*prev_index)
                && ok(*prev_term)
                && ok(*commit)
                && entries.len() as u64 <= MAX_WIRE_VALUE
        }
        MessageBody::AppendResponse {
            index,
            hint_index,
            hint_term,
            ..
        } => ok(*index) && ok(*hint_index) && ok(*hint_term),
        MessageBody::Heartbeat { commit } => ok(*commit),
        MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => ok(*last_index) && ok(*last_term),
        MessageBody::Snapshot { snapshot } => ok(snapshot.meta.index) && ok(snapshot.meta.term),
        _ => true,
    }
}

/// Sorted, duplicate-free, disjoint, no node 0, at least one voter.
fn conf_well_formed(conf: &ConfState) -> bool {
    let strictly_sorted = |v: &[NodeId]| v.windows(2).all(|w| w[0] < w[1]) && !v.contains(&NO_NODE);
    !conf.voters.is_empty()
        && strictly_sorted(&conf.voters)
        && strictly_sorted(&conf.learners)
        && !conf
            .learners
            .iter()
            .any(|l| conf.voters.binary_search(l).is_ok())
}

fn entries_well_formed(
    term: Term,
    prev_index: Index,
    prev_term: Term,
    entries: &[super::types::Entry],
) -> bool {
    if prev_term > term {
        return false;
    }
    let mut expect_index = prev_index;
    let mut floor_term = prev_term;
    for e in entries {
        let Some(next) = expect_index.checked_add(1) else {
            return false;
        };
        if e.index != next || e.term < floor_term || e.term > term || e.term == 0 {
            return false;
        }
        expect_index = next;
        floor_term = e.term;
    }
    true
}
