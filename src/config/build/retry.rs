//! `pools[].retry`, every field checked with its path.

use http::Method;
use serde_yaml::Value;

use super::super::raw::RawRetry;
use super::super::retry::*;
use super::{join, shown, Checker};

impl Checker {
    pub(super) fn retry(&mut self, path: &str, raw: Option<RawRetry>) -> RetryPolicy {
        let d = RetryPolicy::default();
        let Some(raw) = raw else {
            return d;
        };
        let p = join(path, "retry");
        self.unknown(&p, &raw.unknown);
        let on = match &raw.on {
            Some(v) => self.retry_on(&join(&p, "on"), v).unwrap_or(d.on),
            None => d.on,
        };
        let methods = match &raw.methods {
            Some(v) => self
                .retry_methods(&join(&p, "methods"), v)
                .unwrap_or_else(|| d.methods.clone()),
            None => d.methods.clone(),
        };
        let backoff = self.retry_ms(&join(&p, "backoff_ms"), &raw.backoff_ms, d.backoff);
        let max_backoff = self.retry_ms(
            &join(&p, "max_backoff_ms"),
            &raw.max_backoff_ms,
            d.max_backoff,
        );
        if max_backoff < backoff {
            self.error(
                join(&p, "max_backoff_ms"),
                format!(
                    "must be at least backoff_ms ({} ms), got {} ms",
                    backoff.as_millis(),
                    max_backoff.as_millis()
                ),
            );
        }
        let budget_percent = self.opt_int(
            &join(&p, "budget_percent"),
            &raw.budget_percent,
            0,
            100,
            d.budget_percent.into(),
        ) as u32;
        // More than this per second is no floor but the budget itself.
        const MAX_FLOOR_PER_S: u64 = 10_000;
        let budget_floor_per_s = self.opt_int(
            &join(&p, "budget_floor_per_s"),
            &raw.budget_floor_per_s,
            0,
            MAX_FLOOR_PER_S,
            d.budget_floor_per_s.into(),
        ) as u32;
        let max_body_bytes = self.opt_int(
            &join(&p, "max_body_bytes"),
            &raw.max_body_bytes,
            0,
            MAX_RETRY_MAX_BODY_BYTES,
            d.max_body_bytes as u64,
        ) as usize;
        RetryPolicy {
            on,
            methods,
            backoff,
            max_backoff,
            budget_percent,
            budget_floor_per_s,
            max_body_bytes,
        }
    }

    /// A wait of 0 (retry at once) up to 10 s.
    fn retry_ms(
        &mut self,
        path: &str,
        v: &Option<Value>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        // A request held longer than this between attempts is better answered.
        const MAX_BACKOFF_MS: u64 = 10_000;
        let ms = self.opt_int(path, v, 0, MAX_BACKOFF_MS, default.as_millis() as u64);
        std::time::Duration::from_millis(ms)
    }

    fn retry_on(&mut self, path: &str, v: &Value) -> Option<RetryOn> {
        let all = RetryOn::NAMES.join(", ");
        let Value::Sequence(items) = v else {
            self.error(path, format!("must be a list of {all}; got {}", shown(v)));
            return None;
        };
        let mut on = RetryOn::none();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            // `502` may be written as a number.
            let name = match item {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            match on.flag(&name) {
                Some(flag) if *flag => {
                    self.error(&p, format!("{} is listed twice", shown(item)));
                    ok = false;
                }
                Some(flag) => *flag = true,
                None => {
                    self.error(&p, format!("must be one of {all}; got {}", shown(item)));
                    ok = false;
                }
            }
        }
        ok.then_some(on)
    }

    fn retry_methods(&mut self, path: &str, v: &Value) -> Option<Vec<Method>> {
        let Value::Sequence(items) = v else {
            self.error(
                path,
                format!("must be a list of HTTP methods; got {}", shown(v)),
            );
            return None;
        };
        let mut out: Vec<Method> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let parsed = item
                .as_str()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase()))
                .and_then(|s| Method::from_bytes(s.as_bytes()).ok());
            match parsed {
                Some(m) if m == Method::CONNECT => {
                    self.error(&p, "CONNECT opens a tunnel and is never retried");
                    ok = false;
                }
                Some(m) if out.contains(&m) => {
                    self.error(&p, format!("{m} is listed twice"));
                    ok = false;
                }
                Some(m) => out.push(m),
                None => {
                    self.error(
                        &p,
                        format!(
                            "must be an HTTP method in capitals such as GET; got {}",
                            shown(item)
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

impl Checker {
    pub(super) fn upstream_limits(
        &mut self,
        path: &str,
        raw: Option<super::super::raw::RawUpstreamLimits>,
    ) -> UpstreamLimits {
        let mut out = UpstreamLimits {
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            ..UpstreamLimits::default()
        };
        let Some(raw) = raw else {
            return out;
        };
        let p = join(path, "upstream_limits");
        self.unknown(&p, &raw.unknown);
        // A million requests in flight to one server is no limit.
        const MAX_INFLIGHT_LIMIT: u64 = 1_000_000;
        if raw.max_inflight.is_some() {
            let v = self.opt_int(
                &join(&p, "max_inflight"),
                &raw.max_inflight,
                1,
                MAX_INFLIGHT_LIMIT,
                1,
            );
            out.max_inflight = Some(v as usize);
        }
        // A cluster-wide figure is shared by up to MAX_MEMBERS instances; a billion is
        // no limit.
        const CLUSTER_MAX_INFLIGHT_LIMIT: u64 = 1_000_000_000;
        if raw.cluster_max_inflight.is_some() {
            let v = self.opt_int(
                &join(&p, "cluster_max_inflight"),
                &raw.cluster_max_inflight,
                1,
                CLUSTER_MAX_INFLIGHT_LIMIT,
                1,
            );
            out.cluster_max_inflight = Some(v as usize);
        }
        // As many connections as requests in flight are allowed at most.
        if raw.max_connections.is_some() {
            let v = self.opt_int(
                &join(&p, "max_connections"),
                &raw.max_connections,
                1,
                MAX_INFLIGHT_LIMIT,
                1,
            );
            out.max_connections = Some(v as usize);
        }
        if let Some(v) = &raw.at_limit {
            let at = join(&p, "at_limit");
            out.at_limit = match self.string(&at, v).as_deref() {
                Some("spill") => AtLimit::Spill,
                Some("queue") => AtLimit::Queue,
                Some(other) => {
                    self.error(&at, format!("must be spill or queue, got {other:?}"));
                    AtLimit::Spill
                }
                None => AtLimit::Spill,
            };
        }
        // Longer than this, a queued request is better answered.
        const MAX_QUEUE_TIMEOUT_MS: u64 = 60_000;
        let ms = self.opt_int(
            &join(&p, "queue_timeout_ms"),
            &raw.queue_timeout_ms,
            1,
            MAX_QUEUE_TIMEOUT_MS,
            DEFAULT_QUEUE_TIMEOUT.as_millis() as u64,
        );
        out.queue_timeout = std::time::Duration::from_millis(ms);
        if !out.any() {
            self.error(
                &p,
                "needs max_inflight, cluster_max_inflight or max_connections (the caps the other fields apply to)",
            );
        }
        out
    }
}
