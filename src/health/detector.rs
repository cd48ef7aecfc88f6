//! Per-instance detection, fed by the request path.
//!
//! Every upstream of a routing snapshot has an [`UpstreamHealth`] slot, resolved when
//! the snapshot is built and reused by later snapshots while the upstream stays (so
//! its counters survive rebuilds). The request path records each outcome into it
//! with a few relaxed atomic operations: no lock, no allocation, no `.await`.
//!
//! A slot *trips* on `consecutive_failures` failures in a row, or when the failure
//! rate over its sliding window reaches `failure_rate_percent` with at least
//! `min_requests` requests in it. A trip becomes a [`Trip`] event on the bounded
//! queue of the snapshot's [`Hub`] (`try_send`: a full queue drops it, and the slot
//! trips again after [`TRIP_INTERVAL_MS`]); the health task turns trips into
//! breaker reports for the cluster.
//!
//! The local fast path: a connection refused or timed out makes the slot *suspect*;
//! this instance skips it on the ring walk at once, before and without the cluster.
//! When the suspicion expires the next request re-tests it (failing over at once if
//! it is still refused: nothing was sent). The suspicion starts at
//! [`SUSPICION_FIRST_MS`] and doubles with each refusal in a row, up to
//! `local_suspicion_ms`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;

use super::breaker::{Evidence, PoolBreakers, Signal};
use crate::config::health::{Health, Passive};
use crate::grpc_status::Code;
use crate::ring::{Ring, Walk, MAX_WALK};

/// Trip events waiting for the health task. Trips are rate-limited per upstream, so
/// this holds a burst of every upstream of many pools tripping at once.
pub const TRIP_QUEUE: usize = 256;
/// An upstream that keeps failing trips again at most this often (milliseconds).
pub const TRIP_INTERVAL_MS: u64 = 1000;
/// The first suspicion after a refused connect (milliseconds); each further refusal
/// in a row doubles it, up to `local_suspicion_ms`. Re-testing a dead upstream costs
/// one refused connect, so early re-tests are cheap and let the consecutive-failure
/// count reach its threshold quickly, while a long outage is re-tested rarely.
pub const SUSPICION_FIRST_MS: u64 = 50;
/// Buckets of the sliding failure-rate window.
pub const WINDOW_BUCKETS: usize = 10;

/// Milliseconds on this process's monotonic clock (for the detector's own timing;
/// never replicated).
pub fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A detector that tripped.
#[derive(Debug, Clone)]
pub struct Trip {
    pub pool: Arc<str>,
    pub upstream: Arc<str>,
    pub evidence: Evidence,
}

/// The trip queue shared by every snapshot of one proxy (each snapshot build takes
/// it from the previous one).
#[derive(Debug)]
pub struct Hub {
    trips: mpsc::Sender<Trip>,
    receiver: Mutex<Option<mpsc::Receiver<Trip>>>,
    dropped: Arc<AtomicU64>,
}

impl Default for Hub {
    fn default() -> Self {
        let (trips, rx) = mpsc::channel(TRIP_QUEUE);
        Hub {
            trips,
            receiver: Mutex::new(Some(rx)),
            dropped: Arc::default(),
        }
    }
}

impl Hub {
    /// The receiving end, once: the health task takes it.
    pub fn take_trips(&self) -> Option<mpsc::Receiver<Trip>> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Trips dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// How one attempt at an upstream ended, as detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status.
    Response(u16),
    /// A gRPC call ended with this status (its HTTP status is 200 either way): a
    /// failure when the pool counts it (`count_grpc`).
    Grpc(Code),
    /// Connecting failed; `suspect` when refused or timed out (the local fast path).
    Connect { suspect: bool },
    /// No response head in time.
    Timeout,
    /// The connection failed after the request was sent.
    Reset,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which `now / bucket_ms` this bucket counts; older counts are stale.
    epoch: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

/// One upstream's detector.
#[derive(Debug)]
pub struct UpstreamHealth {
    pub pool: Arc<str>,
    pub id: Arc<str>,
    settings: Passive,
    consecutive: AtomicU32,
    buckets: [Bucket; WINDOW_BUCKETS],
    suspect_until_ms: AtomicU64,
    /// Connects refused or timed out in a row: each doubles the next suspicion.
    refusals: AtomicU32,
    /// Active checks failed `fall` times in a row, and have not passed `rise` since.
    active_down: AtomicBool,
    active_passes: AtomicU32,
    active_failures: AtomicU32,
    last_trip_ms: AtomicU64,
    /// The cluster has it ejected (as of the latest snapshot): no trips then.
    ejected: AtomicBool,
    inflight: AtomicUsize,
    trips: mpsc::Sender<Trip>,
    dropped: Arc<AtomicU64>,
}

impl UpstreamHealth {
    pub fn new(pool: Arc<str>, id: Arc<str>, settings: Passive, hub: &Hub) -> UpstreamHealth {
        UpstreamHealth {
            pool,
            id,
            settings,
            consecutive: AtomicU32::new(0),
            buckets: Default::default(),
            suspect_until_ms: AtomicU64::new(0),
            refusals: AtomicU32::new(0),
            active_down: AtomicBool::new(false),
            active_passes: AtomicU32::new(0),
            active_failures: AtomicU32::new(0),
            last_trip_ms: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            trips: hub.trips.clone(),
            dropped: hub.dropped.clone(),
        }
    }

    pub fn settings(&self) -> &Passive {
        &self.settings
    }

    fn bucket_ms(&self) -> u64 {
        (self.settings.window.as_millis() as u64 / WINDOW_BUCKETS as u64).max(1)
    }

    /// Records one outcome at `now` (see [`now_ms`]); may trip.
    pub fn record(&self, outcome: Outcome, now: u64) {
        let c = &self.settings.classes;
        let failed = match outcome {
            Outcome::Response(s) => c.status_5xx && (500..600).contains(&s),
            Outcome::Grpc(code) => self.settings.grpc_failures.contains(code),
            Outcome::Connect { .. } => c.connect,
            Outcome::Timeout => c.timeout,
            Outcome::Reset => c.reset,
        };
        if let Outcome::Connect { suspect: true } = outcome {
            let n = self.refusals.fetch_add(1, Relaxed).min(16);
            let cap = self.settings.local_suspicion.as_millis() as u64;
            let until = now.saturating_add((SUSPICION_FIRST_MS << n).min(cap));
            self.suspect_until_ms.store(until, Relaxed);
        }
        self.count(failed, now);
        if !failed {
            self.consecutive.store(0, Relaxed);
            if let Outcome::Response(_) | Outcome::Grpc(_) = outcome {
                self.suspect_until_ms.store(0, Relaxed);
                self.refusals.store(0, Relaxed);
            }
            return;
        }
        let run = self.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        let threshold = self.settings.consecutive_failures;
        if threshold > 0 && run >= threshold {
            self.trip(Signal::ConsecutiveFailures, run, run, now);
            return;
        }
        let rate = self.settings.failure_rate_percent;
        let (requests, failures) = self.window(now);
        if rate > 0
            && requests >= self.settings.min_requests
            && u64::from(failures) * 100 >= u64::from(rate) * u64::from(requests)
        {
            self.trip(Signal::FailureRate, failures, requests, now);
        }
    }

    fn count(&self, failed: bool, now: u64) {
        let epoch = now / self.bucket_ms();
        let b = &self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        let seen = b.epoch.load(Relaxed);
        // The first writer of a new period resets the bucket; a count racing with
        // the reset may be lost, which a rate over many requests tolerates.
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            b.requests.store(0, Relaxed);
            b.failures.store(0, Relaxed);
        }
        b.requests.fetch_add(1, Relaxed);
        if failed {
            b.failures.fetch_add(1, Relaxed);
        }
    }

    /// Requests and failures in the window ending at `now`.
    pub fn window(&self, now: u64) -> (u32, u32) {
        let epoch = now / self.bucket_ms();
        let fresh = |b: &&Bucket| {
            let e = b.epoch.load(Relaxed);
            e <= epoch && e + (WINDOW_BUCKETS as u64) > epoch
        };
        self.buckets.iter().filter(fresh).fold((0, 0), |(r, f), b| {
            (
                r.saturating_add(b.requests.load(Relaxed)),
                f.saturating_add(b.failures.load(Relaxed)),
            )
        })
    }

    /// Failed requests in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Relaxed)
    }

    fn trip(&self, signal: Signal, failures: u32, requests: u32, now: u64) {
        if self.ejected.load(Relaxed) {
            return;
        }
        let last = self.last_trip_ms.load(Relaxed);
        if last != 0 && now < last.saturating_add(TRIP_INTERVAL_MS) {
            return;
        }
        if self
            .last_trip_ms
            .compare_exchange(last, now.max(1), Relaxed, Relaxed)
            .is_err()
        {
            return; // another request is tripping it right now
        }
        let trip = Trip {
            pool: self.pool.clone(),
            upstream: self.id.clone(),
            evidence: Evidence {
                signal,
                failures,
                requests,
            },
        };
        if self.trips.try_send(trip).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Records an active check result: `fall` failures in a row take it down here
    /// (skipped locally) and trip; `rise` passes in a row bring it back.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32, now: u64) {
        if passed {
            self.active_failures.store(0, Relaxed);
            let n = self.active_passes.fetch_add(1, Relaxed).saturating_add(1);
            if n >= rise {
                self.active_down.store(false, Relaxed);
            }
            return;
        }
        self.active_passes.store(0, Relaxed);
        let n = self.active_failures.fetch_add(1, Relaxed).saturating_add(1);
        if n >= fall {
            self.active_down.store(true, Relaxed);
            self.trip(Signal::ActiveCheck, n, n, now);
        }
    }

    /// True while this instance alone avoids it: a recent refused connect, or
    /// failing active checks.
    pub fn is_suspect(&self, now: u64) -> bool {
        now < self.suspect_until_ms.load(Relaxed) || self.active_down.load(Relaxed)
    }

    /// Requests now in flight to it from this instance.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Relaxed);
    }
}

/// Counts one request in flight to an upstream (and its pool) until dropped; and,
/// for a request whose outcome only its response's end tells (a gRPC call answered
/// 200, whose status comes in the trailers), records that outcome once.
#[derive(Debug)]
pub struct InFlight {
    slot: Arc<UpstreamHealth>,
    total: Arc<AtomicUsize>,
    /// The outcome is still to be recorded, by [`InFlight::settle`].
    pending: bool,
}

impl InFlight {
    /// Marks the outcome as still to be recorded when `pending`.
    pub fn pending(mut self, pending: bool) -> Self {
        self.pending = pending;
        self
    }

    /// True while an outcome is still to be recorded.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// Records the request's outcome if it is still to be (once: later calls do
    /// nothing). Dropped unsettled (the client left first), nothing is recorded.
    pub fn settle(&mut self, outcome: Outcome, now: u64) {
        if std::mem::take(&mut self.pending) {
            self.slot.record(outcome, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.inflight.fetch_sub(1, Relaxed);
        self.total.fetch_sub(1, Relaxed);
    }
}

/// What the request path of one pool knows about its upstreams' health.
#[derive(Debug, Default)]
pub struct PoolHealth {
    /// Indexed like the pool's upstreams.
    pub slots: Vec<Arc<UpstreamHealth>>,
    /// Ejected by the cluster (all false in panic mode). Indexed like the upstreams.
    pub ejected: Box<[bool]>,
    /// The cluster has the pool in panic mode: every upstream takes traffic.
    pub panic: bool,
    /// Upstreams not ejected.
    pub healthy: usize,
    pub balance_factor: Option<u32>,
    /// The pool's health settings from the file.
    pub settings: Health,
    /// Requests in flight to the pool from this instance, shared across snapshots.
    pub inflight: Arc<AtomicUsize>,
}

impl PoolHealth {
    /// Builds a pool's health view: slots reused from `previous` (same upstream id and
    /// passive settings) or new ones; ejections from the cluster's breakers.
    pub fn build(
        name: &Arc<str>,
        ids: &[Arc<str>],
        settings: &Health,
        balance_factor: Option<u32>,
        breakers: Option<&PoolBreakers>,
        previous: Option<&PoolHealth>,
        hub: &Hub,
    ) -> PoolHealth {
        let panic = breakers.is_some_and(|b| b.panic);
        let passive = settings.passive;
        let slots: Vec<Arc<UpstreamHealth>> = ids
            .iter()
            .map(|id| {
                let old = previous.and_then(|p| {
                    p.slots
                        .iter()
                        .find(|s| s.id == *id && *s.settings() == passive)
                });
                match old {
                    Some(s) => s.clone(),
                    None => Arc::new(UpstreamHealth::new(name.clone(), id.clone(), passive, hub)),
                }
            })
            .collect();
        let ejected: Box<[bool]> = ids
            .iter()
            .map(|id| !panic && breakers.is_some_and(|b| b.is_ejected(id)))
            .collect();
        for (slot, id) in slots.iter().zip(ids) {
            slot.set_ejected(breakers.is_some_and(|b| b.is_ejected(id)));
        }
        PoolHealth {
            healthy: ejected.iter().filter(|e| !**e).count(),
            slots,
            ejected,
            panic,
            balance_factor,
            settings: settings.clone(),
            inflight: previous.map(|p| p.inflight.clone()).unwrap_or_default(),
        }
    }

    /// Starts counting a request to upstream `index` as in flight.
    pub fn begin(&self, index: usize) -> Option<InFlight> {
        let slot = self.slots.get(index)?.clone();
        slot.inflight.fetch_add(1, Relaxed);
        self.inflight.fetch_add(1, Relaxed);
        Some(InFlight {
            slot,
            total: self.inflight.clone(),
            pending: false,
        })
    }

    /// Records an outcome of upstream `index`.
    pub fn record(&self, index: usize, outcome: Outcome, now: u64) {
        if let Some(slot) = self.slots.get(index) {
            slot.record(outcome, now);
        }
    }

    /// The upstreams to try for `hash`, in order, at most `limit`: first those on the
    /// ring walk that are neither ejected, nor suspect here, nor over the load bound;
    /// then, if fewer than `limit` were, the others in ring order as a last resort
    /// (a request is never refused only because its candidates look unhealthy).
    pub fn candidates<'a>(
        &'a self,
        ring: &'a Ring,
        hash: u32,
        limit: usize,
        now: u64,
    ) -> Candidates<'a> {
        let bound = self.balance_factor.map(|f| {
            let total = self.inflight.load(Relaxed) as u64 + 1;
            let share = u64::from(f) * total;
            let n = 100 * self.healthy.max(1) as u64;
            share.div_ceil(n) as usize
        });
        Candidates {
            health: self,
            ring,
            hash,
            walk: ring.walk(hash, MAX_WALK),
            preferred: true,
            limit: limit.min(MAX_WALK),
            yielded: 0,
            seen: [0; MAX_WALK],
            now,
            bound,
        }
    }

    fn preferred(&self, index: usize, now: u64, bound: Option<usize>) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return true;
        };
        !self.ejected.get(index).copied().unwrap_or(false)
            && !slot.is_suspect(now)
            && bound.is_none_or(|b| slot.inflight() < b)
    }
}

/// See [`PoolHealth::candidates`]. Allocation-free.
#[derive(Debug)]
pub struct Candidates<'a> {
    health: &'a PoolHealth,
    ring: &'a Ring,
    hash: u32,
    walk: Walk<'a>,
    /// First pass (preferred upstreams) or second (the rest).
    preferred: bool,
    limit: usize,
    yielded: usize,
    /// What was yielded: an attempt can change an upstream's health (a refused
    /// connect makes it suspect), so the second pass must not yield it again.
    seen: [usize; MAX_WALK],
    now: u64,
    bound: Option<usize>,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.yielded < self.limit {
            let Some(i) = self.walk.next() else {
                if !self.preferred {
                    return None;
                }
                self.preferred = false;
                self.walk = self.ring.walk(self.hash, MAX_WALK);
                continue;
            };
            let again = self.seen[..self.yielded].contains(&i);
            if !again && self.health.preferred(i, self.now, self.bound) == self.preferred {
                self.seen[self.yielded] = i;
                self.yielded += 1;
                return Some(i);
            }
        }
        None
    }
}
