//! The leader's view of each follower: match/next indexes, probe/replicate/snapshot state,
//! and the bounded window of AppendEntries in flight.

use std::collections::VecDeque;

use super::types::Index;

/// How the leader currently replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding where the logs agree: one AppendEntries at a time.
    Probe,
    /// Streaming: up to the in-flight window of AppendEntries before an ack.
    Replicate,
    /// An InstallSnapshot for `pending` is on its way; nothing else is sent.
    Snapshot { pending: Index },
}

/// Replication progress of one follower (or learner).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    pub state: ProgressState,
    /// Probe state: a probe is out and we wait for its answer (or a heartbeat reply).
    probe_sent: bool,
    /// Last index of each AppendEntries in flight, oldest first (Replicate state).
    inflight: VecDeque<Index>,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// Ticks spent in Snapshot state, to retry a lost snapshot.
    pub snapshot_ticks: u32,
}

impl Progress {
    pub(crate) fn new(next: Index) -> Progress {
        Progress {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            snapshot_ticks: 0,
        }
    }

    /// Whether the leader must hold back new AppendEntries.
    pub(crate) fn is_paused(&self, window: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= window,
            ProgressState::Snapshot { .. } => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.next = self.matched + 1;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.inflight.clear();
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, pending: Index) {
        self.state = ProgressState::Snapshot { pending };
        self.inflight.clear();
        self.snapshot_ticks = 0;
    }

    /// Records an AppendEntries whose last entry is `last` (`None` when it had none).
    pub(crate) fn on_sent(&mut self, last: Option<Index>) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// An ack up to `index`; false if it tells nothing new.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        if index <= self.matched {
            return false;
        }
        self.matched = index;
        self.next = self.next.max(index + 1);
        self.probe_sent = false;
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        true
    }

    /// A rejection of the AppendEntries at `rejected`; `guess` is the next index the
    /// rejection hint suggests. False if the rejection is stale.
    pub(crate) fn maybe_decrease(&mut self, rejected: Index, guess: Index) -> bool {
        match self.state {
            ProgressState::Replicate if rejected > self.matched => {
                self.become_probe();
                self.next = (self.matched + 1).max(guess.min(rejected));
                true
            }
            ProgressState::Probe if self.next == rejected + 1 => {
                self.next = (self.matched + 1).max(guess.min(rejected));
                self.probe_sent = false;
                true
            }
            _ => false,
        }
    }

    /// A probe at the index the follower acknowledged this term was rejected: its log
    /// went backwards (lost state). Forgets the match, which no longer holds, and probes
    /// from `guess`; returns the match that was lost. `None` for any other rejection.
    pub(crate) fn regressed(&mut self, rejected: Index, guess: Index) -> Option<Index> {
        let probing_match = self.state == ProgressState::Probe
            && self.matched > 0
            && rejected == self.matched
            && self.next == rejected + 1;
        if !probing_match {
            return None;
        }
        let lost = self.matched;
        self.matched = 0;
        self.next = guess.clamp(1, rejected);
        self.probe_sent = false;
        Some(lost)
    }

    /// A heartbeat reply: lets a probe go again, or frees one slot of a full window
    /// in case its ack was lost.
    pub(crate) fn on_heartbeat_response(&mut self, window: usize) {
        self.recent_active = true;
        match self.state {
            ProgressState::Probe => self.probe_sent = false,
            ProgressState::Replicate if self.inflight.len() >= window => {
                self.inflight.pop_front();
            }
            _ => {}
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_pauses_replication() {
        let mut p = Progress::new(1);
        p.become_replicate();
        p.on_sent(Some(3));
        p.on_sent(Some(5));
        assert!(p.is_paused(2));
        assert!(p.maybe_update(3));
        assert!(!p.is_paused(2));
        assert_eq!(p.next, 6);
    }

    #[test]
    fn stale_rejection_is_ignored() {
        let mut p = Progress::new(10);
        p.on_sent(None);
        assert!(!p.maybe_decrease(4, 2));
        assert!(p.maybe_decrease(9, 5));
        assert_eq!(p.next, 5);
        assert!(!p.is_paused(1));
    }

    #[test]
    fn rejection_never_goes_below_match() {
        let mut p = Progress::new(1);
        p.maybe_update(7);
        p.become_replicate();
        p.on_sent(Some(12));
        assert!(p.maybe_decrease(12, 1));
        assert_eq!(p.next, 8);
        assert_eq!(p.state, ProgressState::Probe);
    }
}
