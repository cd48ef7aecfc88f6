//! The simulation event loop: nodes, their durable storage and state machines, the
//! event queue in simulated time, fault injection, and the liveness deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

mod chaos;
mod stale;

use super::checker::{chain_step, Check, Checker, Observed};
use super::network::{FaultProfile, Links};
use super::{knobs, Knobs, SimConfig, SimReport, Violation, TICK};
use crate::raft::rng::SplitMix64;
use crate::raft::{
    ConfState, Config, Entry, MemStorage, Message, MessageBody, Node, NodeId, ProposeError, Ready,
    Role, Snapshot, Term, VoteKind, BOOTSTRAP_INDEX,
};

/// Mixed into the seed for the nodes' life seeds (`Config::life_seed`).
const LIFE_SALT: u64 = 0x11FE_5A17_0000_0001;
/// Mean time between chaos actions is drawn per seed from this range (time units):
/// from a fault every tick and a half to one every six ticks.
const CHAOS_INTERVAL_RANGE: (u64, u64) = (15, 60);
/// Mean time between client proposals, in time units.
const CLIENT_INTERVAL: u64 = 25;
/// A crashed node stays down for up to this long (time units, ~15 ticks).
const MAX_DOWNTIME: u64 = 150;
/// A node killed right after a driver iteration is restarted at once by its supervisor:
/// down for at most this long (time units, ~3 ticks), often within one election.
const MAX_QUICK_RESTART: u64 = 30;
/// Classic Raft (PreVote off) has no tight liveness bound: a voter with a stale log can
/// keep campaigning one term ahead of the only electable candidate until the timeouts'
/// randomness lets that candidate overtake. Runs without PreVote get this many times the
/// healing bound; runs with PreVote (the default) get the bound as configured.
const CLASSIC_HEAL_FACTOR: u64 = 4;
/// Per-seed chance (permille, drawn from `0..this`) that a node dies right after a driver
/// iteration, i.e. just after its batch is durable and its messages are out: the moment
/// where half-replicated entries and freshly cast votes meet a restart.
const MAX_CRASH_AFTER_READY_PERMILLE: u64 = 30;
/// A node's disk write takes up to this long per seed (time units, drawn from
/// `1..this`): from well inside one network hop to longer than a round trip, so a
/// leader's acknowledgements sometimes arrive while its own write is still under way.
const MAX_WRITE_DELAY: u64 = 40;
/// ...but never more than this fraction of the election timeout: a disk slower than
/// that keeps every election from finishing (candidate's write, then each voter's),
/// which no deployment tolerates either.
const WRITE_DELAY_ELECTION_DIVISOR: u64 = 4;
/// Once faults heal, writes take up to this long (time units), like calm network hops.
const CALM_WRITE_DELAY: u64 = 4;
/// Per-seed chance (permille, drawn from `0..this`) that a node dies just before its
/// write completes: after a leader's early messages are out (and answers to them may
/// have come back), before its batch is durable.
const MAX_CRASH_DURING_WRITE_PERMILLE: u64 = 30;
/// Trace lines kept in a violation report.
const TRACE_TAIL: usize = 40;

#[derive(Clone, Debug)]
enum Event {
    Tick(NodeId),
    Deliver(Message),
    Ready(NodeId, u64),
    /// The write of the node's outstanding `Ready` completes.
    WriteDone(NodeId, u64),
    Restart(NodeId, u64),
    /// The leader of the given term compacts and sends its snapshot to followers.
    SnapshotBehind(NodeId, Term),
    Chaos,
    Client,
    Heal,
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The simulated state machine: a digest of the applied sequence.
#[derive(Clone, Copy, Debug, Default)]
struct Machine {
    applied: u64,
    chain: u64,
}

impl Machine {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend_from_slice(&self.chain.to_le_bytes());
        v
    }

    fn decode(snap: &Snapshot) -> Result<Machine, String> {
        if snap.data.is_empty() && snap.meta.index <= BOOTSTRAP_INDEX {
            return Ok(Machine {
                applied: snap.meta.index,
                chain: 0,
            });
        }
        let d = &snap.data;
        let word = |i: usize| {
            d.get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        match (word(0), word(8)) {
            (Some(applied), Some(chain)) if applied == snap.meta.index => {
                Ok(Machine { applied, chain })
            }
            _ => Err(format!(
                "snapshot at {} carries a bad image",
                snap.meta.index
            )),
        }
    }
}

impl SimNode {
    /// The node knows it lost state (running, or recorded in its storage while down).
    fn lost_data(&self) -> bool {
        match &self.node {
            Some(n) => n.lost_data(),
            None => self.storage.hard_state().lost_data,
        }
    }
}

struct SimNode {
    id: NodeId,
    node: Option<Node>,
    storage: MemStorage,
    machine: Machine,
    incarnation: u64,
    ready_scheduled: bool,
    /// The `Ready` being written (its early messages are out); lost if the node crashes.
    writing: Option<Ready>,
    obs: Observed,
}

pub(super) struct World {
    cfg: SimConfig,
    rng: SplitMix64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    links: Links,
    faults: FaultProfile,
    checker: Checker,
    healed: bool,
    markers: Vec<(u64, u64)>,
    compact_threshold: u64,
    knobs: Knobs,
    report: SimReport,
    client_counter: u64,
    chaos_interval: u64,
    crash_after_ready_permille: u64,
    max_write_delay: u64,
    crash_during_write_permille: u64,
    /// The node whose storage was wiped, until it has been removed and reset to an
    /// empty joiner's storage (at most one at a time, so the others keep a quorum).
    wiped: Option<NodeId>,
    hold_response_permille: u64,
    /// Responses held back, each with the number of leader elections still to wait.
    held: Vec<(Message, u64)>,
    snapshot_after_election_permille: u64,
    /// The highest term in which a leader was seen.
    newest_leader_term: Term,
}

impl World {
    pub(super) fn new(cfg: &SimConfig) -> World {
        let mut rng = SplitMix64::new(cfg.seed);
        let knobs = knobs(&mut rng);
        let faults = FaultProfile::random(&mut rng);
        let compact_threshold = rng.range(8, 80);
        let chaos_interval = rng.range(CHAOS_INTERVAL_RANGE.0, CHAOS_INTERVAL_RANGE.1);
        let crash_after_ready_permille = rng.range(0, MAX_CRASH_AFTER_READY_PERMILLE);
        let election = u64::from(knobs.election_tick) * TICK;
        let max_write_delay = rng
            .range(1, MAX_WRITE_DELAY)
            .min(election / WRITE_DELAY_ELECTION_DIVISOR);
        let crash_during_write_permille = rng.range(0, MAX_CRASH_DURING_WRITE_PERMILLE);
        let hold_response_permille = rng.range(0, stale::MAX_HOLD_RESPONSE_PERMILLE);
        let snapshot_after_election_permille =
            rng.range(0, stale::MAX_SNAPSHOT_AFTER_ELECTION_PERMILLE);
        let voters: Vec<NodeId> = (1..=cfg.nodes as NodeId).collect();
        let nodes = (1..=cfg.nodes as NodeId + 1)
            .map(|id| new_sim_node(id, &voters))
            .collect();
        let mut w = World {
            cfg: cfg.clone(),
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            links: Links::default(),
            faults,
            checker: Checker::new(cfg.durable_vote_check),
            healed: false,
            markers: Vec::new(),
            compact_threshold,
            knobs,
            report: SimReport {
                seed: cfg.seed,
                ..Default::default()
            },
            client_counter: 0,
            chaos_interval,
            crash_after_ready_permille,
            max_write_delay,
            crash_during_write_permille,
            wiped: None,
            hold_response_permille,
            held: Vec::new(),
            snapshot_after_election_permille,
            newest_leader_term: 0,
        };
        w.boot();
        w
    }

    fn boot(&mut self) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let phase = self.rng.range(0, TICK);
            self.schedule(phase, Event::Tick(id));
            if let Err(e) = self.start_node(i) {
                panic!("simulator bootstrap failed: {e}");
            }
        }
        self.schedule(self.chaos_interval, Event::Chaos);
        self.schedule(CLIENT_INTERVAL, Event::Client);
        self.schedule(self.cfg.chaos_ticks * TICK, Event::Heal);
    }

    fn node_config(&self, id: NodeId) -> Config {
        let mut c = Config::try_new(id).expect("simulator node ids are non-zero");
        c.seed = self.cfg.seed;
        c.max_entries_per_msg = self.knobs.max_entries;
        c.max_inflight_msgs = self.knobs.max_inflight;
        c.election_tick = self.knobs.election_tick;
        c.heartbeat_tick = self.knobs.heartbeat_tick;
        c.pre_vote_check_quorum = self.knobs.pre_vote_check_quorum;
        c.bugs = self.cfg.bugs;
        c
    }

    fn start_node(&mut self, i: usize) -> Check {
        let mut cfg = self.node_config(self.nodes[i].id);
        // Every start draws a new life seed (as a real process does), without taking a
        // draw from the world's stream.
        let start = (self.nodes[i].id << 32) | self.nodes[i].incarnation;
        cfg.life_seed = SplitMix64::for_stream(self.cfg.seed ^ LIFE_SALT, start).next_u64();
        let n = &mut self.nodes[i];
        let node = Node::try_new(cfg, &n.storage)
            .map_err(|e| format!("node {} cannot restart: {e}", n.id))?;
        n.machine = Machine::decode(n.storage.snapshot())?;
        self.checker
            .check_apply(n.id, n.machine.applied, n.machine.chain)?;
        n.obs = Observed {
            term: node.term(),
            commit: node.commit_index(),
            leader_mark: None,
        };
        n.node = Some(node);
        n.incarnation += 1;
        n.ready_scheduled = false;
        n.writing = None;
        Ok(())
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        let s = Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        };
        self.queue.push(Reverse(s));
    }

    pub(super) fn run(mut self) -> Result<SimReport, Violation> {
        let deadline = (self.cfg.chaos_ticks + self.heal_ticks()) * TICK;
        while let Some(Reverse(s)) = self.queue.pop() {
            self.now = s.at;
            self.report.events += 1;
            if self.now > deadline && self.stalled_by_lost_state() {
                // A majority of the voters lost state (or cannot prove they did not):
                // no safe election exists until an operator intervenes. Safety held.
                self.report.stalled_by_lost_state = true;
                break;
            }
            if self.now > deadline {
                let what = format!(
                    "liveness: no leader committed a new entry on all members within {} ticks of healing",
                    self.heal_ticks()
                );
                return Err(self.violation(what));
            }
            self.trace_event(&s.event);
            if let Err(what) = self.handle(s.event) {
                return Err(self.violation(what));
            }
            if self.healed && self.recovered() {
                break;
            }
        }
        self.report.end_time = self.now;
        self.report.committed = self.checker.committed_len();
        Ok(self.report)
    }

    /// Whether lost state leaves no electable candidate: some member lost state (or is
    /// the wiped node the operator has yet to repair) and no live voter could collect
    /// the votes its own configuration needs.
    fn stalled_by_lost_state(&self) -> bool {
        let lost_any = self.wiped.is_some() || self.nodes.iter().any(|n| n.lost_data());
        lost_any && !self.nodes.iter().any(|c| self.electable(c))
    }

    /// A live voter of its own configuration, not lost, that enough voters could vote
    /// for: live, not lost or wiped, with a log no more up to date than its own, and (a
    /// founder still fresh) only in the group's first election, which needs every voter,
    /// or when the candidate's entry 2 names the founder's life.
    fn electable(&self, c: &SimNode) -> bool {
        let Some(cn) = c.node.as_ref() else {
            return false;
        };
        let conf = cn.conf();
        if !conf.is_voter(c.id) || cn.lost_data() || self.wiped == Some(c.id) {
            return false;
        }
        let last = |n: &Node| (n.term_at(n.last_index()).unwrap_or(0), n.last_index());
        let first = cn.last_index() == BOOTSTRAP_INDEX;
        // A still-fresh founder grants a candidate with entries whose entry 2 names its life.
        let entry2 = cn.entry(BOOTSTRAP_INDEX + 1);
        let names_life = |v: NodeId, life: u64| {
            life != 0 && entry2.and_then(|e| e.payload.founder_life(v)) == Some(life)
        };
        let votes = conf
            .voters
            .iter()
            .filter(|&&v| {
                let Some(vn) = self.nodes[self.idx(v)].node.as_ref() else {
                    return false;
                };
                v == c.id
                    || (!vn.lost_data()
                        && self.wiped != Some(v)
                        && last(cn) >= last(vn)
                        && (first || !vn.fresh_founder() || names_life(v, vn.life())))
            })
            .count();
        let needed = if first {
            conf.voters.len()
        } else {
            conf.quorum()
        };
        votes >= needed
    }

    fn heal_ticks(&self) -> u64 {
        if self.knobs.pre_vote_check_quorum {
            self.cfg.heal_ticks
        } else {
            self.cfg.heal_ticks * CLASSIC_HEAL_FACTOR
        }
    }

    fn violation(&self, what: String) -> Violation {
        let keep = std::env::var("RINGWAY_SIM_TAIL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TRACE_TAIL);
        let tail = self.report.trace.len().saturating_sub(keep);
        Violation {
            seed: self.cfg.seed,
            time: self.now,
            event: self.report.events,
            what,
            trace_tail: self.report.trace[tail..].to_vec(),
        }
    }

    fn trace_event(&mut self, ev: &Event) {
        let (kind, a, b, c) = match ev {
            Event::Tick(id) => (1, *id, 0, 0),
            Event::Deliver(m) => (2, m.from, m.to, m.term),
            Event::Ready(id, inc) | Event::Restart(id, inc) => (3, *id, *inc, 0),
            Event::SnapshotBehind(id, term) => (8, *id, *term, 0),
            Event::Chaos => (4, 0, 0, 0),
            Event::Client => (5, 0, 0, 0),
            Event::Heal => (6, 0, 0, 0),
            Event::WriteDone(id, inc) => (7, *id, *inc, 0),
        };
        let mut h = self.report.trace_hash ^ self.now.rotate_left(17);
        for x in [kind, a, b, c] {
            h = SplitMix64::new(h ^ x).next_u64();
        }
        self.report.trace_hash = h;
        if self.cfg.trace {
            self.report.trace.push(format!("t={} {ev:?}", self.now));
        }
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = line();
            self.report.trace.push(format!("t={}   {l}", self.now));
        }
    }

    fn handle(&mut self, ev: Event) -> Check {
        match ev {
            Event::Tick(id) => {
                self.schedule(TICK, Event::Tick(id));
                self.with_node(id, |n| n.tick()).map(|_| ())
            }
            Event::Deliver(m) => self.deliver(m),
            Event::Ready(id, inc) => self.process_ready(id, inc),
            Event::WriteDone(id, inc) => self.write_done(id, inc),
            Event::Restart(id, inc) => self.restart(id, inc),
            Event::SnapshotBehind(id, term) => self.snapshot_behind(id, term),
            Event::Chaos => self.chaos(),
            Event::Client => self.client(),
            Event::Heal => self.heal(),
        }
    }

    fn idx(&self, id: NodeId) -> usize {
        (id - 1) as usize
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.nodes
            .get(self.idx(id))
            .is_some_and(|n| n.node.is_some())
    }

    /// Runs `f` on a live node, then checks invariants and schedules its Ready.
    fn with_node<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Node) -> R,
    ) -> Result<Option<R>, String> {
        let i = self.idx(id);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Ok(None);
        };
        let r = f(node);
        self.after_touch(i)?;
        Ok(Some(r))
    }

    fn after_touch(&mut self, i: usize) -> Check {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_ref() else {
            return Ok(());
        };
        self.checker.observe(n.id, node, &mut n.obs)?;
        let new_leader = (node.role() == Role::Leader && node.term() > self.newest_leader_term)
            .then(|| (n.id, node.term()));
        if self.cfg.trace {
            let st = node.status();
            self.report.trace.push(format!(
                "      n{} {:?} t{} lead{} commit{} applied{} last{}/{} snap{} voters{:?} learners{:?}{}",
                st.id, st.role, st.term, st.leader, st.commit, st.applied, st.last_index, st.last_term,
                node.snapshot_index(), st.conf.voters, st.conf.learners,
                if st.lost_data { " lost" } else { "" }
            ));
        }
        if node.has_ready() && !n.ready_scheduled {
            n.ready_scheduled = true;
            let (id, inc) = (n.id, n.incarnation);
            let delay = self.rng.range(0, 4);
            self.schedule(delay, Event::Ready(id, inc));
        }
        self.check_bookkeeping(i)?;
        if let Some((id, term)) = new_leader {
            self.on_new_leader(id, term);
        }
        Ok(())
    }

    fn deliver(&mut self, m: Message) -> Check {
        if self.links.is_blocked(m.from, m.to) || !self.is_up(m.to) {
            return Ok(());
        }
        self.report.messages_delivered += 1;
        let verified = match &m.body {
            MessageBody::Append {
                prev_index,
                entries,
                ..
            } => Some(prev_index + entries.len() as u64),
            _ => None,
        };
        let (to, term) = (m.to, m.term);
        let node = |w: &World| w.nodes[w.idx(to)].node.as_ref().map(|n| n.commit_index());
        let before = node(self);
        self.with_node(to, |n| n.step(m))?;
        match (verified, before, node(self)) {
            (Some(verified), Some(before), Some(after)) if after > before && after > verified => {
                Err(format!(
                    "follower commit: node {to} raised its commit index from {before} to {after} on an AppendEntries of term {term} that verified its log only up to {verified}"
                ))
            }
            _ => Ok(()),
        }
    }

    fn send(&mut self, m: Message) {
        if self.links.is_blocked(m.from, m.to) {
            return;
        }
        if self.maybe_hold(&m) {
            return;
        }
        for delay in self.faults.deliveries(&mut self.rng) {
            self.schedule(delay, Event::Deliver(m.clone()));
        }
    }

    /// The driver, first half: take the `Ready`, send its early messages, start the
    /// write. The node keeps stepping messages (and acks may come back) meanwhile.
    fn process_ready(&mut self, id: NodeId, inc: u64) -> Check {
        let i = self.idx(id);
        if self.nodes[i].incarnation != inc {
            return Ok(());
        }
        self.nodes[i].ready_scheduled = false;
        if self.nodes[i].writing.is_some() {
            return Ok(());
        }
        let Some(mut ready) = self.nodes[i].node.as_mut().and_then(|n| n.ready()) else {
            return Ok(());
        };
        for m in ready.take_early_messages() {
            self.send(m);
        }
        self.nodes[i].writing = Some(ready);
        let delay = self.rng.range(0, self.max_write_delay);
        self.schedule(delay, Event::WriteDone(id, inc));
        Ok(())
    }

    /// The driver, second half: the write completes; then the other messages go out,
    /// committed entries are applied, and the node is advanced.
    fn write_done(&mut self, id: NodeId, inc: u64) -> Check {
        let i = self.idx(id);
        if self.nodes[i].incarnation != inc || self.nodes[i].node.is_none() {
            return Ok(());
        }
        let Some(ready) = self.nodes[i].writing.take() else {
            return Ok(());
        };
        if !self.healed
            && self.rng.chance(self.crash_during_write_permille)
            && self.may_crash_another()
        {
            // Its early messages went out, answers may have come back; the batch did not
            // reach the disk.
            self.log(|| format!("crash node {id} before its write completed"));
            self.crash(id, MAX_QUICK_RESTART);
            return Ok(());
        }
        let msgs = self.persist_and_apply(i, ready)?;
        for m in msgs {
            if let MessageBody::VoteResponse {
                kind: VoteKind::Vote,
                granted: true,
                ..
            } = m.body
            {
                let durable = self.nodes[i].storage.hard_state();
                self.checker.note_grant(id, m.to, m.term, durable)?;
            }
            self.send(m);
        }
        self.maybe_auto_compact(i);
        self.after_touch(i)?;
        if !self.healed
            && self.rng.chance(self.crash_after_ready_permille)
            && self.may_crash_another()
        {
            self.log(|| format!("crash node {id} right after its Ready"));
            self.crash(id, MAX_QUICK_RESTART);
        }
        Ok(())
    }

    /// At most a minority of the founding group is down at once.
    fn may_crash_another(&self) -> bool {
        let down = self.nodes.len() - self.live_ids().len();
        down < self.cfg.nodes / 2
    }

    /// Persist, then (messages returned to send), then apply, then advance.
    fn persist_and_apply(&mut self, i: usize, ready: Ready) -> Result<Vec<Message>, String> {
        let n = &mut self.nodes[i];
        let id = n.id;
        let Some(node) = n.node.as_mut() else {
            return Ok(Vec::new());
        };
        self.checker.check_persist(id, &n.storage, ready.batch())?;
        let mut done = ready
            .persist(&mut n.storage)
            .map_err(|e| format!("node {id}: storage refused a batch: {e}"))?;
        let msgs = done.take_messages();
        if let Some(s) = done.snapshot() {
            n.machine = Machine::decode(s)?;
            self.checker
                .check_apply(id, n.machine.applied, n.machine.chain)?;
            self.report.snapshots_installed += 1;
        }
        for e in done.committed_entries() {
            apply(&mut n.machine, e, id, &mut self.checker)?;
        }
        node.advance(done)
            .map_err(|_| format!("node {id}: advance refused its own Ready"))?;
        Ok(msgs)
    }

    fn maybe_auto_compact(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else { return };
        let applied = n.machine.applied;
        if applied >= node.snapshot_index() + self.compact_threshold {
            let _ = node.compact(applied, n.machine.encode());
        }
    }

    fn crash(&mut self, id: NodeId, max_downtime: u64) {
        let i = self.idx(id);
        self.nodes[i].writing = None;
        if self.nodes[i].node.take().is_some() {
            self.report.crashes += 1;
            let inc = self.nodes[i].incarnation;
            let downtime = self.rng.range(1, max_downtime);
            self.schedule(downtime, Event::Restart(id, inc));
        }
    }

    fn restart(&mut self, id: NodeId, inc: u64) -> Check {
        let i = self.idx(id);
        if self.nodes[i].node.is_some() || self.nodes[i].incarnation != inc {
            return Ok(());
        }
        self.start_node(i)?;
        self.after_touch(i)
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn all_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The live leader with the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    fn client(&mut self) -> Check {
        let delay = self.rng.range(1, 2 * CLIENT_INTERVAL);
        self.schedule(delay, Event::Client);
        if self.healed {
            return self.propose_marker();
        }
        let Some(target) = self.rng.pick(&self.live_ids()) else {
            return Ok(());
        };
        self.client_counter += 1;
        let data = format!("c{}", self.client_counter).into_bytes();
        let res = self.with_node(target, |n| n.propose(data.clone()))?;
        if let Some(Err(ProposeError::NotLeader { leader: Some(l) })) = res {
            let fwd = self.with_node(l, |n| n.propose(data))?;
            self.count_accepted(fwd.is_some_and(|r| r.is_ok()));
        } else {
            self.count_accepted(res.is_some_and(|r| r.is_ok()));
        }
        Ok(())
    }

    fn count_accepted(&mut self, ok: bool) {
        if ok {
            self.report.proposals_accepted += 1;
        }
    }

    fn propose_marker(&mut self) -> Check {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        self.client_counter += 1;
        let data = format!("heal{}", self.client_counter).into_bytes();
        if let Some(Ok(p)) = self.with_node(l, |n| n.propose(data))? {
            self.markers.push((p.term, p.index));
        }
        Ok(())
    }

    /// Liveness after healing: some marker committed and applied by every member of the
    /// current leader's configuration.
    fn recovered(&self) -> bool {
        let Some(l) = self.leader() else { return false };
        let Some(leader) = self.nodes[self.idx(l)].node.as_ref() else {
            return false;
        };
        let members: Vec<NodeId> = leader.conf().members().collect();
        self.markers.iter().any(|&(term, index)| {
            self.checker.committed_term(index) == Some(term)
                && members.iter().all(|&m| {
                    let n = &self.nodes[self.idx(m)];
                    // A node that lost state acknowledges nothing, so the leader tells
                    // it no commit: it waits for an operator, not for the group.
                    n.lost_data() || (n.node.is_some() && n.machine.applied >= index)
                })
        })
    }

    fn heal(&mut self) -> Check {
        self.healed = true;
        self.links.heal();
        self.faults = FaultProfile::calm();
        self.max_write_delay = self.max_write_delay.min(CALM_WRITE_DELAY);
        self.log(|| "heal: network healed, all nodes restarted".to_string());
        for id in self.all_ids() {
            if !self.is_up(id) {
                let inc = self.nodes[self.idx(id)].incarnation;
                self.restart(id, inc)?;
            }
        }
        Ok(())
    }
}

fn new_sim_node(id: NodeId, voters: &[NodeId]) -> SimNode {
    let storage = if voters.contains(&id) {
        MemStorage::new_with_conf(ConfState::with_voters(voters))
    } else {
        MemStorage::new()
    };
    SimNode {
        id,
        node: None,
        storage,
        machine: Machine::default(),
        incarnation: 0,
        ready_scheduled: false,
        writing: None,
        obs: Observed::default(),
    }
}

fn apply(m: &mut Machine, e: &Entry, id: NodeId, checker: &mut Checker) -> Check {
    if e.index != m.applied + 1 {
        return Err(format!(
            "node {id}: applied index jumped from {} to {}",
            m.applied, e.index
        ));
    }
    m.chain = chain_step(m.chain, e);
    m.applied = e.index;
    checker.check_apply(id, e.index, m.chain)
}
