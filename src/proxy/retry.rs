//! Retries on the request path: the pool's budget (so retries cannot multiply an
//! outage), the wait before each retry, and `Retry-After`.
//!
//! The budget follows Envoy's: retries in flight may be at most `budget_percent` of
//! the pool's requests in flight; besides, `budget_floor_per_s` retries are allowed
//! each second whatever the share, so a quiet pool still retries.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use crate::config::retry::MAX_RETRY_AFTER;
use crate::config::RetryPolicy;
use crate::health::detector;

/// Why an attempt is retried: the `reason` label of `ringway_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Connect,
    /// An HTTP/2 upstream refused the stream before processing it.
    RefusedStream,
    Reset,
    Timeout,
    Status502,
    Status503,
    Status504,
    GrpcUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Connect,
        Reason::RefusedStream,
        Reason::Reset,
        Reason::Timeout,
        Reason::Status502,
        Reason::Status503,
        Reason::Status504,
        Reason::GrpcUnavailable,
    ];

    /// Its index in [`Reason::ALL`] (and `metrics::RETRY_REASONS`).
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    pub fn label(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::RefusedStream => "refused_stream",
            Reason::Reset => "reset",
            Reason::Timeout => "timeout",
            Reason::Status502 => "502",
            Reason::Status503 => "503",
            Reason::Status504 => "504",
            Reason::GrpcUnavailable => "grpc_unavailable",
        }
    }

    pub fn of_status(status: u16) -> Option<Reason> {
        match status {
            502 => Some(Reason::Status502),
            503 => Some(Reason::Status503),
            504 => Some(Reason::Status504),
            _ => None,
        }
    }

    /// Retries that cost the upstreams nothing (nothing was processed) wait for no
    /// backoff and draw on no budget.
    pub fn free(self) -> bool {
        matches!(self, Reason::Connect | Reason::RefusedStream)
    }
}

/// One pool's retry budget, shared by the snapshots that keep the pool's policy.
#[derive(Debug, Default)]
pub struct RetryBudget {
    in_flight: Arc<AtomicUsize>,
    /// The second (since the epoch) the floor counts in, and the retries it allowed.
    floor_second: AtomicU64,
    floor_used: AtomicU64,
}

/// A retry in flight, counted against the budget until dropped.
#[derive(Debug)]
pub struct RetryPermit {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }
}

impl RetryBudget {
    /// A permit for one more retry when `requests` are in flight in the pool, or
    /// `None` when the budget is spent.
    pub fn try_acquire(&self, policy: &RetryPolicy, requests: usize) -> Option<RetryPermit> {
        let share = requests.saturating_mul(policy.budget_percent as usize) / 100;
        let now = self.in_flight.fetch_add(1, Relaxed);
        let permit = RetryPermit {
            in_flight: self.in_flight.clone(),
        };
        if now < share || self.floor(policy.budget_floor_per_s) {
            return Some(permit);
        }
        None
    }

    /// Takes one of this second's floor retries, if any is left.
    fn floor(&self, per_second: u32) -> bool {
        if per_second == 0 {
            return false;
        }
        let second = detector::now_ms() / 1000;
        let seen = self.floor_second.load(Relaxed);
        if seen != second
            && self
                .floor_second
                .compare_exchange(seen, second, Relaxed, Relaxed)
                .is_ok()
        {
            self.floor_used.store(0, Relaxed);
        }
        self.floor_used.fetch_add(1, Relaxed) < u64::from(per_second)
    }

    /// Retries in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }
}

/// The wait before retry number `n` (1 for the first): half of
/// `min(max_backoff, backoff * 2^(n-1))`, plus a random part up to the other half.
pub fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let base = policy.backoff.as_millis() as u64;
    let cap = base
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(policy.max_backoff.as_millis() as u64);
    let half = cap / 2;
    Duration::from_millis(half + fastrand::u64(0..=cap - half))
}

/// What a 503's `Retry-After` asks of a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// None given (or not in delta-seconds): the usual backoff.
    Absent,
    /// Wait this long first (at most [`MAX_RETRY_AFTER`]).
    Wait(Duration),
    /// Longer than ringway holds a request, or a date: do not retry.
    TooLong,
}

/// Reads `Retry-After` (RFC 9110 §10.2.3). Only delta-seconds are waited for; an
/// HTTP-date means a wait of its own and the 503 goes to the client.
pub fn retry_after(headers: &HeaderMap) -> RetryAfter {
    let Some(v) = headers.get(http::header::RETRY_AFTER) else {
        return RetryAfter::Absent;
    };
    match delta_seconds(v) {
        Some(s) if Duration::from_secs(s) <= MAX_RETRY_AFTER => {
            RetryAfter::Wait(Duration::from_secs(s))
        }
        _ => RetryAfter::TooLong,
    }
}

fn delta_seconds(v: &HeaderValue) -> Option<u64> {
    let b = v.as_bytes().trim_ascii();
    // 10 digits hold every plausible value and cannot overflow a u64.
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(percent: u32, floor: u32) -> RetryPolicy {
        RetryPolicy {
            budget_percent: percent,
            budget_floor_per_s: floor,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn reasons_match_the_metric_labels() {
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, crate::metrics::RETRY_REASONS);
        assert!(Reason::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }

    #[test]
    fn budget_is_a_share_of_requests_in_flight() {
        let b = RetryBudget::default();
        let p = policy(20, 0);
        let held: Vec<_> = (0..2).map(|_| b.try_acquire(&p, 10)).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(b.try_acquire(&p, 10).is_none(), "20% of 10 is 2");
        assert_eq!(b.in_flight(), 2, "a refused permit is not counted");
        drop(held);
        assert_eq!(b.in_flight(), 0);
        assert!(b.try_acquire(&p, 10).is_some());
        assert!(b.try_acquire(&p, 0).is_none(), "no share of nothing");
    }

    #[test]
    fn the_floor_allows_a_few_per_second_whatever_the_share() {
        let b = RetryBudget::default();
        let p = policy(0, 3);
        let held: Vec<_> = (0..5).filter_map(|_| b.try_acquire(&p, 0)).collect();
        // Three, or a few more if the second turned over meanwhile; never all.
        assert!((3..5).contains(&held.len()), "{}", held.len());
    }

    #[test]
    fn backoff_doubles_within_its_cap_with_jitter() {
        let p = RetryPolicy {
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            let first = backoff(&p, 1).as_millis();
            assert!((10..=20).contains(&first), "{first}");
            let third = backoff(&p, 3).as_millis();
            assert!((40..=80).contains(&third), "{third}");
            let tenth = backoff(&p, 10).as_millis();
            assert!((50..=100).contains(&tenth), "{tenth}");
        }
        let zero = RetryPolicy {
            backoff: Duration::ZERO,
            ..p.clone()
        };
        assert_eq!(backoff(&zero, 5), Duration::ZERO);
        assert!(backoff(&p, u32::MAX) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_waited_for_only_when_short_and_in_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), RetryAfter::Absent);
        for (v, want) in [
            ("0", RetryAfter::Wait(Duration::ZERO)),
            ("1", RetryAfter::Wait(Duration::from_secs(1))),
            (" 1 ", RetryAfter::Wait(Duration::from_secs(1))),
            ("2", RetryAfter::TooLong),
            ("99999999999999999999", RetryAfter::TooLong),
            ("-1", RetryAfter::TooLong),
            ("1.5", RetryAfter::TooLong),
            ("Wed, 21 Oct 2015 07:28:00 GMT", RetryAfter::TooLong),
            ("", RetryAfter::TooLong),
        ] {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static(v));
            assert_eq!(retry_after(&h), want, "{v:?}");
        }
    }
}
