//! `pools[].health` and `pools[].hash_balance_factor`: every field checked with its
//! path, like the rest of the file.

use std::time::Duration;

use serde_yaml::Value;

use super::super::health::{
    Active, CheckKind, FailureClasses, Health, Passive, DEFAULT_CHECK_INTERVAL,
    DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL, DEFAULT_RISE,
};
use super::super::health::{
    Policy, MAX_EJECTION_LIMIT_MS, MAX_HALF_OPEN_SUCCESSES, MAX_REPORTERS, MAX_REPORT_WINDOW_MS,
};
use super::super::raw::{RawActive, RawBreaker, RawGrpcCheck, RawHealth, RawPassive};
use super::super::UpstreamProtocol;
use super::{join, shown, Checker};
use crate::grpc_status::{Code, CodeSet};

/// Bounds that keep a typo from turning detection into noise or off: a thousand
/// failures in a row is not detection; a window past ten minutes is a trend, not a
/// breaker; a suspicion past a minute outlives the failure it saw.
const MAX_CONSECUTIVE_FAILURES: u64 = 1000;
const MIN_WINDOW_MS: u64 = 1000;
const MAX_WINDOW_MS: u64 = 600_000;
const MAX_MIN_REQUESTS: u64 = 1_000_000;
const MAX_LOCAL_SUSPICION_MS: u64 = 60_000;
const MIN_CHECK_INTERVAL_MS: u64 = 100;
const MAX_CHECK_MS: u64 = 3_600_000;
const MAX_RISE_FALL: u64 = 100;
const MIN_PROBE_INTERVAL_MS: u64 = 10;
/// `hash_balance_factor` below 100 would bound every upstream under the mean.
const MIN_BALANCE_FACTOR: u64 = 100;
const MAX_BALANCE_FACTOR: u64 = 10_000;
/// Longest health check path.
const MAX_CHECK_PATH_BYTES: usize = 1024;
/// Longest service name a gRPC check asks about: a fully qualified protobuf service
/// name is far shorter, and the name travels in every probe.
pub const MAX_GRPC_SERVICE_BYTES: usize = 512;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Checker {
    /// `protocol` is the pool's (`None` when it was invalid): a gRPC check needs
    /// HTTP/2.
    pub(super) fn health(
        &mut self,
        pool: &str,
        raw: Option<RawHealth>,
        protocol: Option<UpstreamProtocol>,
    ) -> Health {
        let Some(raw) = raw else {
            return Health::default();
        };
        let path = join(pool, "health");
        self.unknown(&path, &raw.unknown);
        let d = Health::default();
        let (breaker, probe_interval) = match raw.breaker {
            Some(b) => self.breaker(&join(&path, "breaker"), b),
            None => (d.breaker, d.probe_interval),
        };
        Health {
            passive: raw
                .passive
                .map(|p| self.passive(&join(&path, "passive"), p))
                .unwrap_or_default(),
            active: raw
                .active
                .and_then(|a| self.active(&join(&path, "active"), a, protocol)),
            breaker,
            probe_interval,
        }
    }

    pub(super) fn balance_factor(&mut self, pool: &str, raw: &Option<Value>) -> Option<u32> {
        let v = raw.as_ref()?;
        let p = join(pool, "hash_balance_factor");
        let f = self.int(&p, v, MIN_BALANCE_FACTOR, MAX_BALANCE_FACTOR)?;
        Some(f as u32)
    }

    fn passive(&mut self, path: &str, raw: RawPassive) -> Passive {
        self.unknown(path, &raw.unknown);
        let d = Passive::default();
        let f = |name: &str| join(path, name);
        Passive {
            consecutive_failures: self.opt_int(
                &f("consecutive_failures"),
                &raw.consecutive_failures,
                0,
                MAX_CONSECUTIVE_FAILURES,
                d.consecutive_failures.into(),
            ) as u32,
            failure_rate_percent: self.opt_int(
                &f("failure_rate_percent"),
                &raw.failure_rate_percent,
                0,
                100,
                d.failure_rate_percent.into(),
            ) as u32,
            window: ms(self.opt_int(
                &f("window_ms"),
                &raw.window_ms,
                MIN_WINDOW_MS,
                MAX_WINDOW_MS,
                d.window.as_millis() as u64,
            )),
            min_requests: self.opt_int(
                &f("min_requests"),
                &raw.min_requests,
                1,
                MAX_MIN_REQUESTS,
                d.min_requests.into(),
            ) as u32,
            classes: match &raw.count {
                Some(v) => self.classes(&f("count"), v).unwrap_or_default(),
                None => d.classes,
            },
            local_suspicion: ms(self.opt_int(
                &f("local_suspicion_ms"),
                &raw.local_suspicion_ms,
                0,
                MAX_LOCAL_SUSPICION_MS,
                d.local_suspicion.as_millis() as u64,
            )),
            grpc_failures: match &raw.count_grpc {
                Some(v) => self.grpc_codes(&f("count_grpc"), v).unwrap_or_default(),
                None => d.grpc_failures,
            },
        }
    }

    /// A list of gRPC status codes, by name (`UNAVAILABLE`) or number (14); `OK`
    /// is no failure, and an empty list counts none.
    fn grpc_codes(&mut self, path: &str, v: &Value) -> Option<CodeSet> {
        const RULE: &str =
            "must be a gRPC status code other than OK, by name (UNAVAILABLE) or number (14)";
        let Value::Sequence(items) = v else {
            self.error(
                path,
                format!("must be a list of gRPC status codes; got {}", shown(v)),
            );
            return None;
        };
        let mut set = CodeSet::EMPTY;
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let code = match item {
                Value::String(s) => Code::from_name(s),
                Value::Number(n) => n.as_u64().and_then(Code::from_number),
                _ => None,
            };
            match code {
                Some(c) if c != Code::Ok => {
                    if !set.insert(c) {
                        self.error(&p, format!("{c} is listed twice"));
                        ok = false;
                    }
                }
                _ => {
                    self.error(&p, format!("{RULE}; got {}", shown(item)));
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    }

    fn classes(&mut self, path: &str, v: &Value) -> Option<FailureClasses> {
        let Value::Sequence(items) = v else {
            let why = format!(
                "must be a list of connect, timeout, reset, 5xx; got {}",
                shown(v)
            );
            self.error(path, why);
            return None;
        };
        let mut c = FailureClasses {
            connect: false,
            timeout: false,
            reset: false,
            status_5xx: false,
        };
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let slot = match item.as_str() {
                Some("connect") => &mut c.connect,
                Some("timeout") => &mut c.timeout,
                Some("reset") => &mut c.reset,
                Some("5xx") => &mut c.status_5xx,
                _ => {
                    let why = format!(
                        "must be one of connect, timeout, reset, 5xx; got {}",
                        shown(item)
                    );
                    self.error(&p, why);
                    ok = false;
                    continue;
                }
            };
            if std::mem::replace(slot, true) {
                self.error(&p, format!("{} is listed twice", shown(item)));
                ok = false;
            }
        }
        ok.then_some(c)
    }

    fn active(
        &mut self,
        path: &str,
        raw: RawActive,
        protocol: Option<UpstreamProtocol>,
    ) -> Option<Active> {
        self.unknown(path, &raw.unknown);
        let f = |name: &str| join(path, name);
        let kind = match raw.grpc {
            Some(ref grpc) => self.grpc_check(path, grpc, &raw, protocol),
            None => self.http_check(path, &raw),
        };
        let interval = self.opt_int(
            &f("interval_ms"),
            &raw.interval_ms,
            MIN_CHECK_INTERVAL_MS,
            MAX_CHECK_MS,
            DEFAULT_CHECK_INTERVAL.as_millis() as u64,
        );
        let timeout = self.opt_int(
            &f("timeout_ms"),
            &raw.timeout_ms,
            1,
            MAX_CHECK_MS,
            DEFAULT_CHECK_TIMEOUT.as_millis().min(interval as u128) as u64,
        );
        if timeout > interval {
            let why = format!("must be at most interval_ms ({interval}), got {timeout}");
            self.error(f("timeout_ms"), why);
        }
        let rise = self.opt_int(&f("rise"), &raw.rise, 1, MAX_RISE_FALL, DEFAULT_RISE.into());
        let fall = self.opt_int(&f("fall"), &raw.fall, 1, MAX_RISE_FALL, DEFAULT_FALL.into());
        Some(Active {
            kind: kind?,
            interval: ms(interval),
            timeout: ms(timeout),
            rise: rise as u32,
            fall: fall as u32,
        })
    }

    /// `GET path`, passing on `expected_statuses`.
    fn http_check(&mut self, path: &str, raw: &RawActive) -> Option<CheckKind> {
        let f = |name: &str| join(path, name);
        let check_path = self
            .required(&f("path"), &raw.path)
            .and_then(|v| self.string(&f("path"), v))
            .and_then(|s| self.check_path(&f("path"), s));
        let expected = match &raw.expected_statuses {
            Some(v) => self.statuses(&f("expected_statuses"), v),
            None => Some(vec![(200, 399)]),
        };
        Some(CheckKind::Http {
            path: check_path?,
            expected: expected?,
        })
    }

    /// `grpc: {service}`: only for HTTP/2 pools, and with no HTTP check fields.
    fn grpc_check(
        &mut self,
        path: &str,
        raw: &RawGrpcCheck,
        active: &RawActive,
        protocol: Option<UpstreamProtocol>,
    ) -> Option<CheckKind> {
        let p = join(path, "grpc");
        self.unknown(&p, &raw.unknown);
        for (name, set) in [
            ("path", active.path.is_some()),
            ("expected_statuses", active.expected_statuses.is_some()),
        ] {
            if set {
                let why = "belongs to HTTP checks; a gRPC check (grpc) passes on SERVING";
                self.error(join(path, name), why);
            }
        }
        let mut ok = active.path.is_none() && active.expected_statuses.is_none();
        if let Some(protocol) = protocol {
            if !matches!(protocol, UpstreamProtocol::H2 | UpstreamProtocol::H2c) {
                let why = format!(
                    "the gRPC health protocol runs over HTTP/2: needs the pool's protocol to be h2 or h2c, got {protocol}"
                );
                self.error(&p, why);
                ok = false;
            }
        }
        let service = match &raw.service {
            None => Some(String::new()),
            Some(Value::String(s)) if s.is_empty() => Some(String::new()),
            Some(v) => {
                let sp = join(&p, "service");
                self.string(&sp, v).and_then(|s| self.grpc_service(&sp, s))
            }
        };
        ok.then_some(CheckKind::Grpc { service: service? })
    }

    fn grpc_service(&mut self, path: &str, s: String) -> Option<String> {
        if s.len() > MAX_GRPC_SERVICE_BYTES || s.chars().any(char::is_control) {
            let why = format!(
                "must be a service name of at most {MAX_GRPC_SERVICE_BYTES} bytes without control characters (empty: the server overall), got {s:?}"
            );
            self.error(path, why);
            return None;
        }
        Some(s)
    }

    fn check_path(&mut self, path: &str, s: String) -> Option<String> {
        let bad = !s.starts_with('/')
            || s.len() > MAX_CHECK_PATH_BYTES
            || s.bytes().any(|b| b <= b' ' || b == 0x7f);
        if bad {
            let why = format!(
                "must start with '/', have no spaces or control characters and be at most {MAX_CHECK_PATH_BYTES} bytes, got {s:?}"
            );
            self.error(path, why);
            return None;
        }
        Some(s)
    }

    /// A list of statuses: `200`, `"200-299"` or `"2xx"`.
    fn statuses(&mut self, path: &str, v: &Value) -> Option<Vec<(u16, u16)>> {
        let items = match v {
            Value::Sequence(items) if !items.is_empty() => items,
            other => {
                let why = format!(
                    "must be a non-empty list of statuses (200, \"200-299\" or \"2xx\"), got {}",
                    shown(other)
                );
                self.error(path, why);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match status_range(item) {
                Some(r) => out.push(r),
                None => self.error(
                    format!("{path}[{i}]"),
                    format!(
                        "must be a status from 100 to 599, a range \"200-299\" or a class \"2xx\", got {}",
                        shown(item)
                    ),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    fn breaker(&mut self, path: &str, raw: RawBreaker) -> (Policy, Duration) {
        self.unknown(path, &raw.unknown);
        let d = Policy::default();
        let f = |name: &str| join(path, name);
        let int = |c: &mut Checker, name: &str, v: &Option<Value>, lo: u64, hi: u64, def| {
            c.opt_int(&f(name), v, lo, hi, def)
        };
        let base = int(
            self,
            "base_ejection_ms",
            &raw.base_ejection_ms,
            1,
            MAX_EJECTION_LIMIT_MS,
            d.base_ejection_ms,
        );
        let max = int(
            self,
            "max_ejection_ms",
            &raw.max_ejection_ms,
            1,
            MAX_EJECTION_LIMIT_MS,
            d.max_ejection_ms.max(base),
        );
        if max < base {
            let why = format!("must be at least base_ejection_ms ({base}), got {max}");
            self.error(f("max_ejection_ms"), why);
        }
        let policy = Policy {
            base_ejection_ms: base,
            max_ejection_ms: max.max(base),
            jitter_percent: int(
                self,
                "jitter_percent",
                &raw.jitter_percent,
                0,
                100,
                d.jitter_percent.into(),
            ) as u32,
            half_open_successes: int(
                self,
                "half_open_successes",
                &raw.half_open_successes,
                1,
                MAX_HALF_OPEN_SUCCESSES.into(),
                d.half_open_successes.into(),
            ) as u32,
            min_reporters: int(
                self,
                "min_reporters",
                &raw.min_reporters,
                1,
                MAX_REPORTERS as u64,
                d.min_reporters.into(),
            ) as u32,
            report_window_ms: int(
                self,
                "report_window_ms",
                &raw.report_window_ms,
                1,
                MAX_REPORT_WINDOW_MS,
                d.report_window_ms,
            ),
            max_ejection_percent: int(
                self,
                "max_ejection_percent",
                &raw.max_ejection_percent,
                0,
                100,
                d.max_ejection_percent.into(),
            ) as u32,
            panic_threshold_percent: int(
                self,
                "panic_threshold_percent",
                &raw.panic_threshold_percent,
                0,
                100,
                d.panic_threshold_percent.into(),
            ) as u32,
        };
        let probe = int(
            self,
            "probe_interval_ms",
            &raw.probe_interval_ms,
            MIN_PROBE_INTERVAL_MS,
            MAX_CHECK_MS,
            super::super::health::DEFAULT_PROBE_INTERVAL.as_millis() as u64,
        );
        (policy, ms(probe))
    }
}

fn status_range(v: &Value) -> Option<(u16, u16)> {
    let ok = |s: u16| (100..=599).contains(&s);
    match v {
        Value::Number(n) => {
            let s = u16::try_from(n.as_u64()?).ok()?;
            ok(s).then_some((s, s))
        }
        Value::String(s) => {
            if let Some(class) = s.strip_suffix("xx") {
                let c: u16 = class.parse().ok()?;
                return (1..=5).contains(&c).then_some((c * 100, c * 100 + 99));
            }
            let (lo, hi) = s.split_once('-')?;
            let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (ok(lo) && ok(hi) && lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}
